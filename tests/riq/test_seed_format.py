"""The seed README's RIQ format (../shared/seed/RA-RFT-README.md, "Data Format"): `riq.source: seed`
imports it, `rarft export --format seed` writes it (issue 17)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.io import InputError
from pipeline.core.params import RiqParams
from pipeline.riq.build import build_riq
from pipeline.riq.export import export_records
from pipeline.riq.importers import import_annotations
from pipeline.riq.schema import RiqRecord, read_riq

# The seed README's two example records, verbatim, except the refusal's `"gt_answers": [...]`
# placeholders, which are given one span each.
SEED_ANSWERABLE = {
    "video": "video_id",
    "video_path": "/path/to/video.mp4",
    "duration": 120.5,
    "problem": "query text",
    "task_type": "answerable",
    "gt_answers": [
        {"answer": [10.5, 25.3]}
    ],
}
SEED_REFUSABLE = {
    "video": "video_id",
    "video_path": "/path/to/video.mp4",
    "duration": 120.5,
    "problem": "unanswerable query",
    "task_type": "refusable",
    "refusable_queries": [
        {"problem": "alternative query 1", "gt_answers": [{"answer": [10.5, 25.3]}]},
        {"problem": "alternative query 2", "gt_answers": [{"answer": [40.0, 52.0]}]},
    ],
    "gt_answers": [{"answer": [-1, -1]}],
}
SEED = [SEED_ANSWERABLE, SEED_REFUSABLE]


def test_seed_example_is_not_a_riq_record_but_imports_as_one(tmp_path):
    with pytest.raises(Exception):
        RiqRecord.model_validate(SEED_ANSWERABLE)  # id, kind, reference_answer, ... are ours
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED), encoding="utf-8")
    res = import_annotations("seed", path)
    assert (res.report["items_read"], res.report["written"], res.report["quarantined"]) == (2, 2, 0)
    ans, ref = (RiqRecord.model_validate(r) for r in res.records)
    assert (ans.id, ans.video, ans.kind, ans.difficulty, ans.span, ans.source) == ("video_id-s0", "video_id", "answerable", "original", (10.5, 25.3), "seed")
    assert ans.reference_answer == "10.50 to 25.30"
    assert (ref.id, ref.kind, ref.difficulty, ref.correction_target) == ("video_id-s1", "hard_irrelevant", None, "alternative query 1")
    assert [a.problem for a in ref.refusable_queries] == ["alternative query 1", "alternative query 2"]
    assert ref.explanation == ref.reference_answer == 'No segment is relevant: the video shows "alternative query 1", not "unanswerable query".'
    assert ref.contrast_answer == "10.50 to 25.30"
    # The answerable record's contrast is the refusal that corrects to it (same video, another record).
    assert ans.contrast_answer == "No segment is relevant: the video does not show this."  # no refusal corrects to "query text"


def test_seed_round_trip_on_the_readme_examples(tmp_path):
    src, riq, back = tmp_path / "seed.json", tmp_path / "riq.jsonl", tmp_path / "back.json"
    src.write_text(json.dumps(SEED), encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(app, ["import", "seed", str(src), "--out", str(riq)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", str(riq), "--format", "seed", "--out", str(back)])
    assert res.exit_code == 0, res.output
    assert json.loads(back.read_text()) == json.loads(json.dumps(SEED))
    assert list(json.loads(back.read_text())[1]) == list(SEED_REFUSABLE)  # the README's key order
    # and once more: seed -> riq -> seed is a fixed point
    again = tmp_path / "riq2.jsonl"
    assert runner.invoke(app, ["import", "seed", str(back), "--out", str(again)]).exit_code == 0
    assert again.read_text() == riq.read_text().replace(str(src), str(back))


def test_seed_import_applies_the_same_quarantine_rules(tmp_path):
    rows = [
        {**SEED_ANSWERABLE, "gt_answers": [{"answer": [130.0, 140.0]}]},  # starts after the video
        {**SEED_ANSWERABLE, "problem": "past the end", "gt_answers": [{"answer": [100.0, 125.0]}]},  # end clipped
        {**SEED_ANSWERABLE, "problem": "Past the end."},  # the same query again -> duplicate
        {**SEED_ANSWERABLE, "problem": "no duration", "duration": None},
        {**SEED_ANSWERABLE, "task_type": "maybe"},
        {**SEED_REFUSABLE, "refusable_queries": []},  # a hard-irrelevant refusal without a target
    ]
    path = tmp_path / "seed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    res = import_annotations("seed", path)
    assert res.report["written"] + res.report["quarantined"] == res.report["queries_read"] == 6
    assert {k: v for k, v in res.report["quarantined_by_reason"].items() if v} == {
        "span_outside_video": 1, "duplicate": 1, "no_duration": 1, "bad_item": 1, "invalid_record": 1}
    assert [r["gt_answers"] for r in res.records] == [[{"answer": [100.0, 120.5]}]]
    bad = next(q for q in res.quarantine if q["id"] == "video_id-s4")
    assert bad["reason"] == f"{path}: record video_id-s4: task_type: must be 'answerable' or 'refusable' (got 'maybe')"


def test_seed_ss_vtg_refusal_without_alternatives_is_evaluation_only(tmp_path):
    path = tmp_path / "ss_vtg_seed.json"
    path.write_text(json.dumps([SEED_ANSWERABLE, {**SEED_REFUSABLE, "refusable_queries": []}]), encoding="utf-8")
    res = import_annotations("seed", path)
    ref = RiqRecord.model_validate(res.records[1])
    assert (ref.kind, ref.evaluation_only, ref.contrast_answer) == ("shuffled", True, "10.50 to 25.30")
    out = tmp_path / "back.json"
    (tmp_path / "riq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in res.records))
    export_records(read_riq(tmp_path / "riq.jsonl"), "seed", out)
    assert json.loads(out.read_text())[1]["refusable_queries"] == []


def test_seed_source_through_build_riq_and_bad_export_format(tmp_path):
    imports, frames = tmp_path / "import", tmp_path / "frames"
    imports.mkdir(), frames.mkdir()
    (imports / "seed.json").write_text(json.dumps(SEED), encoding="utf-8")
    stats = build_riq(RiqParams(source="seed", import_file="seed.json", generators={}), tmp_path / "x", frames,
                      tmp_path / "riq", tmp_path / "stats.json", imports=imports)
    assert stats["quarantined"]["no_frames"] == 2 and stats["records"]["in"] == 2
    with pytest.raises(InputError, match="unknown export format 'tvsum'"):
        export_records([], "tvsum", tmp_path / "o.json")
