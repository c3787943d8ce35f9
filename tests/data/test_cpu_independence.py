"""The synthetic videos and the frames taken from them do not depend on the CPU.

The lock pins the ffmpeg binary, but one binary still takes other code paths on other CPUs:
swscale's and x264's SIMD code round differently from their C code. A fresh clone on a machine
with other CPU features then rendered other videos (25 bytes more over the 240 default videos),
so dvc.lock's hashes and every metric moved. Here the same video is rendered and its frames
extracted twice in fresh processes, once with ffmpeg's SIMD code on and once off
(``-cpuflags 0``, through a wrapper named by RARFT_FFMPEG): the bytes must be the same.
Before the bit-exact settings, the mp4 and the frames of this video differed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np

SCRIPT = """
import sys
import numpy as np
from pipeline.core.params import FramesParams, SyntheticParams
from pipeline.data.frames import extract_video
from pipeline.data.synthetic import encode, plan_video

plan = plan_video(SyntheticParams(), 7)
encode(plan, __import__("pathlib").Path(sys.argv[1]))
np.save(sys.argv[2], extract_video(sys.argv[1], FramesParams()).frames)
"""


def _render(tmp_path: Path, name: str, ffmpeg: str) -> tuple[bytes, np.ndarray]:
    env = dict(os.environ, RARFT_FFMPEG=ffmpeg)
    env.pop("RARFT_FFPROBE", None)
    video, frames = tmp_path / f"{name}.mp4", tmp_path / f"{name}.npy"
    subprocess.run([sys.executable, "-c", SCRIPT, str(video), str(frames)], env=env, check=True,
                   cwd=Path(__file__).resolve().parents[2])
    return video.read_bytes(), np.load(frames)


def test_a_synthetic_video_and_its_frames_are_the_same_with_simd_off(tmp_path):
    real = imageio_ffmpeg.get_ffmpeg_exe()
    no_simd = tmp_path / "ffmpeg-no-simd"
    no_simd.write_text(f'#!/bin/sh\nexec "{real}" -cpuflags 0 "$@"\n')
    no_simd.chmod(0o755)
    on_bytes, on_frames = _render(tmp_path, "simd", real)
    off_bytes, off_frames = _render(tmp_path, "no_simd", str(no_simd))
    assert on_frames.shape == off_frames.shape and on_frames.shape[0] > 10
    assert on_bytes == off_bytes
    assert (on_frames == off_frames).all()
