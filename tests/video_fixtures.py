"""Small in-memory videos for tests that need frames but not a real decode (importable: pyproject sets pythonpath = tests)."""

from __future__ import annotations

import numpy as np

from pipeline.core.frames_cache import VideoFrames


def make_frames(t: int, fps: float, h: int = 56, w: int = 84, seed: int = 0) -> VideoFrames:
    """``t`` random RGB frames of ``h`` x ``w`` sampled at ``fps``, as the frames cache holds them."""
    rng = np.random.default_rng(seed)
    return VideoFrames(
        frames=rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8),
        timestamps=np.arange(t, dtype=np.float64) / fps,
        meta={"sample_fps": fps, "duration": t / fps},
    )
