"""What train.freeze_* keep fixed during GRPO: the vision blocks, the merger, the input embeddings."""

from __future__ import annotations

import pytest

from pipeline.core.params import TinyModelParams, TrainParams
from pipeline.model.tiny import build_tiny_model, train_tokenizer
from pipeline.train.memory import is_frozen, model_shape
from pipeline.train.run import freeze

TINY = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=300)


@pytest.mark.parametrize(("name", "blocks", "merger", "embeddings"), [
    ("model.visual.blocks.0.attn.qkv.weight", True, False, False),
    ("model.visual.patch_embed.proj.weight", True, False, False),
    ("model.visual.merger.mlp.0.weight", False, True, False),
    ("model.language_model.embed_tokens.weight", False, False, True),
    ("lm_head.weight", False, False, False),
    ("model.language_model.layers.0.self_attn.q_proj.weight", False, False, False),
])
def test_each_switch_freezes_its_part_only(name, blocks, merger, embeddings):
    for field, expected in (("freeze_vision_tower", blocks), ("freeze_vision_merger", merger), ("freeze_input_embeddings", embeddings)):
        only = TrainParams(freeze_vision_tower=False, freeze_vision_merger=False, freeze_input_embeddings=False).model_copy(update={field: True})
        assert is_frozen(name, only) is expected, (name, field)


def test_cpu_default_freezes_the_whole_path_of_sight_and_the_memory_estimate_agrees():
    tok = train_tokenizer(["the red square moves left"] * 10, 300)
    model = build_tiny_model(tok, TINY)  # untied: the output head trains
    visual = sum(p.numel() for p in model.model.visual.parameters())
    embed = model.get_input_embeddings().weight.numel()
    tp = TrainParams()
    assert tp.freeze_vision_tower and tp.freeze_vision_merger and tp.freeze_input_embeddings
    assert freeze(model, tp) == visual + embed
    assert model.lm_head.weight.requires_grad and not model.get_input_embeddings().weight.requires_grad
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    shape = model_shape(model.config, tp)
    assert shape.params - shape.trainable == visual + embed
    # The GPU profiles train the merger and the embeddings (tests/train/test_distributed.py reads gpu8).
    gpu_like = TrainParams(freeze_vision_merger=False, freeze_input_embeddings=False)
    assert model_shape(model.config, gpu_like).params - model_shape(model.config, gpu_like).trainable == visual - sum(
        p.numel() for p in model.model.visual.merger.parameters())
