"""Locate ffmpeg/ffprobe: the system binaries when present, else the ffmpeg
binary shipped in the imageio-ffmpeg wheel (so no root is needed).

imageio-ffmpeg ships no ffprobe, so probing goes through ``probe()``, which
uses ffprobe when there is one and otherwise parses ``ffmpeg -i`` output.
"""

from __future__ import annotations

import functools
import os
import shutil


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
def ffprobe_exe() -> str | None:
    """The ffprobe binary, or None when only the bundled ffmpeg is available."""
    override = os.environ.get("RARFT_FFPROBE")
    if override:
        return override
    if os.environ.get("RARFT_FFMPEG"):
        return None
    return shutil.which("ffprobe")
