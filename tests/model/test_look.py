"""The `look` think of the tiny model: its targets, the weight on its yes/no token, and that
make_model reads only the train videos' event logs."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.core.events import VideoLog
from pipeline.model.make import SFTCollator, _features, train_event_logs, weighted_trainer
from pipeline.model.targets import look_check, look_checks, look_text, reference_completion
from pipeline.riq.schema import RiqRecord
from riq.test_riq import LOGS, run_build  # tests/ is on the path (pyproject)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real synthetic RIQ of the 8 hand-written logs of tests/riq/test_riq.py (6 train videos)."""
    root = tmp_path_factory.mktemp("look")
    out = run_build(root)
    return root, [RiqRecord.model_validate(r) for r in out["train"]]


def _record(video: str, problem: str) -> RiqRecord:
    return RiqRecord.model_validate({
        "id": f"{video}-q0", "video": video, "video_path": f"videos/{video}.mp4", "duration": 8.0, "source": "synthetic",
        "problem": problem, "task_type": "answerable", "kind": "answerable", "gt_answers": [{"answer": [0.0, 2.0]}],
        "reference_answer": "0.00 to 2.00", "contrast_answer": "No segment is relevant.", "difficulty": "original"})


def test_look_check_is_the_query_colour_against_the_log():
    # vid_e shows an orange tall bar and a green square; vid_f a purple square.
    rec = _record("vid_e", "the large orange tall bar moves down")
    assert look_check(rec, LOGS["vid_e"]) == ("orange", True)
    assert look_check(rec, LOGS["vid_f"]) == ("orange", False)
    assert look_check(_record("vid_e", "somebody opens a door"), LOGS["vid_e"]) is None  # not a synthetic query
    assert look_check(rec, None) is None


def test_look_checks_stop_at_the_first_attribute_the_video_lacks():
    # vid_e: a large orange tall bar and a small green square. Colours are unique within a video,
    # so the shape and size checks are of the one object of the asked colour.
    assert look_checks(_record("vid_e", "the large orange tall bar moves down"), LOGS["vid_e"]) == [
        ("orange", True), ("tall bar", True), ("large", True)]
    assert look_checks(_record("vid_e", "the large orange square moves down"), LOGS["vid_e"]) == [("orange", True), ("square", False)]
    assert look_checks(_record("vid_e", "the small orange tall bar moves down"), LOGS["vid_e"]) == [
        ("orange", True), ("tall bar", True), ("small", False)]
    # The green object is a square, but the asked colour's object is not: no.
    assert look_checks(_record("vid_e", "the large green tall bar moves down"), LOGS["vid_e"]) == [("green", True), ("tall bar", False)]
    assert look_checks(_record("vid_e", "the large orange square moves down"), LOGS["vid_f"]) == [("orange", False)]
    assert look_checks(_record("vid_e", "the large orange square moves down"), LOGS["vid_e"], ("color",)) == [("orange", True)]
    assert look_checks(_record("vid_e", "somebody opens a door"), LOGS["vid_e"]) is None
    text, at = look_text("the large orange square moving down", [("orange", True), ("square", False)])
    assert text == "Asked: the large orange square moving down. In view: orange yes, square no."
    assert [text[a:a + 4] for a in at] == [" yes", " no."]



def test_a_naming_look_says_what_the_video_shows_and_stops_where_it_differs():
    # vid_e's orange object is a large tall bar: a query for an orange square gets the shape the
    # video shows, named, and the look stops there; a true query names both words.
    asked = _record("vid_e", "the large orange square moves down")
    assert look_checks(asked, LOGS["vid_e"], names=True) == [("orange", True), ("square", False, "tall bar")]
    assert look_checks(_record("vid_e", "the small orange tall bar moves down"), LOGS["vid_e"], names=True) == [
        ("orange", True), ("tall bar", True, "tall bar"), ("small", False, "large")]
    assert look_checks(asked, LOGS["vid_f"], names=True) == [("orange", False)]
    text, at = look_text("the large orange square moving down", [("orange", True), ("square", False, "tall bar")])
    assert text == "Asked: the large orange square moving down. In view: orange yes, tall bar."
    assert [text[a:a + 5] for a in at] == [" yes,", " tall"]
    text, at = look_text("the large orange tall bar moving down", [("orange", True), ("tall bar", True, "tall bar"), ("large", True, "large")])
    assert text == "Asked: the large orange tall bar moving down. In view: orange yes, tall bar, large."
    assert [text[a:a + 6] for a in at] == [" yes, ", " tall ", " large"]

def test_reference_completion_with_the_look_think():
    rec = _record("vid_e", "the large orange tall bar moves down")
    phrases = ("the large orange tall bar moving down", "the large orange tall bar moving down")
    assert reference_completion(rec, phrases, ("orange", True)) == (
        "<think>Asked: the large orange tall bar moving down. In view: orange yes. Seen: the large orange tall bar "
        "moving down, from 0.00 to 2.00 seconds.</think> <answer>0.00 to 2.00</answer> <correction>NIL</correction>")
    # Without phrases there is nothing to look for: the quoting think, as before.
    assert reference_completion(rec, None, ("orange", True)) == reference_completion(rec)


