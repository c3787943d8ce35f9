"""Qwen2.5-VL's frame count and frame size rules (qwen-vl-utils 0.0.14 ``fetch_video``).

* ``nframes = smart_nframes(...)``, indices ``torch.linspace(0, total-1, n).round()``
  (frame ``k`` is the ``k``-th frame in presentation order, as in decord);
* ``(H, W) = smart_resize(...)`` under a per-frame cap derived from ``total_pixels``.
"""

from __future__ import annotations

import math

from pipeline.core.params import FramesParams

# qwen_vl_utils 0.0.14 constants (vision_process.py).
IMAGE_FACTOR = 28  # patch 14 * spatial merge 2
FRAME_FACTOR = 2  # temporal patch size
VIDEO_FRAME_MAX_PIXELS = 768 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_RATIO = 200


# --------------------------------------------------------------------------- qwen-vl-utils rules
# Ported line for line from qwen_vl_utils 0.0.14 (a dev-only dependency that pulls
# torchvision/requests at import); tests/data/test_frames.py checks them against it.
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


