"""build_riq and `rarft validate` on hand-built event logs.

Queries are checked by reading their *text* back with a parser and predicate
written here, independently of pipeline.riq.build.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.events import VideoLog
from pipeline.core.params import RiqParams
from pipeline.riq.build import build_riq
from pipeline.riq.schema import json_schema

ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- hand-built logs
# (video id, duration, objects (id, colour, shape, size), events (object, action, start, end))
VIDEOS = [
    ("vid_a", 10.0, [("o1", "red", "square", "small"), ("o2", "blue", "tall bar", "large")],
     [("o1", "moves left", 1.0, 3.0), ("o2", "appears", 4.0, 6.0), ("o1", "blinks", 7.0, 8.5)]),
    ("vid_b", 12.0, [("o1", "green", "wide bar", "small"), ("o2", "yellow", "square", "large")],
     [("o1", "grows", 0.5, 2.0), ("o2", "moves up", 3.0, 5.0), ("o1", "moves right", 6.0, 9.0)]),
    # The same object does the same thing twice: each occurrence needs its own name.
    ("vid_c", 9.0, [("o1", "white", "square", "small"), ("o2", "purple", "wide bar", "large")],
     [("o1", "blinks", 1.0, 2.0), ("o2", "disappears", 3.0, 4.0), ("o1", "blinks", 5.0, 6.0)]),
    # Two objects that look alike both move left: "two small red squares move left" is true here.
    ("vid_d", 11.0, [("o1", "red", "square", "small"), ("o2", "red", "square", "small"), ("o3", "cyan", "tall bar", "large")],
     [("o1", "moves left", 1.0, 3.0), ("o3", "shrinks", 2.0, 4.0), ("o2", "moves left", 5.0, 7.0)]),
    ("vid_e", 8.0, [("o1", "orange", "tall bar", "large"), ("o2", "green", "square", "small")],
     [("o1", "moves down", 0.0, 2.0), ("o2", "moves down", 2.5, 4.0), ("o1", "shrinks", 5.0, 7.5)]),
    ("vid_f", 15.0, [("o1", "purple", "square", "large")],
     [("o1", "appears", 1.0, 2.0), ("o1", "moves right", 4.0, 8.0)]),
    ("vid_g", 10.0, [("o1", "yellow", "wide bar", "small"), ("o2", "blue", "square", "small")],
     [("o1", "blinks", 2.0, 3.0), ("o2", "grows", 2.5, 5.0), ("o1", "disappears", 6.0, 7.0)]),
    ("vid_h", 20.0, [("o1", "cyan", "square", "large"), ("o2", "white", "tall bar", "small")],
     [("o1", "moves up", 1.5, 4.0), ("o2", "moves left", 9.0, 12.0), ("o2", "appears", 14.0, 15.0)]),
]
# Every edit on (count too, which the default leaves off), and order clauses often enough that these 8 videos show each kind.
PARAMS = RiqParams(hard_per_event=2, medium_per_event=2, easy_per_event=2, shuffled_per_video=2, test_fraction=0.25, seed=0,
                   edits=["colour", "size", "shape", "action", "direction", "order", "count"], order_clause_rate=0.5)


def make_log(vid, duration, objects, events) -> VideoLog:
    return VideoLog(
        video_id=vid, video=f"videos/{vid}.mp4", duration=duration, width=64, height=48, fps=10, background="black",
        objects=[{"id": i, "color": c, "shape": s, "size": z} for i, c, s, z in objects],
        events=[{"id": f"e{k}", "object_id": o, "action": a, "start": s, "end": e} for k, (o, a, s, e) in enumerate(events, 1)],
    )


LOGS = {v[0]: make_log(*v) for v in VIDEOS}


def write_inputs(root: Path, logs=LOGS.values(), extra_lines=(), skip_frames=()) -> tuple[Path, Path]:
    ann, frames = root / "raw" / "annotations.jsonl", root / "frames"
    ann.parent.mkdir(parents=True, exist_ok=True)
    frames.mkdir(parents=True, exist_ok=True)
    lines = [log.model_dump_json() for log in logs] + list(extra_lines)
    ann.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for log in logs:
        if log.video_id not in skip_frames and "/" not in log.video_id:
            np.savez(frames / f"{log.video_id}.npz", frames=np.zeros((2, 4, 4, 3), np.uint8),
                     timestamps=np.array([0.0, 0.5]), meta=np.array("{}"))
    return ann, frames


def run_build(root: Path, params: RiqParams = PARAMS, **inputs) -> dict:
    ann, frames = write_inputs(root, **inputs)
    build_riq(params, ann, frames, root / "riq", root / "stats.json")
    out = {name: [json.loads(x) for x in (root / "riq" / f"{path}.jsonl").read_text(encoding="utf-8").splitlines()]
           for name, path in (("train", "train"), ("test", "eval/synthetic"), ("quarantine", "quarantine"))}
    out["stats"] = json.loads((root / "stats.json").read_text())
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return run_build(tmp_path_factory.mktemp("riq"))


def all_records(built):
    return built["train"] + built["test"]


# ----------------------------------------------------------------------------- independent reader
COLOURS = "red|green|blue|yellow|white|orange|purple|cyan"
FORMS = {  # action: (finite, plural, gerund)
    "appears": ("appears", "appear", "appearing"), "disappears": ("disappears", "disappear", "disappearing"),
    "moves left": ("moves left", "move left", "moving left"), "moves right": ("moves right", "move right", "moving right"),
    "moves up": ("moves up", "move up", "moving up"), "moves down": ("moves down", "move down", "moving down"),
    "grows": ("grows", "grow", "growing"), "shrinks": ("shrinks", "shrink", "shrinking"), "blinks": ("blinks", "blink", "blinking"),
}
VERB = {form: action for action, forms in FORMS.items() for form in forms}
NUM = {"the": 0, "one": 1, "two": 2, "three": 3, "four": 4}
ORD = {"first": 1, "second": 2, "third": 3}
VERBS = "|".join(sorted(map(re.escape, VERB), key=len, reverse=True))
CLAUSE = (rf"(?P<det>the|one|two|three|four) (?P<size>small|large) (?P<color>{COLOURS}) (?P<shape>square|wide bar|tall bar)s? "
          rf"(?P<verb>{VERBS})(?: for the (?P<ord>first|second|third) time)?")
ORDER = rf"\b(?P<rel>after|before) the (?P<rsize>small|large) (?P<rcolor>{COLOURS}) (?P<rshape>square|wide bar|tall bar) (?P<rverb>{VERBS})\b"
# What each edit probes (docs/RIQ.md).
CATEGORY = {"colour": "Attribute/AttributeValue", "size": "Attribute/Comparison", "shape": "Object/ObjectExistence",
            "direction": "Object/ObjectMoving", "action": "Action/FineGrainedAction", "order": "Action/ActionSequence",
            "count": "Attribute/Counting"}


def parse(text: str) -> dict:
    order = None
    m = re.search(ORDER, text)
    if m:
        order = (m["rel"], (m["rsize"], m["rcolor"], m["rshape"], VERB[m["rverb"]]))
        text = text[: m.start()] + text[m.end():]
    clauses = list(re.finditer(CLAUSE, text))
    assert len(clauses) == 1, text
    c = clauses[0]
    return {"count": NUM[c["det"]], "size": c["size"], "color": c["color"], "shape": c["shape"],
            "action": VERB[c["verb"]], "occurrence": ORD.get(c["ord"], 0), "order": order}


def events_for(q: dict, log: VideoLog) -> list:
    """Events that the parsed query could describe, leniently (a resized object is both sizes)."""
    objs = {o.id: o for o in log.objects}

    def fits(size, color, shape, action, e):
        o = objs[e.object_id]
        resized = any(x.object_id == o.id and x.action in ("grows", "shrinks") for x in log.events)
        return e.action == action and o.color == color and o.shape == shape and (resized or o.size == size)

    found = [e for e in log.events if fits(q["size"], q["color"], q["shape"], q["action"], e)]
    if q["order"]:
        rel, ref = q["order"]
        refs = [e for e in log.events if fits(*ref, e)]
        if rel == "after":
            found = [e for e in found if any(r.id != e.id and r.start < e.end for r in refs)]
        else:
            found = [e for e in found if any(r.id != e.id and e.start < r.end for r in refs)]
    if q["count"] >= 2 and len({e.object_id for e in found}) < q["count"]:
        return []
    if q["occurrence"]:
        found = sorted(found, key=lambda e: e.start)[q["occurrence"] - 1: q["occurrence"]]
    return found


def edits_between(asked: dict, truth: dict) -> set[str]:
    edits = {name for key, name in (("color", "colour"), ("size", "size"), ("shape", "shape")) if asked[key] != truth[key]}
    if asked["action"] != truth["action"]:
        both_moves = asked["action"].startswith("moves") and truth["action"].startswith("moves")
        edits.add("direction" if both_moves else "action")
    if asked["count"]:
        edits.add("count")
    if asked["order"] != truth["order"]:  # a query and its correction may share a true order clause
        edits.add("order")
    return edits


# ----------------------------------------------------------------------------- generation
def test_every_refusable_query_matches_no_event(built):
    refusable = [r for r in all_records(built) if r["task_type"] == "refusable"]
    assert len(refusable) > 50
    for r in refusable:
        assert events_for(parse(r["problem"]), LOGS[r["video"]]) == [], r["problem"]
        assert r["gt_answers"] == [{"answer": [-1.0, -1.0]}]
        assert r["reference_answer"] == r["explanation"]
        assert r["explanation"].startswith("No segment is relevant: the video shows ")


def test_parse_query_inverts_the_rendering_and_matches_the_labels(built):
    """parse_query reads every built query back (round trip), agrees with the independent reader
    above, and query_matches says answerable exactly for the answerable records (the evaluate
    swapped control relies on it); text that is no synthetic query gives None."""
    from pipeline.riq.synthetic import parse_query, query_matches, query_text

    for r in all_records(built):
        q = parse_query(r["problem"])
        assert q is not None and query_text(q) == r["problem"], r["problem"]
        mine = parse(r["problem"])
        assert (q.subject.color, q.subject.size, q.subject.shape, q.subject.action, q.count, q.occurrence) == (
            mine["color"], mine["size"], mine["shape"], mine["action"], mine["count"], mine["occurrence"]), r["problem"]
        assert query_matches(r["problem"], LOGS[r["video"]]) is (r["task_type"] == "answerable"), r["problem"]
    for text in ("a person opens the door", "the small red square", "the small red circle moves left", ""):
        assert parse_query(text) is None and query_matches(text, LOGS["vid_a"]) is None


def test_every_answerable_span_is_its_event(built):
    answerable = [r for r in all_records(built) if r["task_type"] == "answerable"]
    named = set()
    for r in answerable:
        found = events_for(parse(r["problem"]), LOGS[r["video"]])
        assert len(found) == 1, r["problem"]
        e = found[0]
        assert r["gt_answers"] == [{"answer": [e.start, e.end]}]
        assert r["reference_answer"] == f"{e.start:.2f} to {e.end:.2f}"
        assert (r["difficulty"], r["kind"], r["categories"]) == ("original", "answerable", [])
        named.add((r["video"], e.id))
    # Every event is asked about; the repeated blink is told apart by its occurrence or by a true order clause.
    assert named == {(v, e.id) for v, log in LOGS.items() for e in log.events}
    blinks = [r["problem"] for r in answerable if r["video"] == "vid_c" and parse(r["problem"])["action"] == "blinks"]
    assert len(blinks) == 2 and all(" time" in t or parse(t)["order"] for t in blinks), blinks
    # True order clauses appear in answerable queries too, so the clause alone does not give the label away.
    assert any(parse(r["problem"])["order"] for r in answerable)


def test_edit_counts_and_categories_follow_the_text(built):
    hard = [r for r in all_records(built) if r["kind"] == "hard_irrelevant"]
    seen_edits = set()
    for r in hard:
        truth = parse(r["refusable_queries"][0]["problem"])
        edits = edits_between(parse(r["problem"]), truth)
        assert edits == set(r["edits"]), (r["problem"], r["refusable_queries"][0]["problem"], r["edits"])
        assert len(edits) == {"hard": 1, "medium": 2, "easy": 3}[r["difficulty"]]
        assert r["categories"] == sorted({CATEGORY[e] for e in edits})
        seen_edits |= edits
    assert seen_edits == set(CATEGORY)
    assert {r["difficulty"] for r in hard} == {"hard", "medium", "easy"}


def test_each_edit_alone_is_a_mismatch(built):
    # A medium/easy query must not hide a 'fake' edit behind a real one: undoing all
    # edits but one still leaves a query that matches nothing.
    fields = {"colour": ["color"], "size": ["size"], "shape": ["shape"], "direction": ["action"], "action": ["action"]}
    for r in all_records(built):
        if r["kind"] != "hard_irrelevant" or len(r["edits"]) < 2:
            continue
        asked, truth = parse(r["problem"]), parse(r["refusable_queries"][0]["problem"])
        truth = {**truth, "occurrence": 0}
        for edit in r["edits"]:
            single = dict(truth)
            for f in fields.get(edit, []):
                single[f] = asked[f]
            if edit == "count":
                single["count"] = asked["count"]
            if edit == "order":
                single["order"] = asked["order"]
            assert events_for(single, LOGS[r["video"]]) == [], (r["problem"], edit)


def test_correction_target_is_the_edited_event(built):
    by_id = {(r["video"], r["problem"]): r for r in all_records(built) if r["task_type"] == "answerable"}
    for r in all_records(built):
        if r["task_type"] != "refusable":
            continue
        alt = r["refusable_queries"][0]
        answerable = by_id[(r["video"], alt["problem"])]
        assert alt["gt_answers"] == answerable["gt_answers"]
        assert r["contrast_answer"] == answerable["reference_answer"]


def test_shuffled_queries_come_from_another_video_of_the_same_split(built):
    for split in ("train", "test"):
        recs = built[split]
        answerable = {(r["video"], r["problem"]) for r in recs if r["task_type"] == "answerable"}
        shuffled = [r for r in recs if r["kind"] == "shuffled"]
        assert shuffled
        for r in shuffled:
            donors = {v for v, p in answerable if p == r["problem"]}
            assert donors and r["video"] not in donors
            assert events_for(parse(r["problem"]), LOGS[r["video"]]) == []
            assert (r["difficulty"], r["categories"], r["edits"]) == (None, [], [])


def test_answerable_contrast_is_a_refusal_of_the_same_video(built):
    for r in all_records(built):
        if r["task_type"] == "answerable":
            refusals = {x["explanation"] for x in all_records(built) if x["video"] == r["video"] and x["task_type"] == "refusable"}
            assert r["contrast_answer"] in refusals


def test_explanation_names_the_mismatch(built):
    r = next(r for r in all_records(built) if r["edits"] == ["colour"])
    asked, truth = parse(r["problem"]), parse(r["refusable_queries"][0]["problem"])
    shows, _, wrong = r["explanation"].partition(", not ")
    assert truth["color"] in shows and asked["color"] in wrong and asked["color"] not in shows


# ----------------------------------------------------------------------------- split, determinism, accounting
def test_split_is_by_video_and_seeded(built):
    train_videos = {r["video"] for r in built["train"]}
    test_videos = {r["video"] for r in built["test"]}
    assert not train_videos & test_videos
    assert train_videos | test_videos == set(LOGS)
    assert len(test_videos) == 2  # round(8 * 0.25)
    assert built["stats"]["videos"] == {"in": 8, "quarantined": 0, "test": 2, "train": 6}
    assert built["stats"]["source"]["videos_without_queries"] == 0
    # The same keys as an imported build's stats (tests/riq/test_import.py).
    assert sorted(built["stats"]) == ["audit", "leakage", "quarantined", "records", "sets", "source", "splits", "videos"]
    assert sorted(built["stats"]["records"]) == ["generated", "in", "quarantined", "test", "train"]
    assert built["stats"]["source"]["kind"] == "synthetic"


def test_same_seed_gives_identical_bytes(tmp_path, monkeypatch):
    names = ["riq/train.jsonl", "riq/eval/synthetic.jsonl", "riq/quarantine.jsonl", "stats.json"]
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)  # records hold paths as given: keep them relative
        runs[name] = run_build(Path("."), params=PARAMS.model_copy(update={"seed": seed}))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert [r["problem"] for r in runs["a"]["train"]] != [r["problem"] for r in runs["c"]["train"]]


def test_missing_frames_and_bad_logs_are_quarantined_and_nothing_is_lost(tmp_path):
    bad_end = make_log("vid_bad", 5.0, [("o1", "red", "square", "small")], [("o1", "blinks", 1.0, 2.0)]).model_dump()
    bad_end["events"][0]["end"] = 9.0  # after the video ends
    unsafe = make_log("../x", 5.0, [("o1", "red", "square", "small")], [("o1", "blinks", 1.0, 2.0)])
    out = run_build(
        tmp_path, logs=[*LOGS.values(), unsafe], skip_frames={"vid_b"},
        extra_lines=["{not json", json.dumps(bad_end), LOGS["vid_a"].model_dump_json()],
    )
    q, stats = out["quarantine"], out["stats"]
    assert all(set(x) == {"id", "reason", "record"} for x in q)
    no_frames = [x for x in q if "no frames file for video vid_b" in x["reason"]]
    assert no_frames and all(x["record"]["video"] == "vid_b" for x in no_frames)
    assert not any(r["video"] == "vid_b" for r in out["train"] + out["test"])
    assert any(x["id"] == "vid_bad" and "record vid_bad: events: event e1: ends after the video" in x["reason"] for x in q)
    assert any("not valid JSON" in x["reason"] for x in q)
    assert any(x["id"] == "vid_a" and "duplicate video id" in x["reason"] for x in q)
    unsafe_q = [x for x in q if isinstance(x["record"], dict) and x["record"].get("video") == "../x"]
    assert unsafe_q and all("video: must be a safe file name" in x["reason"] for x in unsafe_q)
    # in == out + quarantined, for log lines and for generated records.
    assert stats["videos"]["in"] == len(LOGS) + 1 + 3
    assert stats["videos"]["quarantined"] == 3
    recs = stats["records"]
    assert recs["generated"] == len(out["train"]) + len(out["test"]) + recs["quarantined"]
    assert len(q) == recs["quarantined"] + stats["videos"]["quarantined"]
    assert stats["quarantined"]["no_frames"] == len(no_frames)
    for r in out["train"] + out["test"]:
        assert r["frames_path"].endswith(f"frames/{r['video']}.npz") and Path(r["frames_path"]).is_file()


def test_stage_entry_point_reads_params(tmp_path):
    ann, frames = write_inputs(tmp_path)
    params = tmp_path / "params.yaml"
    # train_shuffled_per_video null: the train split follows shuffled_per_video (0) too.
    params.write_text("riq:\n  hard_per_event: 1\n  medium_per_event: 0\n  shuffled_per_video: 0\n  train_shuffled_per_video: null\n")
    subprocess.run(
        [sys.executable, "-m", "stages.build_riq", "--annotations", str(ann), "--frames", str(frames),
         "--out", str(tmp_path / "riq"), "--stats", str(tmp_path / "s.json"), "--params", str(params)],
        check=True, cwd=ROOT, capture_output=True,
    )
    kinds = json.loads((tmp_path / "s.json").read_text())["splits"]["train"]["kind"]
    assert set(kinds) == {"answerable", "hard_irrelevant"}


# ----------------------------------------------------------------------------- validate
runner = CliRunner()


def validate(path: Path, *args: str):
    result = runner.invoke(app, ["validate", str(path), *args])
    lines = [x for x in result.stdout.splitlines() if x.strip()]
    return result.exit_code, lines


@pytest.fixture
def good(built, tmp_path):
    recs = [r for r in built["train"] if r["video"] == built["train"][0]["video"]]
    return tmp_path, recs


def write(path: Path, recs) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


def test_validate_accepts_built_files(built, tmp_path):
    f = write(tmp_path / "train.jsonl", built["train"])
    code, lines = validate(f, "--report", str(tmp_path / "rep.json"))
    assert (code, lines) == (0, [])
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["records"] == rep["valid"] == len(built["train"]) and rep["errors"] == []
    # A JSON list is read too.
    g = tmp_path / "train.json"
    g.write_text(json.dumps(built["train"][:5]))
    assert validate(g)[0] == 0


def _answerable(recs):
    return next(r for r in recs if r["task_type"] == "answerable")


def _refusable(recs):
    return next(r for r in recs if r["task_type"] == "refusable")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad_span", "gt_answers: span [5.0, 3.0] must satisfy 0 <= start < end <= duration"),
        ("beyond_end", "gt_answers: span [1.0, 999.0] must satisfy 0 <= start < end <= duration"),
        ("empty_query", "problem: query is empty"),
        ("unknown_category", "categories.0: unknown value 'Object/Teleport'"),
        ("refusable_with_span", "gt_answers: a refusable record's span must be [-1, -1]"),
        ("refusable_without_alternative", "refusable_queries: a hard_irrelevant record needs its true query as correction target"),
        ("unsafe_video", "video: must be a safe file name"),
        ("missing_field", "reference_answer: missing"),
    ],
)
def test_validate_reports_one_line_per_problem(good, case, expected):
    tmp_path, recs = good
    recs = [dict(r) for r in recs]
    a, rf = _answerable(recs), _refusable(recs)
    bad = {
        "bad_span": lambda: a.update(gt_answers=[{"answer": [5.0, 3.0]}]),
        "beyond_end": lambda: a.update(gt_answers=[{"answer": [1.0, 999.0]}]),
        "empty_query": lambda: a.update(problem="   "),
        "unknown_category": lambda: rf.update(categories=["Object/Teleport"], edits=[]),
        "refusable_with_span": lambda: rf.update(gt_answers=[{"answer": [1.0, 2.0]}]),
        "refusable_without_alternative": lambda: rf.update(refusable_queries=[]),
        "unsafe_video": lambda: a.update(video="../x"),
        "missing_field": lambda: a.pop("reference_answer"),
    }
    bad[case]()
    target = a if case not in ("unknown_category", "refusable_with_span", "refusable_without_alternative") else rf
    f = write(tmp_path / "test.jsonl", recs)
    code, lines = validate(f)
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{f}: record {target['id']}: {expected}"), lines[0]


def test_validate_reports_duplicate_ids_and_missing_frames(good):
    tmp_path, recs = good
    f = write(tmp_path / "test.jsonl", [*recs, recs[0]])
    code, lines = validate(f)
    assert code == 1 and lines == [f"{f}: record {recs[0]['id']}: id: duplicate id (first at line 1)"]
    f = write(tmp_path / "test.jsonl", recs)
    code, lines = validate(f, "--frames", str(tmp_path / "nowhere"))
    assert code == 1 and len(lines) == len(recs)
    assert lines[0].startswith(f"{f}: record {recs[0]['id']}: frames_path: no frames file for video {recs[0]['video']}")


def test_validate_accepts_unicode_queries(good):
    tmp_path, recs = good
    recs = [dict(r) for r in recs]
    _answerable(recs)["problem"] = "le carré rouge bouge à gauche — 红色方块向左移动 ✓"
    f = write(tmp_path / "test.jsonl", recs)
    assert validate(f) == (0, [])


def test_validate_rejects_unreadable_file(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"id": "a"}\nnot json\n')
    code, lines = validate(f)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"{f}:2: not valid JSON")


def test_committed_schema_is_the_export():
    committed = json.loads((ROOT / "docs" / "riq.schema.json").read_text())
    assert committed == json_schema()


def test_train_shuffled_per_video_adds_train_refusals_and_leaves_the_evaluation_split(built, tmp_path):
    def paths_out(records):  # the two builds sit in different temp folders
        return [{k: v for k, v in r.items() if k not in ("frames_path", "video_path")} for r in records]

    more = run_build(tmp_path, PARAMS.model_copy(update={"train_shuffled_per_video": 4}))
    # The evaluation split is the same; so is every train record of the plain build.
    assert paths_out(more["test"]) == paths_out(built["test"])
    before = {r["id"]: r for r in paths_out(built["train"])}
    after = {r["id"]: r for r in paths_out(more["train"])}
    assert all(after[i] == r for i, r in before.items())
    shuffled = Counter(r["video"] for r in more["train"] if r["kind"] == "shuffled")
    # 6 train videos, 4 each (2 in the plain build); every one comes from another train video and matches no event.
    assert shuffled == {v: 4 for v in {r["video"] for r in built["train"]}}
    answerable = {(r["video"], r["problem"]) for r in more["train"] if r["task_type"] == "answerable"}
    for r in (r for r in more["train"] if r["kind"] == "shuffled"):
        assert {v for v, p in answerable if p == r["problem"]} - {r["video"]}
        assert events_for(parse(r["problem"]), LOGS[r["video"]]) == []
    assert len({r["problem"] for r in more["train"] if r["kind"] == "shuffled" and r["video"] == "vid_a"}) == 4
