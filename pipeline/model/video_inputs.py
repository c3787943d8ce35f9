"""The one place that turns cached frames into Qwen2.5-VL inputs.

Frames in ``data/frames`` were already sampled at ``meta['sample_fps']`` and
resized to multiples of 28 by ``pipeline.data.frames`` (qwen-vl-utils rules), so the
processor must neither re-sample nor re-size them. The true sampling rate
reaches the model only through ``video_metadata``: the processor derives
``second_per_grid_ts = temporal_patch_size / metadata.sampled_fps`` from it, and
without it silently assumes 24 fps (a ``fps=`` kwarg is ignored), which would
squash every temporal position id. ``mm_token_type_ids`` must travel with the
batch into every forward, or Qwen2.5-VL falls back to 1-D text positions.

Completions (SFT targets, GRPO rollouts) are tokenized on their own and appended
to the left-padded prompt, the layout TRL uses: ``[pad.. prompt | completion ..pad]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.core.io import InputError
from pipeline.core.prompt import build_messages

IGNORE_INDEX = -100
CHAT_TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")


class FramesLike(Protocol):
    """What ``pipeline.data.frames.VideoFrames`` provides."""

    frames: np.ndarray  # uint8 (T, H, W, 3)
    timestamps: np.ndarray  # float64 (T,)
    meta: dict


def load_policy(path: str | Path, *, dtype: Any = None, attn_implementation: str = "sdpa", device_map: Any = None):
    """Load a ``save_pretrained`` directory as (Qwen2_5_VLForConditionalGeneration, processor).

    ``dtype=None`` keeps the dtype the weights were saved in (float32 for the tiny
    model, bfloat16 for Qwen2.5-VL-7B). The tokenizer pads on the left so batched
    generation continues every prompt from its last token. Text after the video is positioned by
    Qwen's own 3-D RoPE rule, not transformers 5.24's (``pipeline.model.rope``).
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from pipeline.model import rope

    rope.install()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(path),
        dtype=dtype if dtype is not None else "auto",
        attn_implementation=attn_implementation,
        device_map=device_map,
    )
    processor = AutoProcessor.from_pretrained(str(path))
    processor.tokenizer.padding_side = "left"
    return model, processor


def prompt_text(processor, query: str) -> str:
    """The chat-formatted prompt (with the assistant header) for one query."""
    return processor.apply_chat_template(build_messages(query), tokenize=False, add_generation_prompt=True)


def video_metadata(video: FramesLike) -> dict:
    """The processor's ``video_metadata`` entry for frames that are already sampled.

    ``frames_indices`` lists every frame, so ``VideoMetadata.sampled_fps`` equals
    ``fps`` (the rate the cache was sampled at), not the source video's rate.
    """
    meta = video.meta or {}
    fps = meta.get("sample_fps")
    n = int(video.frames.shape[0])
    if fps is None or not float(fps) > 0:
        raise InputError(f"{meta.get('path', '<frames>')}: meta.sample_fps: missing or not positive (got {fps!r})")
    return {
        "total_num_frames": n,
        "fps": float(fps),
        "frames_indices": list(range(n)),
        "duration": meta.get("duration"),
        "height": int(video.frames.shape[1]),
        "width": int(video.frames.shape[2]),
    }


def _check_frames(video: FramesLike, factor: int) -> np.ndarray:
    frames = np.asarray(video.frames)
    where = (video.meta or {}).get("path", "<frames>")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"{where}: frames: expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    if h % factor or w % factor:
        # The processor runs with do_resize=False, so frames must already be on the patch grid.
        raise InputError(f"{where}: frames: H and W must be multiples of {factor} (got {h}x{w}); re-run extract_frames")
    return frames


def batch_inputs(
    processor,
    prompts: Sequence[str],
    videos: Sequence[FramesLike],
    completions: Sequence[str] | None = None,
    *,
    append_eos: bool = True,
    return_tensors: str = "pt",
):
    """Tokenize prompts with their videos into one padded Qwen2.5-VL batch.

    Returns a ``BatchFeature`` with ``input_ids``, ``attention_mask``,
    ``mm_token_type_ids``, ``pixel_values_videos``, ``video_grid_thw`` and
    ``second_per_grid_ts``. With ``completions`` (one per prompt), each completion
    (plus the EOS token ``<|im_end|>`` when ``append_eos``) is appended after its
    prompt, and the batch also holds ``completion_mask`` (1 on completion tokens)
    and ``labels`` (input ids on completion tokens, -100 elsewhere). Pop
    ``completion_mask`` before calling the model.
    """
    import torch

    if len(prompts) != len(videos):
        raise ValueError(f"batch_inputs: {len(prompts)} prompts but {len(videos)} videos")
    if completions is not None and len(completions) != len(prompts):
        raise ValueError(f"batch_inputs: {len(prompts)} prompts but {len(completions)} completions")
    vp = processor.video_processor
    factor = vp.patch_size * vp.merge_size
    frames = [_check_frames(v, factor) for v in videos]
    metadata = [video_metadata(v) for v in videos]

    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = processor(
            text=list(prompts),
            videos=frames,
            text_kwargs={"padding": True},
            videos_kwargs={
                "video_metadata": metadata,
                "do_sample_frames": False,
                "do_resize": False,
                # Only matters when resizing; set so the processor does not warn on every call.
                "cap_pixels_per_frame": False,
            },
            return_tensors=return_tensors,
        )
    finally:
        tokenizer.padding_side = side
    batch["second_per_grid_ts"] = torch.as_tensor(batch["second_per_grid_ts"], dtype=torch.float32)
    batch["mm_token_type_ids"] = torch.as_tensor(batch["mm_token_type_ids"], dtype=torch.long)
    if completions is None:
        return batch
    return _append_completions(batch, tokenizer, completions, append_eos)


def _append_completions(batch, tokenizer, completions: Sequence[str], append_eos: bool):
    import torch

    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>")] if append_eos else []
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + eos for c in completions]
    width = max(len(x) for x in ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    comp = torch.full((len(ids), width), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        comp[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        comp_mask[i, : len(row)] = 1
    prompt_zeros = torch.zeros_like(batch["input_ids"])
    batch["input_ids"] = torch.cat([batch["input_ids"], comp], dim=1)
    batch["attention_mask"] = torch.cat([batch["attention_mask"], comp_mask], dim=1)
    batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(comp)], dim=1)
    batch["completion_mask"] = torch.cat([prompt_zeros, comp_mask], dim=1)
    batch["labels"] = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
    return batch
