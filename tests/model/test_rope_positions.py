"""3-D RoPE positions of the tokens after a video, against Qwen's own rule (tests/rope_reference.py).

The prompt puts the instruction and the query after the video (pipeline/core/prompt.py), and the
completion follows them, so every token the model reads or writes about the query is positioned by
what Qwen2.5-VL does after a vision block. transformers 5.24 starts that text only
max(h, w)/merge past the video's start instead of after its last time step; for a video longer
than it is wide the query then sits inside the video's time range. These tests hold every path
that positions tokens (the function, a training-layout forward, generation's prefill and decode
steps) to the rule the model was released with. The GRPO log-prob forward is checked in
tests/train/test_train.py.
"""

from __future__ import annotations

import pytest
import torch
from rope_reference import assert_positions, reference_positions
from video_fixtures import make_frames

from pipeline.core.frames_cache import VideoFrames, save_frames
from pipeline.core.params import TinyModelParams
from pipeline.core.prompt import INSTRUCTION
from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer
from pipeline.model.video_inputs import batch_inputs, prompt_text

TINY = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=400)
QUERIES = ["the small red square moves left", "a much longer query about the large blue bar that grows and then shrinks"]
COMPLETIONS = ["<think>It moves.</think> <answer>1.00 to 2.50</answer> <correction>NIL</correction>", "<think>no</think>"]
# (frames, fps, H, W): grid (T/2, H/14, W/14), merged (H/28, W/28); temporal step tokens_per_second * 2 / fps.
VIDEOS = {
    # 8 time steps 2 positions apart (0..14) against a 2x3 merged frame: the default data's shape
    # (36 frames at ~1.95 fps, 56x84 -> temporal offsets up to 34 against 2x3).
    "longer_than_wide": (16, 2.0, 56, 84),
    "slow_fps": (8, 0.5, 56, 84),  # 4 steps of 8 (0..24), 2x3
    "wider_than_long": (4, 2.0, 112, 112),  # 2 steps (0, 2) against 4x4: the spatial extent dominates
}




@pytest.fixture(scope="module")
def processor():
    texts = [INSTRUCTION.format(query=q) for q in QUERIES] + COMPLETIONS
    return build_processor(train_tokenizer(texts * 3, TINY.vocab_size))


@pytest.fixture(scope="module")
def model(processor):
    return build_tiny_model(processor.tokenizer, TINY).eval()


def _videos(name: str) -> list[VideoFrames]:
    t, fps, h, w = VIDEOS[name]
    return [make_frames(t, fps, h, w, seed=0), make_frames(t, fps, h, w, seed=1)]


def expected(model, batch, row: int) -> tuple[list[int], torch.Tensor]:
    """The unpadded ids of ``row`` and Qwen's positions for them, (3, n)."""
    keep = batch["attention_mask"][row].bool()
    ids = batch["input_ids"][row][keep].tolist()
    vc = model.config.vision_config
    pos = reference_positions(ids, model.config.video_token_id, [batch["video_grid_thw"][row].tolist()],
                              [batch["second_per_grid_ts"][row].item()], vc.tokens_per_second, vc.spatial_merge_size)
    return ids, torch.tensor(pos).T


def decoder_positions(model, call) -> list[torch.Tensor]:
    """The 3-D positions every decoder forward inside ``call()`` receives, (3, batch, seq) each."""
    seen = []

    def grab(_module, _args, kwargs):
        pos = kwargs.get("position_ids")
        # generate() passes 4 rows: the 1-D text positions first (for the mask), then the 3-D ones.
        seen.append(None if pos is None else (pos[1:] if pos.shape[0] == 4 else pos).clone())

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            call()
    finally:
        handle.remove()
    return seen


def after_video(batch, row: int) -> int:
    """Index, in the unpadded row, of the first token after the video (``<|vision_end|>``)."""
    mm = batch["mm_token_type_ids"][row][batch["attention_mask"][row].bool()]
    return int((mm == 2).nonzero().max()) + 1


