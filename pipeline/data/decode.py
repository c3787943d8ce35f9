"""Reading one video: probe its frames (PyAV, else ffprobe / ``ffmpeg -i``) and decode the kept ones.

The probe (PyAV, in-process) demuxes every packet once, which gives the frame
count and each frame's presentation time exactly as decord indexes them. Each
video is then decoded once by one ffmpeg process: ``select`` keeps the planned
frames, ``scale`` converts to RGB at the source size (as decord does) and then
resizes with swscale's bicubic (close to torchvision's antialiased bicubic).
Frames arrive as raw rgb24 on a pipe. Without PyAV, the probe falls back to
ffprobe/``ffmpeg -i`` and ffmpeg's ``showinfo`` reports the kept frames' times.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.core.frames_cache import one_line as _one_line
from pipeline.core.io import InputError
from pipeline.data.ffmpeg import decoder_exe, ffprobe_exe, probe

# swscale widens its kernel when downscaling, an antialiased resize like torchvision's
# bicubic(antialias=True). Of the kernels tried, swscale's default bicubic came
# closest to qwen-vl-utils' frames (mean abs difference ~0.1-0.2 of 255; see docs/FRAMES.md).
RESIZE_FLAGS = {"flags": "bicubic"}
# ffmpeg's C code only: swscale's SIMD code rounds differently from its C code (up to 3-4 levels of
# 255), and which SIMD code runs depends on the CPU, so the same video gave other frames on another
# machine and dvc.lock's hashes and every metric moved. The C code gives the same frames everywhere.
# Cost: ~1.5x the decoding time of a 480p clip. swscale's accurate_rnd+bitexact flags also make SIMD
# match C, but move the frames further from qwen-vl-utils' (decord's SIMD swscale): mean abs
# difference 1.0-2.1 on the test videos against 0.5-0.8 with the C code (docs/FRAMES.md).
CPU_FLAGS = ("-cpuflags", "0")


class VideoError(InputError):
    """A video that cannot be turned into frames; the message is one line naming the file."""


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
    or ``ffmpeg`` (parsing ``ffmpeg -i``; see :func:`pipeline.data.ffmpeg.probe`), or
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
    return [args[0], *CPU_FLAGS, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info" if showinfo else "error", *args[1:]]


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


