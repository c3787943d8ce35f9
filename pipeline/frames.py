"""Pre-extracted video frames: sampled and sized exactly as Qwen2.5-VL would.

Training and evaluation read ``data/frames/<video_id>.npz`` and never decode
video again. Which frames are kept and their size follow ``qwen_vl_utils``
0.0.14 ``fetch_video`` with its default backend in this environment (decord:
torchcodec is not installed, and torchvision 0.29 has no ``read_video``):

* ``total_frames`` is the number of video packets (decord indexes every packet
  on open), ``video_fps`` the stream's ``avg_frame_rate``;
* ``nframes = smart_nframes(...)``, indices ``torch.linspace(0, total-1, n).round()``
  (frame ``k`` is the ``k``-th frame in presentation order, as in decord);
* ``(H, W) = smart_resize(...)`` under a per-frame cap derived from ``total_pixels``.

The probe (PyAV, in-process) demuxes every packet once, which gives the frame
count and each frame's presentation time exactly as decord indexes them. Each
video is then decoded once by one ffmpeg process: ``select`` keeps the planned
frames, ``scale`` converts to RGB at the source size (as decord does) and then
resizes with swscale's bicubic (close to torchvision's antialiased bicubic).
Frames arrive as raw rgb24 on a pipe. Without PyAV, the probe falls back to
ffprobe/``ffmpeg -i`` and ffmpeg's ``showinfo`` reports the kept frames' times.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.ffmpeg_tools import decoder_exe, ffprobe_exe, probe
from pipeline.io import InputError, atomic_path, write_jsonl
from pipeline.params import FramesParams

# qwen_vl_utils 0.0.14 constants (vision_process.py).
IMAGE_FACTOR = 28  # patch 14 * spatial merge 2
FRAME_FACTOR = 2  # temporal patch size
VIDEO_FRAME_MAX_PIXELS = 768 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_RATIO = 200

# swscale widens its kernel when downscaling, an antialiased resize like torchvision's
# bicubic(antialias=True). Of the kernels tried, swscale's default bicubic came
# closest to qwen-vl-utils' frames (mean abs difference ~0.1-0.2 of 255; see docs/FRAMES.md).
RESIZE_FLAGS = {"flags": "bicubic"}
# Bump when the file layout or meta keys change. (Code changes that alter frames
# are caught by EXTRACTOR_FILES' hash, see extractor_id.)
FORMAT_VERSION = 2
# The sources whose edits can change the frames written: the same files dvc.yaml lists as deps.
EXTRACTOR_FILES = (Path(__file__), Path(__file__).with_name("ffmpeg_tools.py"))
FINGERPRINT_CHUNK = 64 * 1024


class VideoError(InputError):
    """A video that cannot be turned into frames; the message is one line naming the file."""


@dataclass
class VideoFrames:
    frames: np.ndarray  # uint8 (T, H, W, 3)
    timestamps: np.ndarray  # float64 (T,), seconds from the start of the file
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- qwen-vl-utils rules
# Ported line for line from qwen_vl_utils 0.0.14 (a dev-only dependency that pulls
# torchvision/requests at import); tests/test_frames.py checks them against it.
def _round_by(x: float, f: int) -> int:
    return round(x / f) * f


def _ceil_by(x: float, f: int) -> int:
    return math.ceil(x / f) * f


def _floor_by(x: float, f: int) -> int:
    return math.floor(x / f) * f


def smart_nframes(total_frames: int, video_fps: float, params: FramesParams) -> int:
    """How many frames qwen-vl-utils keeps (``fps`` mode, min/max frames, even count)."""
    min_frames = _ceil_by(params.min_frames, FRAME_FACTOR)
    max_frames = _floor_by(params.max_frames, FRAME_FACTOR)
    nframes = total_frames / video_fps * params.fps
    nframes = min(min(max(nframes, min_frames), max_frames), total_frames)
    nframes = _floor_by(nframes, FRAME_FACTOR)
    if not (FRAME_FACTOR <= nframes <= total_frames):
        raise ValueError(f"nframes should be in [{FRAME_FACTOR}, {total_frames}], got {nframes}")
    return nframes


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: float) -> tuple[int, int]:
    """Multiples of 28 closest to (height, width) with min_pixels <= H*W <= max_pixels."""
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) is below min_pixels ({min_pixels})")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio must be below {MAX_RATIO}, got {max(height, width) / min(height, width):.1f}")
    h_bar = max(IMAGE_FACTOR, _round_by(height, IMAGE_FACTOR))
    w_bar = max(IMAGE_FACTOR, _round_by(width, IMAGE_FACTOR))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = _floor_by(height / beta, IMAGE_FACTOR)
        w_bar = _floor_by(width / beta, IMAGE_FACTOR)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, IMAGE_FACTOR)
        w_bar = _ceil_by(width * beta, IMAGE_FACTOR)
    return h_bar, w_bar


def frame_max_pixels(n_frames: int, params: FramesParams) -> float:
    """The per-frame pixel cap ``fetch_video`` derives from the clip's pixel budget."""
    cap = max(min(VIDEO_FRAME_MAX_PIXELS, params.total_pixels / n_frames * FRAME_FACTOR), int(params.min_pixels * 1.05))
    return min(params.max_pixels, cap)