def test_a_look_that_finds_nothing_ends_the_think_with_the_refusal():
    # The same query taken to vid_f (a shuffled refusal): no orange object there, so the think
    # stops at the look and the refusal follows it; no "Seen:" phrase for the decision to copy.
    rec = RiqRecord.model_validate(_record("vid_f", "the large orange tall bar moves down").model_dump() | {
        "id": "vid_f-q9", "task_type": "refusable", "kind": "shuffled", "difficulty": None, "gt_answers": [{"answer": [-1.0, -1.0]}],
        "refusable_queries": [{"problem": "the small purple square appears", "gt_answers": [{"answer": [1.0, 2.5]}]}],
        "explanation": "No segment is relevant: the video shows the small purple square appearing, not the large orange tall bar moving down.",
        "reference_answer": "No segment is relevant.", "contrast_answer": "1.00 to 2.50"})
    phrases = ("the large orange tall bar moving down", "the small purple square appearing")
    assert reference_completion(rec, phrases, ("orange", False)) == (
        "<think>Asked: the large orange tall bar moving down. In view: orange no.</think> <answer>No segment is relevant: "
        "the video shows the small purple square appearing, not the large orange tall bar moving down.</answer> "
        "<correction>the small purple square appears</correction>")
    # The colour in view but another event: the think still names what is seen before refusing.
    assert reference_completion(rec, phrases, ("orange", True)).startswith(
        "<think>Asked: the large orange tall bar moving down. In view: orange yes. Seen: the small purple square appearing, not that.</think>")
    # A shape the object of that colour does not have settles it too.
    assert reference_completion(rec, phrases, [("orange", True), ("tall bar", False)]).startswith(
        "<think>Asked: the large orange tall bar moving down. In view: orange yes, tall bar no.</think> <answer>No segment")


def test_train_event_logs_hold_only_the_train_videos(built, tmp_path):
    root, records = built
    logs = train_event_logs(root / "raw" / "annotations.jsonl", records)
    assert sorted(logs) == sorted({r.video for r in records}) and len(logs) == 6  # 2 of the 8 videos are the test split
    assert all(isinstance(log, VideoLog) for log in logs.values())
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(json.loads(LOGS["vid_a"].model_dump_json()) | {"video_id": "elsewhere"}) + "\n")
    assert train_event_logs(other, records) is None  # a file without the train videos (another source)


def test_look_weight_lands_on_the_yes_no_token_and_weights_the_loss(built):
    from pipeline.core.params import TinyModelParams
    from pipeline.model.targets import tokenizer_corpus
    from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer

    tiny = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                           vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=400, tie_word_embeddings=False)

    import numpy as np

    from pipeline.core.frames_cache import VideoFrames, save_frames

    root, records = built
    logs = {v: LOGS[v] for v in {r.video for r in records}}
    frames = root / "frames28"  # the RIQ build's stand-in frames are 4x4, below one merged patch
    for v in logs:
        save_frames(frames / f"{v}.npz", VideoFrames(frames=np.zeros((4, 28, 28, 3), np.uint8), timestamps=np.arange(4) / 2.0,
                                                    meta={"sample_fps": 2.0, "duration": 2.0}))
    records = [r.model_copy(update={"frames_path": str(frames / f"{r.video}.npz")}) for r in records]
    feats = [f for f in _features(records, frames, "look", records, logs, ("color", "shape", "size")) if f["look_at"]]
    feats = sorted(feats, key=lambda f: -len(f["look_at"]))[:3]  # the longest looks: three yes/no words each
    assert feats
    tok = train_tokenizer(tokenizer_corpus(records), 400)
    processor = build_processor(tok)
    batch = SFTCollator(processor, look_weight=20.0)(feats)
    weights = batch["loss_weights"]
    for row, f in enumerate(feats):
        heavy = (weights[row] == 20.0).nonzero().flatten().tolist()
        assert len(heavy) == len(f["look_at"]) == 3
        for at, col in zip(f["look_at"], heavy):
            # The first token of the yes/no word (this toy vocabulary splits "yes").
            word, piece = f["completion"][at:].split()[0].rstrip(".,"), tok.decode(batch["input_ids"][row, col]).strip()
            assert piece and word.startswith(piece) and word in ("yes", "no")
            assert tok.decode(batch["input_ids"][row, col - 3 : col]).endswith(f["completion"][:at].split()[-1])
        assert torch.equal(weights[row] > 0, batch["labels"][row] != -100)
    # A naming look weights the first token of each word the video decides: the colour's yes/no,
    # then the named shape and size.
    named = [f for f in _features(records, frames, "look", records, logs, ("color", "shape", "size"), True) if f["look_at"]]
    named = sorted(named, key=lambda f: -len(f["look_at"]))[:3]
    assert len(named[0]["look_at"]) == 3
    heavy_words = set()
    for row, f in enumerate(named):
        ids = SFTCollator(processor, look_weight=20.0)([f])
        cols = (ids["loss_weights"][0] == 20.0).nonzero().flatten().tolist()
        assert len(cols) == len(f["look_at"])
        for at, col in zip(f["look_at"], cols):
            word, piece = f["completion"][at:].split()[0].rstrip(".,"), tok.decode(ids["input_ids"][0, col]).strip()
            assert piece and word.startswith(piece)
            heavy_words.add(word)
    assert heavy_words & {"square", "wide", "tall"} and heavy_words & {"small", "large"} and "yes" in heavy_words
    # The loss is the weighted mean of the per-token cross-entropies (next-token shift), by hand.
    torch.manual_seed(0)
    model = build_tiny_model(tok, tiny)
    trainer = weighted_trainer().__new__(weighted_trainer())
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "loss_weights")}).logits
    total = norm = 0.0
    for row in range(len(feats)):
        for t in range(1, batch["labels"].shape[1]):
            label, w = int(batch["labels"][row, t]), float(weights[row, t])
            if label != -100:
                total += w * float(-logits[row, t - 1].log_softmax(-1)[label])
                norm += w
    assert float(loss) == pytest.approx(total / norm, rel=1e-4)
    assert SFTCollator(processor)(feats).get("loss_weights") is None  # weight 1: the model's own loss
