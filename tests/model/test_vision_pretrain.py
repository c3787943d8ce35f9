"""Word-supervised pretraining of the tiny vision tower (pipeline.model.vision_pretrain) on
real frames: a tower that starts blind must learn which colour a video shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.frames_cache import VideoFrames, save_frames
from pipeline.core.params import TinyModelParams
from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer
from pipeline.model.vision_pretrain import pretrain_vision, visual_vocabulary, word_auc
from pipeline.riq.schema import RiqRecord

# Smallest tower that still has every part (patch embed, a block, the merger).
TINY = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=400)
COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30)}


def _record(video: str, query: str, answerable: bool = True) -> RiqRecord:
    base = {"id": f"{video}-{len(query)}-{answerable}", "video": video, "video_path": f"videos/{video}.mp4",
            "frames_path": f"{video}.npz", "duration": 4.0, "source": "synthetic"}
    if answerable:
        return RiqRecord.model_validate(base | {
            "problem": query, "task_type": "answerable", "kind": "answerable", "gt_answers": [{"answer": [0.0, 4.0]}],
            "reference_answer": "0.00 to 4.00", "contrast_answer": "No relevant segment.", "difficulty": "original"})
    return RiqRecord.model_validate(base | {
        "problem": query, "task_type": "refusable", "kind": "hard_irrelevant", "gt_answers": [{"answer": [-1.0, -1.0]}],
        "refusable_queries": [{"problem": "x", "gt_answers": [{"answer": [0.0, 4.0]}]}],
        "explanation": "No relevant segment.", "reference_answer": "No relevant segment.",
        "contrast_answer": "0.00 to 4.00", "difficulty": "hard", "categories": ["Attribute/AttributeValue"]})


def test_visual_vocabulary_keeps_words_that_tell_videos_apart():
    records = [_record("v0", "the red square moves left"), _record("v1", "the green square moves left"),
               _record("v2", "the red bar grows"), _record("v3", "the blue bar grows"),
               _record("v3", "the blue bar moves up", answerable=False)]  # refusals say nothing about the video
    tok = train_tokenizer([r.problem for r in records] * 20, 400)
    vocab = visual_vocabulary(records, tok, max_video_share=0.5)
    kept = {tok.decode([i]) for evs in vocab.values() for _, _, ids in evs for i in ids}
    # "the" is in 4/4 videos (> 0.5); "green" and "blue" in one video only; " up" only in a refusal.
    assert kept == {" red", " square", " moves", " left", " bar", " grows"}
    assert sorted(vocab) == ["v0", "v1", "v2", "v3"] and [s for s, _, _ in vocab["v3"]] == [0.0]


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory):
    """10 videos (8 frames at 2 fps, 56x84): a red or a green box on black, at a random place."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    records = []
    for i in range(10):
        colour = "red" if i % 2 == 0 else "green"
        frames = np.zeros((8, 56, 84, 3), np.uint8)
        y, x = rng.integers(0, 56 - 20), rng.integers(0, 84 - 20)
        frames[:, y : y + 20, x : x + 20] = COLOURS[colour]
        save_frames(root / f"v{i}.npz", VideoFrames(frames=frames, timestamps=np.arange(8) / 2.0,
                                                    meta={"sample_fps": 2.0, "duration": 4.0}))
        records.append(_record(f"v{i}", f"the {colour} square moves left"))
    return root, records


def test_pretraining_teaches_a_blind_tower_to_see_colour(colour_videos):
    root, records = colour_videos
    fit, held = records[:8], records[8:]
    tok = train_tokenizer([r.problem for r in records] * 20, 400)
    processor = build_processor(tok)
    torch.manual_seed(0)
    model = build_tiny_model(tok, TINY)
    decoder = {k: v.clone() for k, v in model.model.language_model.layers.state_dict().items()}
    before = word_auc(model, processor, held, root, fit, 0.5)
    summary = pretrain_vision(model, processor, fit, root, steps=60, learning_rate=1e-2, batch_size=4,
                              max_video_share=0.5, seed=0)
    after = word_auc(model, processor, held, root, fit, 0.5)
    # Words: red and green (each in 4 of 8 videos); held out: one red, one green video.
    assert summary["words"] == 2 and summary["last_loss"] < summary["first_loss"]
    assert after == 1.0 and before < 1.0
    # Only the tower and the word embeddings it is read through move; the decoder does not.
    assert all(torch.equal(v, model.model.language_model.layers.state_dict()[k]) for k, v in decoder.items())