def plan_sampling(total_frames: int, video_fps: float, params: FramesParams) -> tuple[list[int], float]:
    """Frame indices qwen-vl-utils samples from a video, and the resulting sample fps."""
    import torch  # float32 linspace + round-half-even decides ties exactly as qwen-vl-utils does

    if total_frames < 1 or not video_fps > 0:
        raise ValueError(f"no frames to sample (total_frames={total_frames}, fps={video_fps})")
    nframes = smart_nframes(total_frames, video_fps, params)
    indices = torch.linspace(0, total_frames - 1, nframes).round().long().tolist()
    sample_fps = nframes / max(total_frames, 1e-6) * video_fps
    return indices, sample_fps


def plan_size(height: int, width: int, n_frames: int, params: FramesParams) -> tuple[int, int]:
    """(H, W) of every kept frame, as ``fetch_video`` resizes them."""
    return smart_resize(height, width, params.min_pixels, frame_max_pixels(n_frames, params))


# --------------------------------------------------------------------------- probing
def _probe_av(path: Path) -> dict:
    """Probe in-process with PyAV: no process start-up, which costs as much as decoding a short clip."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate
        # decord counts every demuxed video packet (the trailing flush packet is empty)
        # and numbers frames by sorted pts; frame k is shown at (pts_k - start) * time_base.
        pts = [pkt.pts for pkt in container.demux(stream) if pkt.size or pkt.pts is not None]
        total = len(pts)
        times = None
        if pts and None not in pts and stream.time_base:
            start = stream.start_time if stream.start_time is not None else 0
            times = (np.sort(np.asarray(pts, dtype=np.int64)) - start) * float(stream.time_base)
        rotation = 0
        if total:
            container.seek(0)
            frame = next(container.decode(stream), None)
            rotation = int(getattr(frame, "rotation", 0) or 0) if frame is not None else 0
        duration = container.duration / 1e6 if container.duration else None
    return {
        "width": width,
        "height": height,
        "fps": float(rate) if rate else 0.0,
        "total_frames": total,
        "rotation": rotation,
        "duration": duration,
        "codec": stream.codec_context.name,
        "frame_times": times,
    }


def probe_video(path: str | Path, backend: str = "auto") -> dict:
    """Frame count, average fps and displayed size of a video's first video stream.

    ``backend``: ``av`` (PyAV, in-process; also lists every frame's time), ``ffprobe``
    or ``ffmpeg`` (parsing ``ffmpeg -i``; see :func:`pipeline.ffmpeg_tools.probe`), or
    ``auto``: the first of these that is installed.
    """
    path = Path(path)
    if backend == "auto":
        backend = "av" if importlib.util.find_spec("av") else ("ffprobe" if ffprobe_exe() else "ffmpeg")
    if backend == "av":
        try:
            info = _probe_av(path)
        except Exception as exc:  # PyAV raises its own error tree (InvalidDataError, ...)
            raise VideoError(f"{path}: cannot read video ({_one_line(exc)})") from None
    else:
        try:
            info = probe(path, use_ffprobe=backend == "ffprobe")
        except (RuntimeError, ValueError) as exc:
            raise VideoError(f"{path}: cannot read video ({_one_line(exc)})") from None
    if abs(info["rotation"]) % 180 == 90:
        info["width"], info["height"] = info["height"], info["width"]
    if not info["width"] or not info["height"]:
        raise VideoError(f"{path}: video stream has no frame size")
    if info["total_frames"] < 1:
        raise VideoError(f"{path}: video stream has no frames")
    if not info["fps"] > 0:
        raise VideoError(f"{path}: video stream has no frame rate")
    return info


def _one_line(exc: BaseException) -> str:
    # PyAV errors carry errno and path in str(); the path is already in our message.
    text = getattr(exc, "strerror", None) or str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text[:300]


# --------------------------------------------------------------------------- decoding
_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:\s*(-?[\d.e+-]+)")
_TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")


def select_expr(indices, group: int = 32) -> str:
    """``select`` expression keeping exactly these frame numbers.

    ffmpeg 5.1 fails to parse a flat sum of more than ~100 ``eq`` terms, so the
    terms are summed in parenthesised groups.
    """
    terms = [f"eq(n,{i})" for i in indices]
    return "+".join("(" + "+".join(terms[k : k + group]) + ")" for k in range(0, len(terms), group))


def ffmpeg_command(
    path: str | Path, indices: Sequence[int], height: int, width: int, threads: int = 0, showinfo: bool = False
) -> list[str]:
    """The one ffmpeg call that decodes ``path`` and writes the selected, resized frames as rgb24.

    ``showinfo`` logs each kept frame's pts (used when the probe could not list them;
    it costs ~10% on short clips, mostly info-level logging).
    """
    import ffmpeg

    expr = select_expr(indices)
    src = ffmpeg.input(str(path), threads=threads) if threads else ffmpeg.input(str(path))
    video = (
        src["v:0"]
        .filter("select", expr)
        # Convert at the source size first, as decord does, then resize in RGB like torchvision.
        .filter("scale", "iw", "ih")
        .filter("format", "rgb24")
        .filter("scale", width, height, **RESIZE_FLAGS)
    )
    if showinfo:
        video = video.filter("showinfo")
    # passthrough: the rawvideo muxer would otherwise make the output constant-rate
    # and duplicate frames into the gaps that select leaves.
    out = ffmpeg.output(video, "pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    args = out.compile(cmd=decoder_exe())
    return [args[0], "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info" if showinfo else "error", *args[1:]]


def _ffmpeg_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "Parsed_showinfo" not in ln]
    bad = [ln for ln in lines if re.search(r"error|invalid|not found|no such|failed|corrupt|truncat", ln, re.I)]
    return (bad or lines or ["ffmpeg failed"])[-1][:300]


def decode_selected(
    path: str | Path, indices: Sequence[int], height: int, width: int, threads: int = 0, showinfo: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode the frames at ``indices`` resized to (height, width).

    Returns (frames uint8 (T,H,W,3), timestamps in s from showinfo, or None without it).
    """
    cmd = ffmpeg_command(path, indices, height, width, threads, showinfo)
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise VideoError(f"{path}: ffmpeg exited {proc.returncode}: {_ffmpeg_reason(stderr)}")
    frame_bytes = height * width * 3
    n = len(proc.stdout) // frame_bytes
    # pts_time is printed with 6 significant digits; pts * time_base is exact.
    tb = _TIME_BASE.search(stderr)
    tb = Fraction(int(tb.group(1)), int(tb.group(2))) if tb and int(tb.group(2)) else None
    times = [float(int(m.group(2)) * tb) if tb else float(m.group(3)) for m in _SHOWINFO.finditer(stderr)]
    if n != len(indices) or len(proc.stdout) % frame_bytes or (showinfo and len(times) != n):
        raise VideoError(
            f"{path}: decoded {n} of {len(indices)} planned frames "
            f"(last planned index {indices[-1]}; the file is truncated or its frame count is wrong)"
        )
    frames = np.frombuffer(proc.stdout, np.uint8).reshape(n, height, width, 3)
    return frames, (np.asarray(times, dtype=np.float64) if showinfo else None)


