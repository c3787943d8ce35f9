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

Probing and decoding are pipeline.data.decode; the sizing rules pipeline.data.sizing. This
module is the cache key and the incremental extraction of a folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from pipeline.core.frames_cache import VideoFrames, frames_path, save_frames
from pipeline.core.frames_cache import one_line as _one_line
from pipeline.core.io import InputError, write_jsonl
from pipeline.core.params import FramesParams
from pipeline.data.decode import VideoError, decode_selected, probe_video
from pipeline.data.ffmpeg import decoder_exe
from pipeline.data.sizing import plan_sampling, plan_size

# Bump when the file layout or meta keys change. (Code changes that alter frames
# are caught by EXTRACTOR_FILES' hash, see extractor_id.)
FORMAT_VERSION = 2
_HERE = Path(__file__).parent
# The sources whose edits can change the frames written (all inside dvc.yaml's deps of extract_frames).
EXTRACTOR_FILES = (Path(__file__), _HERE / "sizing.py", _HERE / "decode.py", _HERE / "ffmpeg.py",
                   _HERE.parent / "core" / "frames_cache.py")
FINGERPRINT_CHUNK = 64 * 1024


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


def with_overrides(params: FramesParams, **overrides) -> FramesParams:
    """``params`` with the non-None overrides; a bad value fails with one line naming ``frames.<key>``."""
    from pipeline.core.params import parse_params

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
        dest = frames_path(out_dir, vid)
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