@pytest.mark.parametrize("name", list(VIDEOS))
def test_get_rope_index_follows_qwens_rule_on_every_token(processor, model, name):
    b = batch_inputs(processor, [prompt_text(processor, q) for q in QUERIES], _videos(name))
    assert (b["attention_mask"] == 0).any(), "one prompt should be left-padded"
    pos, deltas = model.model.get_rope_index(
        b["input_ids"], b["mm_token_type_ids"], video_grid_thw=b["video_grid_thw"],
        second_per_grid_ts=b["second_per_grid_ts"], attention_mask=b["attention_mask"])
    for row in range(2):
        ids, want = expected(model, b, row)
        got = pos[:, row, b["attention_mask"][row].bool()]
        k = after_video(b, row)
        video = want[:, :k][:, torch.tensor(ids[:k]) == model.config.video_token_id]
        # The number that matters, first: where the text after the video starts, per axis.
        assert got[:, k].tolist() == want[:, k].tolist() == [int(video.max()) + 1] * 3, (
            f"{name}: first text after the video at {got[:, k].tolist()}, Qwen's rule {want[:, k].tolist()} "
            f"(video positions up to t={video[0].max()}, h={video[1].max()}, w={video[2].max()})")
        assert_positions(got, want, f"{name}, row {row}")
        assert deltas[row].item() == int(want.max()) + 1 - len(ids)


def test_a_longer_than_wide_video_tells_the_rules_apart(processor, model):
    """Guard on the test itself: for a video longer than it is wide, 5.24's own rule (text at start + max(h, w)
    merged) puts the text inside the video's time range, so the test above can tell the rules apart."""
    b = batch_inputs(processor, [prompt_text(processor, QUERIES[0])], _videos("longer_than_wide")[:1])
    _, want = expected(model, b, 0)
    k = after_video(b, 0)
    start = int(want[0, k - (8 * 2 * 3)])  # the video's first position (8 steps x 2x3 tokens)
    merged = b["video_grid_thw"][0, 1:] // model.config.vision_config.spatial_merge_size
    assert start + int(merged.max()) == start + 3 < int(want[0, k]) == start + 14 + 1


@pytest.mark.parametrize("name", ["longer_than_wide", "wider_than_long"])
def test_training_forward_positions_follow_qwens_rule(processor, model, name):
    """The layout of every log-prob and loss forward: [pad.. prompt | completion ..pad], positions from mm_token_type_ids."""
    b = batch_inputs(processor, [prompt_text(processor, q) for q in QUERIES], _videos(name), COMPLETIONS)
    comp = b.pop("completion_mask")
    b.pop("labels")
    assert (b["attention_mask"][:, 0] == 0).any() and (b["attention_mask"][:, -1] == 0).any()
    (pos,) = decoder_positions(model, lambda: model(**b))
    for row in range(2):
        _, want = expected(model, b, row)
        keep = b["attention_mask"][row].bool()
        assert_positions(pos[:, row, keep], want, f"{name}, row {row}")
        # Completion tokens continue right after the prompt's last (and largest) position.
        n = int(comp[row].sum())
        prompt_max = int(want[:, :-n].max())
        assert pos[:, row, keep][:, -n:].tolist() == [list(range(prompt_max + 1, prompt_max + 1 + n))] * 3


@pytest.mark.parametrize("grouped", [True, False])
def test_generate_positions_follow_qwens_rule(processor, model, tmp_path, grouped):
    """pipeline.evaluate.inference.generate: the prefill, and every decode step at max(prompt positions) + step."""
    from pipeline.evaluate.inference import generate
    from pipeline.riq.schema import RiqRecord

    videos = _videos("longer_than_wide")
    records = []
    for i, (q, v) in enumerate(zip(QUERIES, videos)):
        path = tmp_path / f"v{i}.npz"
        save_frames(path, v)
        records.append(RiqRecord(id=f"q{i}", video=f"v{i}", video_path=f"v{i}.mp4", frames_path=str(path),
                                 duration=8.0, problem=q, task_type="answerable", kind="answerable",
                                 gt_answers=[{"answer": [1.0, 2.0]}], reference_answer="1.00 to 2.00",
                                 contrast_answer="none", source="synthetic"))
    steps = decoder_positions(model, lambda: generate(model, processor, records, batch_size=2, max_new_tokens=6,
                                                      progress=False, grouped=grouped))
    b = batch_inputs(processor, [prompt_text(processor, q) for q in QUERIES], videos)
    prefill, decode = steps[0], steps[1:]
    assert prefill.shape[-1] == b["input_ids"].shape[1] and decode and all(p.shape[-1] == 1 for p in decode)
    for row in range(2):
        _, want = expected(model, b, row)
        keep = b["attention_mask"][row].bool()
        assert_positions(prefill[:, row, keep], want, f"prefill, row {row}")
        top = int(want.max())
        assert [p[:, row, 0].tolist() for p in decode] == [[top + k] * 3 for k in range(1, len(decode) + 1)]
