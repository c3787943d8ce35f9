"""The system ffmpeg and the imageio-ffmpeg binary give the same frames.

rarft decodes with imageio-ffmpeg's static build unless ``RARFT_FFMPEG`` names
another binary, and falls back from PyAV to ffprobe / ``ffmpeg -i`` for probing;
a machine without a system ffmpeg has only the bundled binary and no ffprobe.
Here the same rotated, variable-rate and odd-size videos go through each binary,
with each probe, and must give the same frame indices, shapes and timestamps,
and pixels within a small tolerance (two ffmpeg versions' swscale and decoders).
Needs a system ffmpeg (CI installs Debian's); skipped without one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from pipeline.core.params import FramesParams
from pipeline.data import ffmpeg as FF
from pipeline.data.frames import extract_video
from rotated_video import write_rotated

BUNDLED = imageio_ffmpeg.get_ffmpeg_exe()
SYSTEM = shutil.which("ffmpeg")
SYSTEM_PROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(SYSTEM is None, reason="no system ffmpeg on PATH to compare the bundled one with")

# name -> (lavfi source, encoder args, extension); rotations are added below.
SOURCES = {
    "h264": ("testsrc2=size=96x48:rate=15:duration=2", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    "vfr": ("testsrc2=size=64x48:rate=15:duration=2", ["-vf", "select='not(between(n\\,3\\,12))'", "-fps_mode", "vfr",
                                                       "-c:v", "libx264", "-pix_fmt", "yuv420p"], "mkv"),
    "odd444": ("testsrc2=size=65x49:rate=15:duration=2", ["-c:v", "libx264", "-pix_fmt", "yuv444p"], "mp4"),
    "vp9_odd": ("testsrc2=size=33x65:rate=15:duration=2", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "webm"),
    "hevc_ntsc": ("testsrc2=size=80x60:rate=30000/1001:duration=2", ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-tag:v", "hvc1"], "mp4"),
}
ROTATED = {"rot90": 90, "rot270": -90, "rot180": 180}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("binaries")
    out = {}
    for name, (src, args, ext) in SOURCES.items():
        out[name] = root / f"{name}.{ext}"
        subprocess.run([BUNDLED, "-v", "error", "-nostdin", "-f", "lavfi", "-i", src, *args, "-threads", "1", str(out[name])],
                       check=True, capture_output=True)
    for name, degrees in ROTATED.items():
        out[name] = write_rotated(BUNDLED, out["h264"], root / f"{name}.mp4", degrees)
    return out


def _extract(monkeypatch, exe: str, probe: str | None, path: Path, backend: str):
    """extract_video with ``exe`` as the only ffmpeg (RARFT_FFMPEG) and ``probe`` as ffprobe."""
    monkeypatch.setenv("RARFT_FFMPEG", exe)
    if probe:
        monkeypatch.setenv("RARFT_FFPROBE", probe)
    else:
        monkeypatch.delenv("RARFT_FFPROBE", raising=False)
    for cached in (FF.ffmpeg_exe, FF.decoder_exe, FF.ffprobe_exe):
        cached.cache_clear()
    try:
        assert (FF.decoder_exe(), FF.ffmpeg_exe(), FF.ffprobe_exe()) == (exe, exe, probe)
        return extract_video(path, FramesParams(), probe_backend=backend)
    finally:
        monkeypatch.undo()
        for cached in (FF.ffmpeg_exe, FF.decoder_exe, FF.ffprobe_exe):
            cached.cache_clear()


@pytest.mark.parametrize("name", [*SOURCES, *ROTATED])
def test_system_and_bundled_ffmpeg_give_the_same_frames(videos, monkeypatch, name):
    path = videos[name]
    runs = {
        ("bundled", "av"): _extract(monkeypatch, BUNDLED, None, path, "av"),
        ("bundled", "ffmpeg"): _extract(monkeypatch, BUNDLED, None, path, "ffmpeg"),
        ("system", "av"): _extract(monkeypatch, SYSTEM, SYSTEM_PROBE, path, "av"),
        ("system", "ffmpeg"): _extract(monkeypatch, SYSTEM, SYSTEM_PROBE, path, "ffmpeg"),
    }
    if SYSTEM_PROBE:
        runs[("system", "ffprobe")] = _extract(monkeypatch, SYSTEM, SYSTEM_PROBE, path, "ffprobe")
    ref = runs[("bundled", "av")]
    for key, got in runs.items():
        assert got.frames.shape == ref.frames.shape, (name, key)
        assert got.meta["frame_indices"] == ref.meta["frame_indices"], (name, key)
        assert got.meta["total_frames"] == ref.meta["total_frames"], (name, key)
        assert (got.meta["source_height"], got.meta["source_width"]) == (ref.meta["source_height"], ref.meta["source_width"]), (name, key)
        np.testing.assert_allclose(got.timestamps, ref.timestamps, atol=1e-6, err_msg=f"{name} {key}")
        diff = np.abs(got.frames.astype(np.int16) - ref.frames.astype(np.int16))
        print(f"{name} {key}: {got.frames.shape} mean abs diff {diff.mean():.4f} max {diff.max()}")
        assert diff.mean() < 0.5, (name, key, diff.mean())
    if name in ROTATED and abs(ROTATED[name]) == 90:  # stored 96x48, shown upright as 48 wide, 96 high
        assert ref.frames.shape[1] > ref.frames.shape[2], name