def extract_video(
    path: str | Path, params: FramesParams, *, video_id: str | None = None, threads: int = 0, probe_backend: str = "auto"
) -> VideoFrames:
    """Sample and resize one video as qwen-vl-utils would; raises :class:`VideoError` if unreadable.

    ``threads``: ffmpeg decoder threads (0 = ffmpeg's choice); ``probe_backend``: see :func:`probe_video`.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    info = probe_video(path, probe_backend)
    try:
        indices, sample_fps = plan_sampling(info["total_frames"], info["fps"], params)
        height, width = plan_size(info["height"], info["width"], len(indices), params)
    except ValueError as exc:
        raise VideoError(f"{path}: {exc}") from None
    known_times = info.get("frame_times")
    frames, timestamps = decode_selected(path, indices, height, width, threads, showinfo=known_times is None)
    if timestamps is None:
        timestamps = np.asarray(known_times, dtype=np.float64)[indices]
    duration = info["duration"] if info["duration"] else info["total_frames"] / info["fps"]
    meta = {
        "format_version": FORMAT_VERSION,
        "id": video_id or path.stem,
        "path": str(path),
        "n_frames": len(indices),
        "height": height,
        "width": width,
        "sample_fps": sample_fps,
        "source_fps": info["fps"],
        "source_height": info["height"],
        "source_width": info["width"],
        "total_frames": info["total_frames"],
        "duration": duration,
        "frame_indices": indices,
        "params": output_params(params),
        "extractor": extractor_id(),
        "source": source_fingerprint(path),
    }
    return VideoFrames(frames=np.ascontiguousarray(frames), timestamps=timestamps, meta=meta)


# --------------------------------------------------------------------------- cache files
def output_params(params: FramesParams) -> dict:
    """The frame params that decide the output (all but ``workers``), as stored in the meta JSON."""
    return json.loads(json.dumps(params.model_dump(exclude={"workers"})))


@functools.cache
def extractor_id() -> str:
    """Hash of the extraction code and the decoder binary's name (it carries its version).

    Part of the cache key, so editing frames.py/ffmpeg_tools.py or switching decoders
    re-extracts every video instead of silently keeping frames the new code would not write.
    """
    digest = hashlib.sha256()
    for source in EXTRACTOR_FILES:
        digest.update(source.read_bytes())
    digest.update(Path(decoder_exe()).name.encode())
    return digest.hexdigest()[:16]


def source_fingerprint(path: str | Path) -> dict:
    """Size and sha256 of the first and last 64 KiB of a video: cheap on a 10,000-video folder.

    Not the mtime: ``dvc checkout``/``git clone`` rewrite it. A re-encode or a different
    video changes the size or the container index (mp4's moov holds every sample's
    size and sits at one end), so the ends catch it without reading the whole file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest.update(fh.read(FINGERPRINT_CHUNK))
        if size > FINGERPRINT_CHUNK:
            fh.seek(max(FINGERPRINT_CHUNK, size - FINGERPRINT_CHUNK))
            digest.update(fh.read(FINGERPRINT_CHUNK))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def cached_entry(dest: str | Path, expected: dict) -> tuple[dict, np.ndarray] | None:
    """``(meta, timestamps)`` of ``dest`` when its meta holds every ``expected`` key/value, else None.

    Reads only the small ``meta`` and ``timestamps`` members (an npz is a zip, read per
    member), never the frames, so checking a whole cache folder stays cheap.
    """
    try:
        with np.load(dest, allow_pickle=False) as data:
            if set(data.files) != {"frames", "timestamps", "meta"}:
                return None
            meta = json.loads(str(data["meta"][()]))
            if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
                return None
            timestamps = data["timestamps"]
    except Exception:  # missing, foreign or damaged file: not a cache hit, extract again
        return None
    if timestamps.shape != (meta.get("n_frames"),):
        return None
    return meta, timestamps


