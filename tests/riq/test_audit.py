"""The blind (query-only) baseline: its arithmetic by hand, its split guard, and the default synthetic RIQ."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.frames_cache import VideoFrames, frames_path, save_frames
from pipeline.core.io import InputError, write_jsonl
from pipeline.core.params import Params
from pipeline.data.synthetic import plan_video
from pipeline.riq import audit as A
from pipeline.riq.build import build_riq
from pipeline.riq.schema import RiqRecord, read_riq


def _rec(i: int, video: str, problem: str, refusable: bool, kind: str | None = None, difficulty: str | None = None) -> RiqRecord:
    base = {"id": f"{video}-q{i}", "video": video, "video_path": f"{video}.mp4", "duration": 10.0, "problem": problem,
            "source": "test", "contrast_answer": "x"}
    if not refusable:
        return RiqRecord.model_validate(base | {"task_type": "answerable", "kind": "answerable", "gt_answers": [{"answer": [1.0, 2.0]}],
                                                "reference_answer": "1.00 to 2.00", "difficulty": "original"})
    return RiqRecord.model_validate(base | {
        "task_type": "refusable", "kind": kind or "hard_irrelevant", "gt_answers": [{"answer": [-1.0, -1.0]}],
        "refusable_queries": [{"problem": "the cat sits", "gt_answers": [{"answer": [1.0, 2.0]}]}],
        "explanation": "No relevant segment: no.", "reference_answer": "No relevant segment: no.", "difficulty": difficulty,
    })


def test_score_pairs_each_refusable_group_with_all_answerable_records():
    # 4 answerable (3 kept), 4 refusable: hard (2, both refused), medium (1, refused), shuffled (1, not refused).
    test = [_rec(i, "v", f"q{i}", False) for i in range(4)] + [
        _rec(4, "v", "a", True, difficulty="hard"), _rec(5, "v", "b", True, difficulty="hard"),
        _rec(6, "v", "c", True, difficulty="medium"), _rec(7, "v", "d", True, kind="shuffled")]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    block = A._score(y, pred, A._groups(test))
    # Balanced accuracy = (3/4 + 3/4) / 2; a group: (answerable kept 3/4 + its refused share) / 2.
    assert block["balanced_accuracy"] == 0.75 and block["answerable_kept"] == 0.75
    assert block["difficulty"]["hard"] == {"n": 2, "refused": 1.0, "balanced_accuracy": 0.875}
    assert block["difficulty"]["medium"]["balanced_accuracy"] == 0.875
    assert block["kind"]["shuffled"] == {"n": 1, "refused": 0.0, "balanced_accuracy": 0.375}
    assert block["kind"]["hard_irrelevant"]["balanced_accuracy"] == 0.875


def test_a_word_only_refusals_use_is_found_and_named():
    objects = ["cat", "dog", "cup", "pen", "box", "car", "hat", "key"]
    def make(videos):
        out = []
        for v in videos:
            for j, o in enumerate(objects):
                out.append(_rec(2 * j, v, f"the {o} moves", False))
                out.append(_rec(2 * j + 1, v, f"after the bell the {o} moves", True))
        return out
    result = A.audit(make(["a", "b", "c"]), make(["d"]), use_sbert=False)
    assert result["ngram"]["balanced_accuracy"] == 1.0
    assert result["ngram"]["top_cues"][0]["ngram"] in {"after", "bell", "after the", "the bell"}
    assert result["ngram"]["top_cues"][0]["train_answerable"] == 0


def test_a_video_on_both_sides_is_an_error():
    recs = [_rec(0, "v1", "a", False), _rec(1, "v1", "b", True)]
    with pytest.raises(InputError, match="1 video.* in both train and test .*v1"):
        A.audit(recs, recs)


def test_single_file_mode_splits_by_video(tmp_path):
    recs = [_rec(i, f"v{i % 5}", f"the thing {i} moves" + (" after" if i % 2 else ""), bool(i % 2)) for i in range(40)]
    path = tmp_path / "riq.jsonl"
    write_jsonl(path, [r.model_dump(mode="json") for r in recs])
    train, test = A.split_by_video(read_riq(path), 0.2, 0)
    assert not {r.video for r in train} & {r.video for r in test} and len({r.video for r in test}) == 1
    res = CliRunner().invoke(app, ["audit", str(path), "--no-sbert", "--out", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    assert "ngram: balanced accuracy 1.000" in res.output and "'after'" in res.output
    assert json.loads((tmp_path / "a.json").read_text())["split"]["mode"] == "by_video"


def test_default_synthetic_riq_has_no_wording_cue(tmp_path):
    """The default params' synthetic RIQ: the blind baseline stays near chance (issue: <= 0.55 overall, <= 0.60 per group).

    The event logs are the default world's (pure plans, no rendering); each video gets a stand-in
    frames file so build_riq keeps every record (the audit reads only the queries).
    """
    params = Params()
    syn = params.download.synthetic
    logs = [plan_video(syn, i).log for i in range(syn.n_videos)]
    write_jsonl(tmp_path / "annotations.jsonl", [json.loads(log.model_dump_json()) for log in logs])
    for log in logs:
        save_frames(frames_path(tmp_path / "frames", log.video_id),
                    VideoFrames(np.zeros((2, 28, 28, 3), np.uint8), np.array([0.0, 0.5]), {"duration": log.duration}))
    stats = build_riq(params.riq, tmp_path / "annotations.jsonl", tmp_path / "frames", tmp_path / "riq", tmp_path / "stats.json")
    assert stats["records"]["quarantined"] == 0 and stats["records"]["test"] > 400
    for column in ("ngram", "sbert"):
        block = stats["audit"][column]
        assert block["balanced_accuracy"] <= 0.55, (column, block["balanced_accuracy"], stats["audit"]["ngram"]["top_cues"][:5])
        for axis in ("kind", "difficulty"):
            worst = max(v["balanced_accuracy"] for v in block[axis].values())
            assert worst <= 0.60, (column, axis, block[axis])
