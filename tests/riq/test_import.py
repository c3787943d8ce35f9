"""Importers (`rarft import`) and the riq.source switch of build_riq, on hand-written fixtures.

The public RA-RFT sample in ../shared is used too when present (skipped when absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.frames_cache import VideoFrames, save_frames
from pipeline.core.io import InputError
from pipeline.core.params import RiqParams, parse_params
from pipeline.riq.build import build_riq
from pipeline.riq.importers import (
    answer_text,
    import_annotations,
    strip_appended_query,
    video_id,
)
from pipeline.riq.schema import RiqRecord, read_riq
from pipeline.riq.validate import dataset_card, validate_file

# Where build_riq writes each split at default params (the held-out split is the evaluation set `synthetic`).
SPLIT_FILES = {"train": "train.jsonl", "test": "eval/synthetic.jsonl", "quarantine": "quarantine.jsonl"}

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "hi-vtg"


def _item(video, query, ts, grpo, duration=30.0, **extra):
    item = {"video": f"/data/someone/Charades_v1/{video}.mp4", "query_text": query, "timestamp": ts, "GRPO": grpo, **extra}
    if duration is not None:
        item["duration"] = duration
    return item


def _ans(q, a=None):
    return {"q": q, "a": a if a is not None else "", "r": True, "difficulty": "original"}


def _ref(q, a, c=("Object/ObjectExistence",), difficulty="hard", **extra):
    return {"q": q, "a": a, "r": False, "c": list(c), "difficulty": difficulty, **extra}


# Every quirk of the released files, one item each (comments give the expected outcome).
HI_VTG = [
    # 0: clean item -> 2 records
    _item("AAAAA", "person opens the door.", [1.0, 4.0], [
        _ans("person opens the door.", "<answer>1.0 to 4.0</answer>"),
        _ref("person opens the window.", "<answer>The video shows a door, not a window.</answer>"),
    ]),
    # 1: empty a everywhere, an unknown label beside a known one, human-style <correct> -> 2 records, fallback explanation
    _item("BBBBB", "person sits on a chair.", [2.0, 5.0], [
        _ans("person sits on a chair.", ""),
        _ref("person sits on a sofa.", "", c=["Object/ObjectExistence", "Object/Teleportation"], difficulty=None),
    ]),
    # 2: a second answerable query with its own span in `a`, one without -> 3 written, 1 quarantined
    _item("CCCCC", "person eats a sandwich.", [3.0, 6.0], [
        _ans("person eats a sandwich."),
        _ans("person drinks a glass of water.", "<answer>10.0 to 12.5</answer>"),
        _ans("person laughs.", "<answer></answer>"),
        _ref("person eats an apple.", "<answer>A sandwich, not an apple.</answer><correct>person eats a sandwich.</correct>"),
    ]),
    # 3: refusal that ends with an appended copy of the true query; a q truncated at an apostrophe
    _item("DDDDD", "person turns off the light as they're leaving.", [18.2, 23.8], [
        {"q": "person turns off the light as they", "a": "<answer>18.2 to 23.8</answer>", "r": True,
         "q_origin": "person turns off the light as they're leaving.", "difficulty": "original"},
        _ref("person turns on the light.", "<answer>The light is turned off. person turns off the light as they're leaving.</answer>",
             c=["Action/FineGrainedAction"]),
    ]),
    # 4: no duration in the file; frames file gives 20.0 s
    _item("EEEEE", "a person holding a broom.", [0.5, 3.5], [_ans("a person holding a broom.")], duration=None),
    # 5: no duration and no frames -> quarantined (no_duration)
    _item("FFFFF", "person walks in.", [0.0, 2.0], [_ans("person walks in.")], duration=None),
    # 6: end past the video (clipped), and a span starting after it -> 1 written (clipped), 1 quarantined
    _item("GGGGG", "person closes a laptop.", [8.0, 12.0], [_ans("person closes a laptop.")], duration=10.0),
    _item("HHHHH", "person puts a cup down.", [11.0, 14.0], [_ans("person puts a cup down.")], duration=10.0),
    # 8: not an item -> quarantined (bad_item)
    {"query_text": "no video here"},
    # 9: shuffled (SS-VTG style: no categories, no difficulty) and a duplicate of item 0's query
    _item("AAAAA", "person opens the door.", [1.0, 4.0], [
        _ans("person opens the door."),
        {"q": "a dog runs on the beach.", "a": "<answer>No dog or beach appears.</answer>", "r": False},
    ]),
]


@pytest.fixture()
def hi_vtg(tmp_path):
    path = tmp_path / "anno.json"
    path.write_text(json.dumps(HI_VTG), encoding="utf-8")
    frames = tmp_path / "frames"
    frames.mkdir()
    for vid in ("AAAAA", "EEEEE"):
        save_frames(frames / f"{vid}.npz", VideoFrames(np.zeros((2, 28, 28, 3), np.uint8), np.array([0.0, 1.0]), {"duration": 20.0}))
    return path, frames


def test_hi_vtg_quirks_are_fixed_counted_or_quarantined(hi_vtg):
    path, frames = hi_vtg
    res = import_annotations("hi-vtg", path)  # no frames: only the durations in the file
    rep = res.report
    assert rep["items_read"] == 10
    assert rep["queries_read"] == 2 + 2 + 4 + 2 + 1 + 1 + 1 + 1 + 1 + 2
    assert rep["written"] + rep["quarantined"] == rep["queries_read"]
    assert rep["quarantined_by_reason"] == {
        "bad_item": 1, "no_duration": 2, "span_outside_video": 1, "answerable_without_span": 1,
        "duplicate": 1, "invalid_record": 0, "no_frames": 0,
    }
    assert rep["quirks"]["unknown_category:Object/Teleportation"] == 1
    assert rep["quirks"]["repaired_truncated_query"] == 1
    assert rep["quirks"]["stripped_appended_query"] == 1
    assert rep["quirks"]["clipped_span_end"] == 1
    by_id = {r["id"]: r for r in res.records}
    for r in res.records:
        RiqRecord.model_validate(r)

    ref = by_id["AAAAA-i0-q1"]
    assert (ref["kind"], ref["difficulty"], ref["categories"]) == ("hard_irrelevant", "hard", ["Object/ObjectExistence"])
    assert ref["refusable_queries"] == [{"problem": "person opens the door.", "gt_answers": [{"answer": [1.0, 4.0]}]}]
    assert ref["reference_answer"] == ref["explanation"] == "The video shows a door, not a window."
    assert ref["contrast_answer"] == "1.00 to 4.00"
    assert by_id["AAAAA-i0-q0"]["contrast_answer"] == "The video shows a door, not a window."
    # Empty `a`: the answerable span comes from the timestamp; the refusal gets an explanation built from the queries.
    assert by_id["BBBBB-i1-q0"]["reference_answer"] == "2.00 to 5.00"
    assert by_id["BBBBB-i1-q1"]["explanation"] == 'No segment is relevant: the video shows "person sits on a chair.", not "person sits on a sofa.".'
    assert by_id["BBBBB-i1-q1"]["difficulty"] is None and by_id["BBBBB-i1-q1"]["categories"] == ["Object/ObjectExistence"]
    # The item's timestamp belongs to query_text only.
    assert by_id["CCCCC-i2-q1"]["gt_answers"] == [{"answer": [10.0, 12.5]}]
    assert "CCCCC-i2-q2" not in by_id
    assert by_id["DDDDD-i3-q0"]["problem"] == "person turns off the light as they're leaving."
    assert by_id["DDDDD-i3-q1"]["explanation"] == "The light is turned off."
    assert by_id["GGGGG-i6-q0"]["gt_answers"] == [{"answer": [8.0, 10.0]}]
    shuffled = by_id["AAAAA-i9-q1"]
    assert (shuffled["kind"], shuffled["difficulty"], shuffled["categories"]) == ("shuffled", None, [])
    reasons = {q["id"]: q["reason"] for q in res.quarantine}
    assert reasons["AAAAA-i9-q0"].endswith("problem: duplicate of AAAAA-i0-q0 (same video, same query)")
    assert "item8" in reasons and "FFFFF-i5-q0" in reasons and "EEEEE-i4-q0" in reasons


def test_duration_and_frames_from_the_frame_cache(hi_vtg):
    path, frames = hi_vtg
    res = import_annotations("hi-vtg", path, frames)
    by_id = {r["id"]: r for r in res.records}
    assert by_id["EEEEE-i4-q0"]["duration"] == 20.0
    assert by_id["EEEEE-i4-q0"]["frames_path"] == str(frames / "EEEEE.npz")
    assert set(r["video"] for r in res.records) == {"AAAAA", "EEEEE"}
    assert res.report["quarantined_by_reason"]["no_frames"] == 8
    assert res.report["quarantined_by_reason"]["no_duration"] == 1
    assert res.report["written"] + res.report["quarantined"] == res.report["queries_read"]
    no_frames = next(q for q in res.quarantine if q["id"] == "BBBBB-i1-q0")
    assert no_frames["reason"].startswith("no frames file for video BBBBB")


def test_cli_import_then_validate_and_card(hi_vtg, tmp_path):
    path, frames = hi_vtg
    out, q = tmp_path / "riq.jsonl", tmp_path / "q.jsonl"
    res = CliRunner().invoke(app, ["import", "hi-vtg", str(path), "--out", str(out), "--frames", str(frames), "--quarantine", str(q)])
    assert res.exit_code == 0, res.output
    last = json.loads(res.output.strip().splitlines()[-1])
    assert set(last) >= {"items_read", "queries_read", "written", "quarantined", "quarantined_by_reason"}
    assert last["written"] == sum(1 for _ in out.open()) and last["quarantined"] == sum(1 for _ in q.open())
    assert last["written"] + last["quarantined"] == last["queries_read"] == 17
    assert CliRunner().invoke(app, ["validate", str(out), "--frames", str(frames)]).exit_code == 0
    card = dataset_card(out, q)
    assert card["records"] == last["written"] and card["duplicate_queries"] == 0
    assert card["quarantined"]["records"] == last["quarantined"]
    assert card["task_type"] == {"answerable": 2, "refusable": 2}


def test_answer_text_and_appended_query_helpers():
    assert answer_text("<answer>Not shown.</answer><correct>x</correct>") == "Not shown."
    assert answer_text("<answer>Order reversed.</correct>") == "Order reversed."  # missing </answer>
    assert answer_text("") == ""
    assert strip_appended_query("A cup, not a mug. Person holds a cup.", ["person holds a cup."]) == ("A cup, not a mug.", True)
    assert strip_appended_query("A cup, not a mug.", ["person holds a cup."]) == ("A cup, not a mug.", False)
    assert video_id("/data/x/Charades_v1/E6DLK.mp4") == "E6DLK" and video_id("C:\\v\\v_abc.mkv") == "v_abc"


def test_answerable_only_formats(tmp_path):
    sta = tmp_path / "charades_sta_test.txt"
    sta.write_text("3MSZA 24.3 30.4##person turn a light on.\n3MSZA 0.0 5.0##person sits.\nbroken line\n\n", encoding="utf-8")
    res = import_annotations("charades-sta", sta)
    # No durations in Charades-STA: without frames every line is quarantined, with its reason.
    assert (res.report["items_read"], res.report["written"], res.report["quarantined_by_reason"]["no_duration"],
            res.report["quarantined_by_reason"]["bad_item"]) == (3, 0, 2, 1)

    anet = tmp_path / "val_1.json"
    anet.write_text(json.dumps({
        "v_uqiMw7tQ1Cc": {"duration": 55.15, "timestamps": [[0.28, 55.15], [13.79, 54.32]],
                          "sentences": ["A weight lifting tutorial is given.", " The coach helps the guy in red."]},
        "v_bad": {"duration": 10.0, "timestamps": [[0, 1]], "sentences": []},
    }), encoding="utf-8")
    res = import_annotations("activitynet-captions", anet)
    assert [r["problem"] for r in res.records] == ["A weight lifting tutorial is given.", "The coach helps the guy in red."]
    assert res.records[1]["gt_answers"] == [{"answer": [13.79, 54.32]}] and res.report["quarantined"] == 1

    qvh = tmp_path / "highlight_val.jsonl"
    qvh.write_text("\n".join(json.dumps(o) for o in [
        {"qid": 2579, "query": "A girl and her mother cooked while talking.", "duration": 150, "vid": "NUsG9BgSes0_210.0_360.0",
         "relevant_windows": [[0, 70], [80, 90]]},
        {"qid": 7, "query": "no windows", "duration": 150, "vid": "x_1", "relevant_windows": []},
    ]) + "\n", encoding="utf-8")
    res = import_annotations("qvhighlights", qvh)
    assert res.records[0]["id"] == "NUsG9BgSes0_210.0_360.0-qid2579" and res.records[0]["gt_answers"] == [{"answer": [0.0, 70.0]}]
    assert res.report["quirks"]["multi_window_queries"] == 1 and res.report["quarantined"] == 1

    with pytest.raises(InputError, match="unknown format"):
        import_annotations("tvsum", qvh)


def test_unicode_and_punctuation_queries_survive_import(tmp_path):
    q = "person’s café — “opens” the fridge!!! (again?) 🙂"
    path = tmp_path / "u.json"
    path.write_text(json.dumps([_item("UUUUU", q, [1, 2], [_ans(q), _ref("person’s café — “closes” the fridge!!!", "<answer>Opens, not closes.</answer>")])]), encoding="utf-8")
    res = import_annotations("hi-vtg", path)
    assert [r["problem"] for r in res.records] == [q, "person’s café — “closes” the fridge!!!"]
    assert res.records[1]["refusable_queries"][0]["problem"] == q


# ----------------------------------------------------------------------------- pipeline switch
def test_riq_source_switch_through_build_riq(hi_vtg, tmp_path):
    path, frames = hi_vtg
    imports = tmp_path / "import"
    imports.mkdir()
    (imports / "hi_vtg.json").write_bytes(path.read_bytes())
    params = RiqParams(source="hi-vtg", import_file="hi_vtg.json", generators={})
    out, stats_path = tmp_path / "riq", tmp_path / "stats.json"
    stats = build_riq(params, tmp_path / "unused.jsonl", frames, out, stats_path, imports=imports)
    assert stats["quarantined"]["no_frames"] == 8
    assert stats["source"]["import"]["written"] + stats["source"]["import"]["quarantined"] == stats["source"]["import"]["queries_read"] == 17
    n = {s: sum(1 for _ in (out / SPLIT_FILES[s]).open()) for s in ("train", "test", "quarantine")}
    assert n["train"] + n["test"] == stats["source"]["import"]["written"] == 4
    assert n["quarantine"] == stats["records"]["quarantined"] == 13
    for split in ("train", "test"):
        assert not validate_file(out / SPLIT_FILES[split], frames)["errors"]
    assert json.loads(stats_path.read_text()) == stats

    # The stage module with the same arguments dvc.yaml passes.
    import stages.build_riq as stage

    (tmp_path / "params.yaml").write_text(
        "riq:\n  source: hi-vtg\n  import_file: hi_vtg.json\n  generators: {}\n", encoding="utf-8")
    stage.main(["--annotations", str(tmp_path / "unused.jsonl"), "--frames", str(frames), "--out", str(tmp_path / "riq2"),
                "--stats", str(tmp_path / "s2.json"), "--imports", str(imports), "--params", str(tmp_path / "params.yaml")])
    assert (tmp_path / "riq2" / "train.jsonl").read_bytes() + (tmp_path / "riq2" / "eval" / "synthetic.jsonl").read_bytes() == \
        (out / "train.jsonl").read_bytes() + (out / "eval" / "synthetic.jsonl").read_bytes()


def test_import_params_are_checked():
    with pytest.raises(InputError, match=r"^params.yaml: riq.import_file:"):
        parse_params({"riq": {"source": "hi-vtg", "import_file": "../secret.json"}})
    with pytest.raises(InputError, match=r"^params.yaml: riq.generators:"):
        parse_params({"riq": {"generators": {"paraphrase": 1}}})
    with pytest.raises(InputError, match=r"riq.import_file: required"):
        build_riq(RiqParams(source="hi-vtg"), "a", "f", "o", "s", imports="data/import")


# ----------------------------------------------------------------------------- the public sample
@pytest.mark.parametrize(("name", "expected"), [
    ("hi_vtg_charades.json", {"items_read": 1097, "queries_read": 2194, "written": 2165, "quarantined": 29, "evaluation_only": 0}),
    ("human_anno.json", {"items_read": 100, "queries_read": 200, "written": 200, "quarantined": 0, "evaluation_only": 0}),
])
def test_shared_release_imports_and_validates(name, expected, tmp_path):
    src = SHARED / name
    if not src.is_file():
        pytest.skip(f"{src} not present (shared sample data)")
    out = tmp_path / "riq.jsonl"
    res = CliRunner().invoke(app, ["import", "hi-vtg", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert {k: report[k] for k in expected} == expected
    assert report["written"] + report["quarantined"] == report["queries_read"]
    result = validate_file(out)
    assert result["errors"] == [] and result["valid"] == expected["written"]


# ----------------------------------------------------------------------------- SS-VTG (issue 17)
def _ss(q, a="<answer>The video does not show this.</answer>", **extra):
    return {"q": q, "a": a, "r": False, **extra}


# SS-VTG-shaped items as the release writes them (comments: the expected outcome).
SS_VTG = [
    # 0: a shuffled refusal with difficulty "easy" and no c -> shuffled, difficulty None
    _item("SSAAA", "person opens the door.", [1.0, 4.0], [
        _ans("person opens the door.", "<answer>1.0 to 4.0</answer>"),
        _ss("a dog runs on the beach.", difficulty="easy"),
    ]),
    # 1: SS-QVHighlights style: class "id", empty c, difficulty easy -> shuffled
    _item("SSBBB", "person sits on a chair.", [2.0, 5.0], [
        _ans("person sits on a chair."),
        _ss("a man surfs a wave.", c=[], difficulty="easy", **{"class": "id"}),
    ]),
    # 2: all-refusable item (timestamp []): both refusals kept for evaluation, no correction target
    _item("SSCCC", "a cat sleeps on a sofa.", [], [
        _ss("a cat sleeps on a sofa.", difficulty="easy"),
        _ss("a car drives down a road.", difficulty="easy"),
    ]),
    # 3: a (2, 0) item: two answerable queries, the second without its own span -> 1 written, 1 quarantined
    _item("SSDDD", "person eats a sandwich.", [3.0, 6.0], [
        _ans("person eats a sandwich."),
        _ans("person drinks water.", "<answer></answer>"),
    ]),
]


def test_simply_shuffled_refusals_import_as_shuffled(tmp_path):
    # Bug 1: released SS-VTG refusals carry difficulty "easy" (and SS-QVHighlights class "id");
    # empty categories must still decide that they are shuffled, whatever the file is called.
    path = tmp_path / "anno.json"
    path.write_text(json.dumps(SS_VTG[:2]), encoding="utf-8")
    by_id = {r["id"]: r for r in import_annotations("hi-vtg", path).records}
    for rid in ("SSAAA-i0-q1", "SSBBB-i1-q1"):
        assert (by_id[rid]["kind"], by_id[rid]["difficulty"], by_id[rid]["categories"]) == ("shuffled", None, []), rid


def test_ss_vtg_file_name_makes_every_refusal_shuffled(tmp_path):
    # A refusal of an ss_vtg_* file is shuffled even where the release lists a category.
    path = tmp_path / "ss_vtg_charades.json"
    item = _item("SSEEE", "person opens the door.", [1.0, 4.0], [
        _ans("person opens the door."), _ss("a dog runs.", c=["Object/ObjectExistence"], difficulty="easy")])
    path.write_text(json.dumps([item]), encoding="utf-8")
    rec = {r["id"]: r for r in import_annotations("hi-vtg", path).records}["SSEEE-i0-q1"]
    assert (rec["kind"], rec["difficulty"], rec["categories"]) == ("shuffled", None, [])


def test_ss_vtg_refusals_without_a_correction_target_are_kept_for_evaluation(tmp_path):
    # Bug 2: an all-refusable item (timestamp []) has no correction target; its refusals are still
    # evaluable (relevance, RA-IoU, explanation), so they are written, marked by an empty refusable_queries.
    path = tmp_path / "ss_vtg_charades.json"
    path.write_text(json.dumps(SS_VTG), encoding="utf-8")
    res = import_annotations("hi-vtg", path)
    rep = res.report
    assert (rep["items_read"], rep["queries_read"], rep["written"], rep["quarantined"]) == (4, 8, 7, 1)
    assert rep["evaluation_only"] == 2
    assert rep["quarantined_by_reason"]["answerable_without_span"] == 1 and rep["quarantined_by_reason"]["bad_item"] == 0
    assert [q["id"] for q in res.quarantine] == ["SSDDD-i3-q1"]
    by_id = {r["id"]: r for r in res.records}
    for rid in ("SSCCC-i2-q0", "SSCCC-i2-q1"):
        rec = RiqRecord.model_validate(by_id[rid])
        assert (rec.task_type, rec.kind, rec.difficulty, rec.refusable_queries, rec.correction_target) == ("refusable", "shuffled", None, [], None)
        assert rec.explanation == rec.reference_answer == "The video does not show this."
    assert all(by_id[r]["kind"] == "shuffled" for r in by_id if by_id[r]["task_type"] == "refusable")
    out = tmp_path / "riq.jsonl"
    assert CliRunner().invoke(app, ["import", "hi-vtg", str(path), "--out", str(out)]).exit_code == 0
    assert validate_file(out)["errors"] == []


def test_build_riq_keeps_evaluation_only_records_out_of_train(tmp_path):
    from pipeline.riq.schema import read_train_records

    imports, frames = tmp_path / "import", tmp_path / "frames"
    imports.mkdir(), frames.mkdir()
    (imports / "ss_vtg_charades.json").write_text(json.dumps(SS_VTG), encoding="utf-8")
    for vid in ("SSAAA", "SSBBB", "SSCCC", "SSDDD"):
        save_frames(frames / f"{vid}.npz", VideoFrames(np.zeros((2, 28, 28, 3), np.uint8), np.array([0.0, 1.0]), {"duration": 30.0}))
    params = RiqParams(source="hi-vtg", import_file="ss_vtg_charades.json", generators={}, test_fraction=0.25)
    out = tmp_path / "riq"
    stats = build_riq(params, tmp_path / "unused.jsonl", frames, out, tmp_path / "stats.json", imports=imports)
    train, test = (read_riq(out / SPLIT_FILES[s]) for s in ("train", "test"))
    # SSCCC has nothing to train on: its video goes to test, where both refusals are evaluated.
    assert not any(r.video == "SSCCC" for r in train)
    assert {r.id for r in test if r.video == "SSCCC"} == {"SSCCC-i2-q0", "SSCCC-i2-q1"}
    assert len(train) + len(test) + stats["records"]["quarantined"] == stats["records"]["in"] == 8
    read_train_records(out / "train.jsonl")  # no evaluation-only record in train
    with pytest.raises(InputError, match=r"record 'SSCCC-i2-q0': refusable_queries: empty"):
        read_train_records(out / "eval" / "synthetic.jsonl")
