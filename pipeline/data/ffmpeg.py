"""Locate ffmpeg/ffprobe: the system binaries when present, else the ffmpeg
binary shipped in the imageio-ffmpeg wheel (so no root is needed).

imageio-ffmpeg ships no ffprobe, so probing goes through ``probe()``, which
uses ffprobe when there is one and otherwise parses ``ffmpeg -i`` output.
``decoder_exe()`` is the binary frame extraction runs (see its docstring).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess


@functools.cache
def ffmpeg_exe() -> str:
    override = os.environ.get("RARFT_FFMPEG")
    if override:
        return override
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def decoder_exe() -> str:
    """The ffmpeg that decodes videos into frames: imageio-ffmpeg's static build first.

    It starts in ~20 ms where a distro build linking ~200 shared libraries takes
    ~120 ms (more than decoding a short clip), and its version is pinned by the lock
    file, so the frame cache is byte-identical on every machine. RARFT_FFMPEG overrides.
    """
    override = os.environ.get("RARFT_FFMPEG")
    if override:
        return override
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return ffmpeg_exe()


@functools.cache
def ffprobe_exe() -> str | None:
    """The ffprobe binary, or None when only the bundled ffmpeg is available."""
    override = os.environ.get("RARFT_FFPROBE")
    if override:
        return override
    if os.environ.get("RARFT_FFMPEG"):
        return None
    return shutil.which("ffprobe")


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "N/A"):
        return 0.0
    num, _, den = text.partition("/")
    return float(num) / float(den or 1) if float(den or 1) else 0.0


def _probe_ffprobe(path: str) -> dict:
    # -count_packets demuxes the whole file (no decoding): the packet count is the
    # frame count decord reports, also for containers whose header has none.
    cmd = [
        ffprobe_exe(), "-v", "error", "-count_packets", "-select_streams", "v:0",
        "-show_entries", "stream=codec_name,width,height,avg_frame_rate,nb_read_packets:stream_side_data=rotation:format=duration",
        "-of", "json", path,
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["ffprobe failed"])[-1])
    data = json.loads(proc.stdout or "{}")
    if not data.get("streams"):
        raise ValueError("no video stream")
    st = data["streams"][0]
    rotation = 0
    for side in st.get("side_data_list", []):
        rotation = int(float(side.get("rotation", rotation)))
    duration = data.get("format", {}).get("duration")
    return {
        "width": int(st.get("width", 0)),
        "height": int(st.get("height", 0)),
        "fps": _rate(st.get("avg_frame_rate")),
        "total_frames": int(st.get("nb_read_packets", 0) or 0),
        "rotation": rotation,
        "duration": float(duration) if duration not in (None, "N/A") else None,
        "codec": st.get("codec_name"),
    }


_STREAM = re.compile(r"Stream #0:\d+\S*: Video: (\w+).*?, (\d+)x(\d+)")
_FPS = re.compile(r"([\d.]+)(k?) fps")
_FRAMES = re.compile(r"frame=\s*(\d+)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")


def _probe_ffmpeg(path: str) -> dict:
    # Stream copy into the null muxer demuxes every packet without decoding; the
    # final "frame=" counter is the packet count. The fps shown is avg_frame_rate
    # rounded to a few digits, so this fallback is exact only for integer rates.
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path, "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", check=False)
    err = proc.stderr
    head = err.split("Stream mapping:")[0]
    stream = _STREAM.search(head)
    if proc.returncode != 0 or stream is None:
        if "Stream #" in head and stream is None:
            raise ValueError("no video stream")
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else "ffmpeg failed")
    line = head[stream.start():].splitlines()[0]
    fps = _FPS.search(line)
    frames = _FRAMES.findall(err)
    rotation = _ROTATION.search(head[stream.start():])
    dur = _DURATION.search(head)
    return {
        "width": int(stream.group(2)),
        "height": int(stream.group(3)),
        "fps": float(fps.group(1)) * (1000 if fps.group(2) else 1) if fps else 0.0,
        "total_frames": int(frames[-1]) if frames else 0,
        "rotation": int(round(float(rotation.group(1)))) if rotation else 0,
        "duration": int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None,
        "codec": stream.group(1),
    }


def probe(path: str | os.PathLike, use_ffprobe: bool | None = None) -> dict:
    """Size, average fps, packet count and rotation of the first video stream.

    Keys: width, height (as stored), fps, total_frames, rotation (degrees),
    duration (s or None), codec. ``use_ffprobe=None`` uses ffprobe when present.
    Raises RuntimeError for an unreadable file, ValueError when it has no video.
    """
    path = os.fspath(path)
    if use_ffprobe is None:
        use_ffprobe = ffprobe_exe() is not None
    return _probe_ffprobe(path) if use_ffprobe else _probe_ffmpeg(path)
