"""A tiny Qwen2.5-VL built locally: the offline stand-in for Qwen2.5-VL-7B.

Same classes as the real checkpoint (``Qwen2_5_VLForConditionalGeneration``,
``Qwen2_5_VLProcessor`` with the Qwen2-VL image and video processors, the
Qwen2.5-VL chat template), so every code path downstream is the real one; only
the widths, depths and the vocabulary are small. The vocabulary is a byte-level
BPE trained on the RIQ text with Qwen2's pre-tokenizer, followed by the 22
Qwen2.5 added tokens in Qwen's order (so e.g. ``<|video_pad|>`` - ``<|endoftext|>``
is 13 here as in Qwen, 151656 - 151643).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pipeline.core.params import FramesParams, TinyModelParams
from pipeline.model.video_inputs import CHAT_TEMPLATE_PATH

# Qwen2.5 added tokens 151643..151664, in order; True = special (never split, skipped on decode).
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
# Spatial/temporal patching of the real Qwen2.5-VL: frames from pipeline.data.frames are sized for it.
PATCH_SIZE = 14
SPATIAL_MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE on ``texts`` with Qwen2's normalizer and pre-tokenizer, wrapped as a Qwen2Tokenizer."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # All 256 bytes, so any text (a digit, an unseen word) still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # Appending the added tokens to the vocabulary first pins their ids to Qwen's order.
    for token, _ in QWEN_ADDED_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        errors="replace",
    )
    tokenizer.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN_ADDED_TOKENS])
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t, s in QWEN_ADDED_TOKENS if s][1:]})
    tokenizer.padding_side = "left"
    return tokenizer


def build_processor(tokenizer, frames: FramesParams | None = None):
    """The real Qwen2_5_VLProcessor around ``tokenizer``, with pixel bounds from the frames params."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import (
        Qwen2VLVideoProcessor,
    )

    frames = frames or FramesParams()
    size = {"shortest_edge": frames.min_pixels, "longest_edge": frames.max_pixels}
    common = dict(patch_size=PATCH_SIZE, merge_size=SPATIAL_MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE, size=size)
    video_processor = Qwen2VLVideoProcessor(
        **common, min_frames=frames.min_frames, max_frames=frames.max_frames, fps=frames.fps, do_sample_frames=False
    )
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE_PATH.read_text(encoding="utf-8"),
    )


def tiny_config(tokenizer, params: TinyModelParams):
    from transformers import Qwen2_5_VLConfig

    head_dim = params.hidden_size // params.num_attention_heads
    if head_dim * params.num_attention_heads != params.hidden_size or head_dim % 2:
        raise ValueError("model.tiny: hidden_size must be an even multiple of num_attention_heads")
    half = head_dim // 2
    # Qwen2.5-VL splits the rotary frequencies t:h:w = 16:24:24 of 64; keep the proportions.
    t = max(1, round(half / 4))
    h = (half - t) // 2
    mrope_section = [t, h, half - t - h]
    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=params.hidden_size,
        intermediate_size=params.intermediate_size,
        num_hidden_layers=params.num_hidden_layers,
        num_attention_heads=params.num_attention_heads,
        num_key_value_heads=params.num_key_value_heads,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    vision = dict(
        depth=params.vision_depth,
        hidden_size=params.vision_hidden_size,
        intermediate_size=params.vision_hidden_size * 2,
        num_heads=params.vision_num_heads,
        out_hidden_size=params.hidden_size,
        patch_size=PATCH_SIZE,
        spatial_merge_size=SPATIAL_MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        tokens_per_second=2,
        window_size=112,
        # Last block attends globally, as every 8th block of the 32-block original does.
        fullatt_block_indexes=[params.vision_depth - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=params.tie_word_embeddings,
    )


def build_tiny_model(tokenizer, params: TinyModelParams):
    """A randomly initialised tiny Qwen2_5_VLForConditionalGeneration; same seed, same weights."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from pipeline.model import rope

    rope.install()  # Qwen's positions for text after a video (transformers 5.24 differs; see pipeline.model.rope)
    config = tiny_config(tokenizer, params)
    torch.manual_seed(params.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    # transformers draws every layer from N(0, 0.02), a scale meant for widths in the
    # thousands; in a 32-wide tower it shrinks what differs between patches to ~0.4% of
    # each video token. PyTorch's fan-in defaults keep the patches apart; a colour probe
    # trained through the tower for 400 steps reached held-out BCE 0.29 from them, 0.35
    # from the transformers init.
    visual = model.model.visual
    for module in visual.modules():
        if module is not visual and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    ids = tokenizer.convert_tokens_to_ids
    model.generation_config = GenerationConfig(
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")],
        pad_token_id=ids("<|endoftext|>"),
        bos_token_id=ids("<|endoftext|>"),
        do_sample=False,
    )
    return model
