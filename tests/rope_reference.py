"""The 3-D (M-RoPE) positions of Qwen2.5-VL as Qwen released it: an oracle independent of transformers 5.x.

Written from the original ``Qwen2_5_VLForConditionalGeneration.get_rope_index`` (transformers 4.49-4.5x,
the code released with Qwen2.5-VL), in plain Python so that no code of the library under test is used:

* text tokens get the same position on all three axes, counting up by one;
* the ``t*h*w/merge**2`` pads of a video with grid ``(t, h, w)`` get
  ``(start + floor(i_t * second_per_grid_t * tokens_per_second), start + i_h, start + i_w)`` for
  ``i_t < t``, ``i_h < h/merge``, ``i_w < w/merge`` (row-major, time slowest), where ``start`` is the
  position the next text token would have had;
* whatever follows a vision block starts at **the largest position of everything before it, over all
  three axes, plus one** (``st_idx = llm_pos_ids_list[-1].max() + 1``): text after a video comes after the
  video's last time step, never inside its time range;
* padding is ignored (the positions are those of the unpadded sequence); after the prompt, generation
  continues at ``max(all prompt positions) + 1, + 2, ...`` (``rope_deltas = max + 1 - length``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def reference_positions(
    ids: Sequence[int],
    video_token_id: int,
    grids: Sequence[Sequence[int]],
    seconds_per_grid: Sequence[float],
    tokens_per_second: float,
    merge: int,
) -> list[tuple[int, int, int]]:
    """(t, h, w) position of every token of one unpadded sequence; ``grids``/``seconds_per_grid`` per video, in order."""
    out: list[tuple[int, int, int]] = []
    nxt = 0  # where the next text token or vision block starts
    i = video = 0
    while i < len(ids):
        if ids[i] == video_token_id:
            t, h, w = (int(x) for x in grids[video])
            step = float(seconds_per_grid[video]) * tokens_per_second
            gh, gw = h // merge, w // merge
            block = [(nxt + math.floor(it * step), nxt + ih, nxt + iw) for it in range(t) for ih in range(gh) for iw in range(gw)]
            if ids[i : i + len(block)] != [video_token_id] * len(block):
                raise ValueError(f"video {video}: expected {len(block)} pads at {i}")
            out += block
            i += len(block)
            video += 1
            nxt = max(max(p) for p in block) + 1
        else:
            out.append((nxt, nxt, nxt))
            nxt += 1
            i += 1
    if video != len(grids):
        raise ValueError(f"{len(grids)} grids but {video} videos in the sequence")
    return out


def assert_positions(got, want, what: str) -> None:
    """Equal (3, n) position tensors, or an AssertionError naming the first token that differs."""
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    bad = (got != want).any(0).nonzero()
    if len(bad):
        i = int(bad[0])
        raise AssertionError(f"{what}: {len(bad)} of {got.shape[1]} tokens differ; first at token {i}: "
                             f"(t, h, w) = {got[:, i].tolist()}, Qwen's rule {want[:, i].tolist()}")