def save_frames(path: str | Path, vf: VideoFrames) -> Path:
    """Write one pickle-free ``.npz`` atomically (a killed run leaves no partial file)."""
    path = Path(path)
    meta = np.array(json.dumps(vf.meta, sort_keys=True))
    with atomic_path(path, suffix=".npz") as tmp:
        # An open file handle stops np.savez from appending ".npz" to the temp name.
        with open(tmp, "wb") as fh:
            np.savez(fh, frames=np.asarray(vf.frames, np.uint8), timestamps=np.asarray(vf.timestamps, np.float64), meta=meta)
    return path


def load_frames(path: str | Path) -> VideoFrames:
    """Read a frames file written by :func:`save_frames`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            frames, timestamps, meta = data["frames"], data["timestamps"], json.loads(str(data["meta"][()]))
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a frames file ({_one_line(exc)})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"{path}: frames: expected uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    if timestamps.shape != frames.shape[:1]:
        raise InputError(f"{path}: timestamps: expected shape ({frames.shape[0]},), got {timestamps.shape}")
    return VideoFrames(frames=frames, timestamps=timestamps, meta=meta)


def with_overrides(params: FramesParams, **overrides) -> FramesParams:
    """``params`` with the non-None overrides; a bad value fails with one line naming ``frames.<key>``."""
    from pipeline.params import parse_params

    changed = {k: v for k, v in overrides.items() if v is not None}
    return parse_params({"frames": {**params.model_dump(), **changed}}, "options").frames


# --------------------------------------------------------------------------- many videos
def list_videos(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """A file, or every non-hidden file in a folder (sorted): none is skipped silently."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[Path] = []
    for item in map(Path, items):
        if not item.exists():
            raise InputError(f"{item}: not found")
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith(".")))
        else:
            paths.append(item)
    return paths


