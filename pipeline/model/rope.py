"""Qwen2.5-VL's 3-D RoPE rule for text after a video, restored on transformers 5.24.

In the code released with Qwen2.5-VL (transformers 4.49-4.5x ``get_rope_index``), whatever follows a
vision block starts at the largest position of the block over all three axes, plus one. A video's
pads sit at ``(start + floor(i_t * second_per_grid_t * tokens_per_second), start + i_h, start + i_w)``,
so for a video that lasts longer than it is wide the temporal axis decides, and the text after it
starts after the video's last time step.

transformers 5.24 rewrote ``Qwen2_5_VLModel.get_rope_index`` and advances the text start by
``max(h, w) // spatial_merge_size`` only, the rule for a still image. The vision positions themselves
are right (transformers#45381 / #45400 fixed those), but text after a video now lands inside the
video's time range. For the first video of the default data (36 frames at 72/37 fps, 56x84, merged
2x3, temporal offsets up to 34) the instruction and the query start 3 positions after the video's
start instead of 35, and their first 32 tokens share temporal positions with the video's frames. The
prompt puts the query after the video (pipeline/core/prompt.py) and the completion follows it, so
every token the model reads or writes about the query was positioned this way, in generation and in
every training forward alike. A hub Qwen2.5-VL-7B comes with the released rule, not 5.24's.

:func:`install` replaces the method on the class with the 5.24 function changed in that one line, so
every instance (the policy, TRL's reference model, a resumed checkpoint) uses it, and the generate and
forward paths that call ``self.get_rope_index`` pick it up. Still images are unaffected (one time step:
both rules give ``max(h, w)``). ``tests/model/test_rope_positions.py`` checks every token against an
independent oracle of the original rule (``tests/rope_reference.py``), in ``get_rope_index``, a
training-layout forward and ``generate``; ``tests/train/test_train.py`` the GRPO log-prob forward.
"""

from __future__ import annotations

import itertools


def get_rope_index(
    self,
    input_ids,
    mm_token_type_ids,
    image_grid_thw=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    attention_mask=None,
    **kwargs,
):
    """``Qwen2_5_VLModel.get_rope_index`` of transformers 5.24 with Qwen's text start after a vision block.

    Same arguments and returns: ``position_ids`` (3, batch, seq), 0 on padding, and ``rope_deltas``
    (batch, 1) = ``max position + 1 - unpadded length``, which later decode steps add to their index.
    """
    import torch

    spatial_merge_size = self.config.vision_config.spatial_merge_size
    tokens_per_second = self.config.vision_config.tokens_per_second

    mrope_position_deltas = []
    position_ids = torch.zeros(3, input_ids.shape[0], input_ids.shape[1], dtype=input_ids.dtype, device=input_ids.device)
    grid_iters = {
        1: iter(image_grid_thw) if image_grid_thw is not None else None,
        2: iter(video_grid_thw) if video_grid_thw is not None else None,
    }
    second_per_grid_ts = iter(second_per_grid_ts) if second_per_grid_ts is not None else iter([1] * input_ids.shape[1])
    for batch_idx, current_input_ids in enumerate(input_ids):
        input_token_type = mm_token_type_ids[batch_idx]
        if attention_mask is not None:
            current_input_ids = current_input_ids[attention_mask[batch_idx].bool()]
            input_token_type = input_token_type[attention_mask[batch_idx].bool()]

        input_type_group = []
        for key, group in itertools.groupby(enumerate(input_token_type.tolist()), lambda x: x[1]):
            group = list(group)
            input_type_group.append((key, group[0][0], group[-1][0] + 1))

        current_pos = 0
        llm_pos_ids_list = []
        for modality_type, start_idx, end_idx in input_type_group:
            if modality_type == 0:  # text
                text_len = end_idx - start_idx
                llm_pos_ids_list.append(torch.arange(text_len, device=input_ids.device).view(1, -1).expand(3, -1) + current_pos)
                current_pos += text_len
            else:  # image == 1, video == 2
                grid_thw = next(grid_iters[modality_type])
                time_interval = tokens_per_second * next(second_per_grid_ts) if modality_type == 2 else 1
                vision_position_ids = self.get_vision_position_ids(
                    current_pos, grid_thw, 1, spatial_merge_size, time_interval, device=input_ids.device
                )
                llm_pos_ids_list.append(vision_position_ids)
                # The one change from 5.24 (``current_pos += max(grid_thw[1], grid_thw[2]) // spatial_merge_size``):
                # Qwen's ``st_idx = llm_pos_ids_list[-1].max() + 1``, after the block's last time step.
                current_pos = int(vision_position_ids.max()) + 1
        llm_positions = torch.cat(llm_pos_ids_list, dim=1).reshape(3, -1)
        if attention_mask is not None:
            position_ids[:, batch_idx, attention_mask[batch_idx].bool()] = llm_positions.to(position_ids.device)
        else:
            position_ids[:, batch_idx] = llm_positions.to(position_ids.device)
        mrope_position_deltas.append(llm_positions.max() + 1 - len(current_input_ids))
    mrope_position_deltas = torch.tensor(mrope_position_deltas, device=input_ids.device).unsqueeze(1)
    return position_ids, mrope_position_deltas


def install() -> None:
    """Make every Qwen2.5-VL model of this process position text after a video by Qwen's rule (idempotent)."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

    m.Qwen2_5_VLModel.get_rope_index = get_rope_index