def _summary_row(m: dict, timestamps: np.ndarray, out_path: Path) -> dict:
    return {
        "id": m["id"],
        "path": str(out_path),
        "n_frames": m["n_frames"],
        "height": m["height"],
        "width": m["width"],
        "sample_fps": m["sample_fps"],
        "timestamps": [round(float(t), 6) for t in timestamps],
        "duration": m["duration"],
    }


def extract_dir(
    inputs: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    params: FramesParams,
    failures_path: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    *,
    force: bool = False,
    prune: bool = False,
) -> dict:
    """Extract every input video into ``out_dir/<id>.npz``; unreadable ones go to the failures manifest.

    Incremental: a video whose ``.npz`` already holds the same format version, output
    params, extractor code and source fingerprint is skipped (``force`` re-extracts all).
    A failed video is tried again on every run. ``prune`` also deletes the ``.npz`` files
    (and hidden temps of killed runs) of videos that are no longer among the inputs, so
    ``out_dir`` mirrors the inputs (the stage does this; a single-file CLI run must not).

    Returns a summary with counts ``inputs = processed + skipped + failed`` and ``removed``,
    and ``videos``: one row per input, in input order, either the frames file's
    ``id/path/n_frames/height/width/sample_fps/timestamps/duration`` or ``id/path/error``.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list_videos(inputs)
    workers = params.workers if workers is None else workers
    workers = max(1, min(workers or os.cpu_count() or 1, len(paths) or 1))
    # Videos already run in parallel; more decoder threads each would only oversubscribe.
    threads = 0 if workers == 1 else max(1, (os.cpu_count() or 1) // workers)
    key = {"format_version": FORMAT_VERSION, "params": output_params(params), "extractor": extractor_id()}

    rows: list[dict | None] = [None] * len(paths)
    skipped = [False] * len(paths)
    seen: dict[str, int] = {}
    jobs = []
    for i, path in enumerate(paths):
        vid = path.stem
        if vid in seen:
            rows[i] = {"id": vid, "path": str(path), "error": f"{path}: duplicate video id {vid!r} (also {paths[seen[vid]]})"}
            continue
        seen[vid] = i
        jobs.append((i, vid, path))

    def work(vid: str, path: Path) -> tuple[dict, bool]:
        dest = out_dir / f"{vid}.npz"
        try:
            if not force:
                hit = cached_entry(dest, {**key, "id": vid, "source": source_fingerprint(path)})
                if hit is not None:
                    return _summary_row(*hit, dest), True
            vf = extract_video(path, params, video_id=vid, threads=threads)
            save_frames(dest, vf)
            return _summary_row(vf.meta, vf.timestamps, dest), False
        except Exception as exc:  # one bad video must never stop the others
            dest.unlink(missing_ok=True)  # no stale frames from an earlier run of a now-broken file
            reason = str(exc) if isinstance(exc, InputError) else f"{path}: {type(exc).__name__}: {_one_line(exc)}"
            return {"id": vid, "path": str(path), "error": " ".join(reason.split())}, False

    from tqdm import tqdm

    bar = tqdm(total=len(paths), desc="extract frames", unit="video", file=sys.stderr, disable=None if progress else True)
    bar.update(len(paths) - len(jobs))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(work, vid, path): i for i, vid, path in jobs}
        for fut in as_completed(futures):
            i = futures[fut]
            rows[i], skipped[i] = fut.result()
            bar.update(1)
    bar.close()

    removed = []
    if prune:
        for f in sorted(out_dir.iterdir()):
            ours = f.suffix == ".npz" and not f.name.startswith(".") and f.stem not in seen
            killed_temp = f.name.startswith(".") and ".npz." in f.name  # atomic_path leftovers
            if f.is_file() and (ours or killed_temp):
                f.unlink()
                removed += [f.name] if ours else []

    failed = [r for r in rows if r is not None and "error" in r]
    done = [r for r, skip in zip(rows, skipped) if r is not None and "error" not in r and not skip]
    kept = [r for r, skip in zip(rows, skipped) if r is not None and skip]
    assert len(done) + len(kept) + len(failed) == len(paths), "a video was neither extracted, skipped nor reported"
    if failures_path is not None:
        write_jsonl(failures_path, failed)
    ok = done + kept
    return {
        "inputs": len(paths),
        "processed": len(done),
        "skipped": len(kept),
        "failed": len(failed),
        "removed": len(removed),
        "frames": sum(r["n_frames"] for r in ok),
        "bytes": sum(Path(r["path"]).stat().st_size for r in ok),
        "seconds": round(time.perf_counter() - start, 3),
        "workers": workers,
        "out_dir": str(out_dir),
        "failures": str(failures_path) if failures_path is not None else None,
        "videos": rows,
    }
