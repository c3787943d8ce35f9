"""Metrics on a hand-made set of 8 records, every value computed by hand; CLI round trips.

The set (D = 20 s everywhere):

    id  gt       completion                        has <answer>  pred span  IoU   RA-IoU  format  refuse_iou
    A1  [2,6]    "2 to 6"                          yes           [2,6]      1.0   1.0     1       1
    A2  [10,20]  "14 to 20"                        yes           [14,20]    0.6   0.6     1       0.6 x (1-4/20) x 1 = 0.48
    A3  [0,4]    "0 to 10"                         yes           [0,10]     0.4   0.4     1       0.4 x 1 x (1-6/20) = 0.28
    A4  [4,8]    refusal text                      yes           -          0     0       1       0
    A5  [4,8]    no tags                           no            -          0     0       0       0
    R1  refuse   refusal text   (hard, AttrValue)  yes           -          -     1       1       1
    R2  refuse   "5 to 9" + trailing text (medium, AttrValue + ObjMoving)
                                                   yes           [5,9]      -     0       0       0
    R3  refuse   no tags        (shuffled)         no            -          -     0       0       0
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.io import write_jsonl
from pipeline.core.prompt import parse_completion, parse_completion_official
from pipeline.evaluate import metrics, official
from pipeline.evaluate.run import score
from pipeline.riq.schema import RiqRecord
from pipeline.train import rewards

D = 20.0
EXPL = "No segment is relevant: the circle is red, not blue."
TARGET = "a red circle moves left"
WEIGHTS = {"format": 1.0, "refuse_iou": 2.0}


def ans(rid, span):
    return RiqRecord(
        id=rid, video="v1", video_path="v1.mp4", duration=D, problem="a red circle moves left",
        task_type="answerable", kind="answerable", gt_answers=[{"answer": span}],
        reference_answer=f"{span[0]:.2f} to {span[1]:.2f}", contrast_answer=EXPL, difficulty="original", source="synthetic",
    )


def ref(rid, kind, difficulty, categories):
    return RiqRecord(
        id=rid, video="v1", video_path="v1.mp4", duration=D, problem="a blue circle moves left",
        task_type="refusable", kind=kind, gt_answers=[{"answer": [-1, -1]}],
        refusable_queries=[{"problem": TARGET, "gt_answers": [{"answer": [2, 6]}]}],
        reference_answer=EXPL, contrast_answer="2.00 to 6.00", categories=categories, difficulty=difficulty, source="synthetic",
    )


def full(answer, correction="NIL"):
    return f"<think>I watch.</think><answer>{answer}</answer><correction>{correction}</correction>"


RECORDS = [
    ans("A1", [2, 6]),
    ans("A2", [10, 20]),
    ans("A3", [0, 4]),
    ans("A4", [4, 8]),
    ans("A5", [4, 8]),
    ref("R1", "hard_irrelevant", "hard", ["Attribute/AttributeValue"]),
    ref("R2", "hard_irrelevant", "medium", ["Attribute/AttributeValue", "Object/ObjectMoving"]),
    ref("R3", "shuffled", None, []),
]
COMPLETIONS = [
    full("2 to 6"),
    full("14 to 20"),
    full("0 to 10"),
    full("No segment is relevant here."),
    "I do not know.",
    full("No segment is relevant: the circle is red.", TARGET),
    full("5 to 9", TARGET) + " extra",
    "",
]


@pytest.fixture(scope="module")
def result():
    return metrics.compute_metrics(RECORDS, COMPLETIONS, WEIGHTS)


def test_counts_and_format(result):
    assert (result["n_items"], result["n_answerable"], result["n_refusable"]) == (8, 5, 3)
    assert result["format_rate"] == pytest.approx(5 / 8)  # A1-A4, R1


def test_relevance(result):
    r = result["relevance"]
    # relevant: tp A1 A2 A3 = 3, fp R2 = 1, fn A4 A5 = 2 -> P 3/4, R 3/5, F1 = 2 x .75 x .6 / 1.35 = 2/3
    assert (r["precision_relevant"], r["recall_relevant"], r["f1_relevant"]) == pytest.approx((3 / 4, 3 / 5, 2 / 3))
    # irrelevant (needs an <answer> without a span): pred A4 R1; tp R1, fp A4, fn R2 R3 -> P 1/2, R 1/3, F1 = (1/3)/(5/6) = 2/5
    assert (r["precision_irrelevant"], r["recall_irrelevant"], r["f1_irrelevant"]) == pytest.approx((1 / 2, 1 / 3, 2 / 5))
    assert r["accuracy"] == pytest.approx(4 / 8)  # A1 A2 A3 R1
    assert r["f1_macro"] == pytest.approx((2 / 3 + 2 / 5) / 2)  # 8/15
    assert r["balanced_accuracy"] == pytest.approx((3 / 5 + 1 / 3) / 2)  # 7/15


def test_ra_iou_and_grounding(result):
    # RA-IoU: 1, .6, .4, 0, 0, 1, 0, 0 -> mean 3/8; >=.3: 4 items; >=.5: 3; >=.7: 2
    assert result["ra_iou"] == pytest.approx({"mean": 3 / 8, "r@0.3": 4 / 8, "r@0.5": 3 / 8, "r@0.7": 2 / 8})
    # answerable IoU: 1, .6, .4, 0, 0 -> mIoU 2/5; >=.3: 3/5; >=.5: 2/5; >=.7: 1/5
    assert result["grounding"] == pytest.approx({"miou": 2 / 5, "r@0.3": 3 / 5, "r@0.5": 2 / 5, "r@0.7": 1 / 5})


def test_reward_block(result):
    rw = result["reward"]
    assert rw["format"] == pytest.approx(5 / 8)
    assert rw["refuse_iou"] == pytest.approx((1 + 0.48 + 0.28 + 1) / 8)  # 2.76 / 8 = 0.345
    assert rw["total"] == pytest.approx(1.0 * 0.625 + 2.0 * 0.345)  # 1.315; explain/correction weigh 0 here
    # The SBERT rewards are the per-item rewards, averaged (their values are tested in test_rewards.py).
    scores = rewards.score(RECORDS, COMPLETIONS)
    for name in ("explain", "correction"):
        assert rw[name] == pytest.approx(np.mean([s[name] for s in scores]), abs=1e-7)
    # A1-A4 write NIL -> correction 1; A5 has no correction -> 0.
    assert [s["correction"] for s in scores[:5]] == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_breakdowns(result):
    assert sorted(result["by_difficulty"]) == ["hard", "medium", "none", "original"]
    assert sorted(result["by_kind"]) == ["answerable", "hard_irrelevant", "shuffled"]
    assert sorted(result["by_category"]) == ["Attribute_AttributeValue", "Object_ObjectMoving"]

    orig = result["by_difficulty"]["original"]
    # relevant: tp 3, fp 0, fn 2 -> P 1, R 3/5, F1 = 2 x .6 / 1.6 = .75; irrelevant: no support, A4 predicted -> P 0, R 0, F1 0
    assert orig["relevance"]["f1_relevant"] == pytest.approx(0.75)
    assert (orig["relevance"]["precision_irrelevant"], orig["relevance"]["f1_irrelevant"]) == (0.0, 0.0)
    assert orig["relevance"]["f1_macro"] == pytest.approx(0.75)  # only the class with support
    assert orig["ra_iou"]["mean"] == pytest.approx(2 / 5)  # (1 + .6 + .4) / 5
    assert orig["grounding"] == result["grounding"]  # the same answerable items

    hard = result["by_difficulty"]["hard"]
    assert hard["n_items"] == 1 and hard["relevance"]["accuracy"] == 1.0 and hard["relevance"]["f1_macro"] == 1.0
    # no answerable items: grounding is 0 by convention; no relevant support nor predictions: P = R = F1 = 0
    assert hard["grounding"] == {"miou": 0.0, "r@0.3": 0.0, "r@0.5": 0.0, "r@0.7": 0.0}
    assert hard["relevance"]["precision_relevant"] == 0.0 and hard["relevance"]["f1_relevant"] == 0.0

    attr = result["by_category"]["Attribute_AttributeValue"]  # R1 (right), R2 (wrong)
    assert attr["n_items"] == 2 and attr["ra_iou"]["mean"] == 0.5 and attr["relevance"]["accuracy"] == 0.5
    moving = result["by_category"]["Object_ObjectMoving"]  # R2 only, predicted relevant
    assert moving["relevance"]["accuracy"] == 0.0 and moving["relevance"]["f1_macro"] == 0.0
    assert moving["relevance"]["precision_relevant"] == 0.0  # a false positive, no support

    assert result["by_difficulty"]["none"]["ra_iou"]["mean"] == 0.0  # R3: no <answer> is not a refusal
    assert result["by_kind"]["hard_irrelevant"]["format_rate"] == 0.5  # R1 yes, R2 no


def test_per_item():
    rows = metrics.per_item(RECORDS, COMPLETIONS, WEIGHTS)
    assert [r["id"] for r in rows] == [r.id for r in RECORDS]
    assert [r["relevant_pred"] for r in rows] == [True, True, True, False, False, False, True, False]
    assert [r["ra_iou"] for r in rows] == pytest.approx([1, 0.6, 0.4, 0, 0, 1, 0, 0])
    assert [r["iou"] for r in rows] == pytest.approx([1, 0.6, 0.4, 0, 0, 0, 0, 0])
    assert (rows[1]["pred_start"], rows[1]["pred_end"], rows[4]["pred_start"]) == (14.0, 20.0, None)
    assert rows[1]["total"] == pytest.approx(1 + 2 * 0.48)
    assert rows[6]["categories"] == ["Attribute/AttributeValue", "Object/ObjectMoving"]
    json.dumps(rows)  # plain JSON types


def test_empty_and_custom_thresholds():
    m = metrics.compute_metrics([], [], WEIGHTS, thresholds=(0.25,))
    assert m["n_items"] == 0 and m["ra_iou"] == {"mean": 0.0, "r@0.25": 0.0} and m["relevance"]["f1_macro"] == 0.0
    with pytest.raises(ValueError, match="unknown reward"):
        metrics.compute_metrics(RECORDS, COMPLETIONS, {"bogus": 1.0})


def test_speed_of_non_sbert_part():
    """The parse + numpy path for 100k items must take seconds (SBERT excluded)."""
    import time

    from pipeline.core.prompt import parse_completion

    n = 100_000
    comps = [COMPLETIONS[i % len(COMPLETIONS)] for i in range(n)]
    t0 = time.perf_counter()
    parsed = [parse_completion(c) for c in comps]
    ps, pe = rewards.span_arrays(parsed)
    gt = np.tile([[2.0, 6.0]], (n, 1))
    rewards.clipped_iou(ps, pe, gt[:, 0], gt[:, 1], np.full(n, D))
    assert time.perf_counter() - t0 < 15


# --------------------------------------------------------------------------- CLI
@pytest.fixture()
def files(tmp_path):
    rec = tmp_path / "riq.jsonl"
    write_jsonl(rec, RECORDS)
    pred = tmp_path / "pred.jsonl"
    write_jsonl(pred, [{"id": r.id, "completion": c} for r, c in zip(RECORDS, COMPLETIONS)])
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  reward_weights: {format: 1.0, refuse_iou: 2.0}\nevaluate:\n  iou_thresholds: [0.3, 0.5, 0.7]\n")
    return rec, pred, params


def test_cli_metrics_round_trip(files, tmp_path, result):
    rec, pred, params = files
    out = tmp_path / "m" / "metrics.json"
    res = CliRunner().invoke(app, ["metrics", "--records", str(rec), "--predictions", str(pred), "--out", str(out), "--params", str(params)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    loaded = json.loads(text)
    # the metrics block plus the set's coverage (issue 17); same weights and thresholds as the fixture
    coverage = loaded.pop("coverage")
    assert coverage == {"records": 8, "evaluated": 8, "share_evaluated": 1.0, "skipped_no_video": 0,
                        "evaluation_only": 0, "correction_scored": 3}
    assert loaded == result  # JSON floats round-trip exactly
    assert loaded["reward"]["total"] == pytest.approx(1.315)
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"  # sorted keys


def test_cli_score_round_trip(files, tmp_path):
    rec, pred, params = files
    out = tmp_path / "scores.jsonl"
    res = CliRunner().invoke(app, ["score", "--records", str(rec), "--completions", str(pred), "--out", str(out), "--params", str(params)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r.id for r in RECORDS]
    assert set(rows[0]) == {"id", "format", "refuse_iou", "explain", "correction", "total"}
    assert [r["refuse_iou"] for r in rows] == pytest.approx([1, 0.48, 0.28, 0, 0, 1, 0, 0])
    assert rows[1]["total"] == pytest.approx(1 + 2 * 0.48)


def test_cli_errors(files, tmp_path):
    rec, pred, params = files
    run = lambda cmd, p: CliRunner().invoke(app, [cmd, "--records", str(rec), "--predictions" if cmd == "metrics" else "--completions", str(p), "--out", str(tmp_path / "o")])  # noqa: E731

    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"id": "A1", "completion": "x"}\n\n{"id": "Z9", "completion": "x"}\n')
    for cmd in ("metrics", "score"):
        res = run(cmd, unknown)
        assert res.exit_code == 2 and f"{unknown}:3: id 'Z9'" in res.output, res.output

    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"id": "A1", "completion": "x"}\n')
    res = run("metrics", missing)
    assert res.exit_code == 2 and "no prediction for id 'A2'" in res.output and str(missing) in res.output
    assert run("score", missing).exit_code == 0  # scoring a subset is fine
    res = CliRunner().invoke(app, ["metrics", "--records", str(rec), "--predictions", str(missing), "--out", str(tmp_path / "p.json"), "--partial"])
    assert res.exit_code == 0 and json.loads((tmp_path / "p.json").read_text())["n_items"] == 1

    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "A1", "completion": "x"}\n{"id": "A1", "completion": "y"}\n')
    res = run("metrics", dup)
    assert res.exit_code == 2 and f"{dup}:2: id 'A1': repeated" in res.output

    nocomp = tmp_path / "nocomp.jsonl"
    nocomp.write_text('{"id": "A1", "text": "x"}\n')
    res = run("score", nocomp)
    assert res.exit_code == 2 and "'completion'" in res.output

    bad = tmp_path / "bad_riq.jsonl"
    bad.write_text(RECORDS[0].model_copy(update={}).model_dump_json().replace('"duration":20.0', '"duration":-1') + "\n")
    res = CliRunner().invoke(app, ["score", "--records", str(bad), "--completions", str(pred), "--out", str(tmp_path / "never")])
    assert res.exit_code == 2 and f"{bad}:1: record 'A1': duration" in res.output
    assert not (tmp_path / "never").exists()  # nothing written on error


# --------------------------------------------------------------------------- refusal quality, RT-IoU, thresholds
# A second hand-made set whose SBERT similarities are exact: a refusal that repeats its
# reference explanation (or true query) word for word has similarity 1.
#
#   id  kind    gold categories            completion                                      expl  corr  pred categories      RT-IoU
#   H1  hard    [AttrValue]                refuses: EXPL verbatim, correction = TARGET     1     1     [AttrValue] (corr diff red/blue)   1
#   H2  medium  [AttrValue, Counting]      refuses: "shows a red circle moving left, not   1     0     [AttrValue, ObjMoving]  1/3
#                                          a blue circle moving right." (= its reference), NIL
#   H3  hard    [Counting]                 gives a span (missed refusal)                   0     0     []                   0
#   S1  shuffled -                         refuses: its reference verbatim, correction = TARGET  1  1   -                    (not counted)
#   A1  answerable                         "2 to 6"                                        (not counted)
H2_EXPL = "No segment is relevant: the video shows a red circle moving left, not a blue circle moving right."


def _with(rec, **update):
    return rec.model_copy(update=update)


QUALITY_RECORDS = [
    ref("H1", "hard_irrelevant", "hard", ["Attribute/AttributeValue"]),
    _with(ref("H2", "hard_irrelevant", "medium", ["Attribute/AttributeValue", "Attribute/Counting"]), explanation=H2_EXPL, reference_answer=H2_EXPL),
    ref("H3", "hard_irrelevant", "hard", ["Attribute/Counting"]),
    _with(ref("S1", "shuffled", None, []), explanation="No segment is relevant: nothing like it.", reference_answer="No segment is relevant: nothing like it."),
    ans("A1", [2, 6]),
]
QUALITY_COMPLETIONS = [
    full(EXPL, TARGET),
    full(H2_EXPL, "NIL"),
    full("3 to 5", TARGET),
    full("No segment is relevant: nothing like it.", TARGET),
    full("2 to 6"),
]


@pytest.fixture(scope="module")
def quality():
    return metrics.compute_metrics(QUALITY_RECORDS, QUALITY_COMPLETIONS, WEIGHTS)


def test_explanation_and_correction_similarity(quality):
    # explanation over the 4 refusable items: (1 + 1 + 0 + 1) / 4; over the 3 correct refusals: 1
    assert quality["explanation"] == pytest.approx({"sim_irrelevant": 3 / 4, "sim_correct_refusals": 1.0}, abs=1e-6)
    # correction: H1 1, H2 NIL -> 0, H3 missed -> 0, S1 1 -> 2/4; over correct refusals (1 + 0 + 1) / 3
    assert quality["correction"] == pytest.approx({"sim_irrelevant": 2 / 4, "sim_correct_refusals": 2 / 3}, abs=1e-6)


def test_rt_iou(quality):
    # H1 1, H2 |{AttrValue}| / |{AttrValue, Counting, ObjMoving}| = 1/3, H3 missed 0 (S1 has no gold categories)
    assert quality["rt_iou"] == pytest.approx({"mean": (1 + 1 / 3 + 0) / 3, "mean_correct_refusals": (1 + 1 / 3) / 2})
    assert quality["conventions"] == {"threshold_op": ">=", "rt_iou_source": "rules+sbert-prototype"}
    rows = metrics.per_item(QUALITY_RECORDS, QUALITY_COMPLETIONS)
    # Every correct refusal is classified (S1 too: its correction changes blue -> red); only gold-labelled ones count.
    assert [r["pred_categories"] for r in rows] == [
        ["Attribute/AttributeValue"], ["Attribute/AttributeValue", "Object/ObjectMoving"], [], ["Attribute/AttributeValue"], []]
    assert [r["rt_iou"] for r in rows[:3]] == pytest.approx([1, 1 / 3, 0]) and rows[3]["rt_iou"] is rows[4]["rt_iou"] is None
    assert rows[4]["expl_sim"] is None and rows[2]["expl_sim"] == 0.0
    # The hard group holds H1 and H3: (1 + 0) / 2
    assert quality["by_difficulty"]["hard"]["rt_iou"]["mean"] == pytest.approx(0.5)


def test_rt_iou_from_given_categories():
    """Categories from elsewhere (the judge) replace the classifier; only correct refusals keep theirs."""
    given = [["Attribute/Counting"], ["Attribute/Counting", "Attribute/AttributeValue"], ["Attribute/Counting"], [], []]
    t = metrics.item_table(QUALITY_RECORDS, QUALITY_COMPLETIONS, pred_categories=given)
    # H1 0 (Counting vs AttrValue), H2 1, H3 missed 0
    assert metrics.rt_iou(t) == pytest.approx({"mean": 1 / 3, "mean_correct_refusals": 0.5})


def test_threshold_op_strict_vs_inclusive():
    # RA-IoU of the first set: 1, .6, .4, 0, 0, 1, 0, 0; grounding IoU 1, .6, .4, 0, 0
    ge = metrics.compute_metrics(RECORDS, COMPLETIONS, WEIGHTS, thresholds=(0.4, 0.6), threshold_op=">=")
    gt = metrics.compute_metrics(RECORDS, COMPLETIONS, WEIGHTS, thresholds=(0.4, 0.6), threshold_op=">")
    assert ge["ra_iou"] == pytest.approx({"mean": 3 / 8, "r@0.4": 4 / 8, "r@0.6": 3 / 8})
    assert gt["ra_iou"] == pytest.approx({"mean": 3 / 8, "r@0.4": 3 / 8, "r@0.6": 2 / 8})
    assert gt["grounding"] == pytest.approx({"miou": 2 / 5, "r@0.4": 2 / 5, "r@0.6": 1 / 5})
    assert gt["conventions"]["threshold_op"] == ">"
    with pytest.raises(ValueError, match="threshold_op"):
        metrics.compute_metrics(RECORDS, COMPLETIONS, WEIGHTS, threshold_op="=>")


def test_cli_metrics_threshold_op_from_params(files, tmp_path):
    rec, pred, params = files
    params.write_text(params.read_text().replace("iou_thresholds: [0.3, 0.5, 0.7]", "iou_thresholds: [0.4]\n  threshold_op: '>'"))
    out = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["metrics", "--records", str(rec), "--predictions", str(pred), "--out", str(out), "--params", str(params)])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert m["ra_iou"]["r@0.4"] == pytest.approx(3 / 8) and m["conventions"]["threshold_op"] == ">"


@pytest.mark.parametrize(
    ("query", "explanation", "correction", "expected"),
    [
        # "shows X, not Y": one word per fact
        ("the small red square appears", "No segment is relevant: the video shows the large red square appearing, not the small red square appearing.", None, ["Attribute/Comparison"]),
        ("three squares appear", "the video shows one square appearing, not three squares appearing", None, ["Attribute/Counting"]),
        ("the square moves right", "the video shows the square moving left, not the square moving right", None, ["Object/ObjectMoving"]),
        # a changed verb makes it an action edit even when a direction word changed with it
        ("the square moves right", "the video shows the square disappearing, not the square moving right", None, ["Action/FineGrainedAction"]),
        ("after the bar appears, the square disappears", "the video shows the square disappearing before the bar appears, not the square disappearing after the bar appears", None, ["Action/ActionSequence"]),
        ("the wide bar appears", "the video shows the square appearing, not the wide bar appearing", None, ["Object/ObjectExistence"]),
        # no "shows X, not Y": the correction against the query
        ("a person opens the door in the kitchen", "No segment is relevant.", "a person opens the door in the garden", ["Scene/SceneExistence"]),
        ("a cup is on the table", "No.", "a cup is under the table", ["Object/ObjectSpatialRelation"]),
        # nothing differs: no categories
        ("a red square appears", "No segment is relevant.", "NIL", []),
    ],
)
def test_categorize_rules(query, explanation, correction, expected):
    from pipeline.riq.categorize import classify

    assert classify(query, explanation, correction) == expected


def test_categorize_unknown_words_go_to_the_nearest_prototype():
    from pipeline.riq.categorize import classify, jaccard

    # "sprints"/"strolls" are in no word list: the SBERT prototype of an action change is nearest.
    assert classify("a man strolls", "No segment is relevant.", "a man sprints") == ["Action/FineGrainedAction"]
    assert jaccard([], []) == 1.0 and jaccard(["a"], ["a", "b"]) == 0.5


def test_non_sbert_metrics_on_100k_items_are_fast():
    """Everything after the SBERT encodes (all blocks, breakdowns, RT-IoU, quality means) for 100k items.

    benchmarks/eval_throughput.py checks the 5 s budget; the bound here allows for a loaded test machine."""
    import time

    n = 100_000
    base = metrics.item_table(QUALITY_RECORDS + RECORDS, QUALITY_COMPLETIONS + COMPLETIONS)
    t = base.take(np.arange(n) % len(base))
    t0 = time.perf_counter()
    m = metrics.metrics_from_table(t, WEIGHTS)
    secs = time.perf_counter() - t0
    assert m["n_items"] == n and secs < 15, secs


# --------------------------------------------------------------------------- video controls
# Blind run (grey frames) of the 8 records:
#   A1 "2 to 6" (span), A2-A5 a refusal, R1 R2 a refusal, R3 no tags.
#   relevant: tp A1, fp 0, fn A2-A5 -> P 1, R 1/5, F1 = 2 x .2 / 1.2 = 1/3
#   irrelevant: predicted A2 A3 A4 A5 R1 R2; tp R1 R2 = 2, fp 4, fn R3 -> P 1/3, R 2/3, F1 = 4/9
#   accuracy A1 R1 R2 = 3/8; f1_macro (1/3 + 4/9) / 2 = 7/18; balanced accuracy (1/5 + 2/3) / 2 = 13/30
# visual_gain: accuracy 1/2 - 3/8 = 1/8; f1_macro 8/15 - 7/18 = 13/90; balanced accuracy 7/15 - 13/30 = 1/30.
# Swapped run of A1-A5 on video v2: refusal, span, no tags, refusal, span -> refusal_rate 2/5 (no tags is no refusal).
REFUSE = full("No segment is relevant.")
BLIND = [full("2 to 6"), REFUSE, REFUSE, REFUSE, REFUSE, REFUSE, REFUSE, "no tags"]
SWAPPED = [REFUSE, full("3 to 4"), "no tags", full("Nothing here."), full("1 to 2")]


def test_control_blocks_by_hand(result):
    blind = metrics.item_table(RECORDS, BLIND)
    swapped = metrics.item_table(RECORDS[:5], SWAPPED)
    out = metrics.control_blocks(result, blind, swapped, WEIGHTS)
    b = out["control"]["blind"]
    assert b == metrics.compute_metrics(RECORDS, BLIND, WEIGHTS)  # the whole block, breakdowns included
    assert (b["relevance"]["precision_relevant"], b["relevance"]["recall_relevant"], b["relevance"]["f1_relevant"]) == pytest.approx((1, 1 / 5, 1 / 3))
    assert (b["relevance"]["precision_irrelevant"], b["relevance"]["recall_irrelevant"], b["relevance"]["f1_irrelevant"]) == pytest.approx((1 / 3, 2 / 3, 4 / 9))
    assert (b["relevance"]["accuracy"], b["relevance"]["f1_macro"]) == pytest.approx((3 / 8, 7 / 18))
    assert b["relevance"]["balanced_accuracy"] == pytest.approx(13 / 30)
    assert out["visual_gain"] == {"relevance": pytest.approx({"accuracy": 1 / 8, "f1_macro": 13 / 90, "balanced_accuracy": 1 / 30})}
    assert out["control"]["swapped"] == {"n": 5, "refusal_rate": pytest.approx(2 / 5)}
    # A control that did not run leaves no key; none at all adds nothing.
    assert set(metrics.control_blocks(result, None, swapped, WEIGHTS)) == {"control"}
    assert set(metrics.control_blocks(result, None, swapped, WEIGHTS)["control"]) == {"swapped"}
    assert set(metrics.control_blocks(result, blind, None, WEIGHTS)["control"]) == {"blind"}
    assert metrics.control_blocks(result, None, None, WEIGHTS) == {}
    # Empty swapped run: n 0, rate 0 (every key a number).
    assert metrics.swapped_block(metrics.item_table([], [])) == {"n": 0, "refusal_rate": 0.0}


def _control_files(tmp_path):
    blind = tmp_path / "blind.jsonl"
    # Another order than the records: matched by id.
    write_jsonl(blind, [{"id": r.id, "completion": c} for r, c in reversed(list(zip(RECORDS, BLIND)))])
    swapped = tmp_path / "swapped.jsonl"
    write_jsonl(swapped, [{"id": r.id, "donor": "v2", "completion": c} for r, c in zip(RECORDS[:5], SWAPPED)])
    return blind, swapped


def test_cli_metrics_with_controls(files, tmp_path, result):
    rec, pred, params = files
    blind, swapped = _control_files(tmp_path)
    out = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["metrics", "--records", str(rec), "--predictions", str(pred), "--out", str(out), "--params", str(params),
                                   "--blind-predictions", str(blind), "--swapped-predictions", str(swapped)])
    assert res.exit_code == 0, res.output
    assert "visual_gain.relevance.accuracy=0.1250" in res.output and "control.swapped.refusal_rate=0.4000" in res.output
    loaded = json.loads(out.read_text())
    assert loaded.pop("coverage")["evaluated"] == len(RECORDS)
    want = result | metrics.control_blocks(result, metrics.item_table(RECORDS, BLIND), metrics.item_table(RECORDS[:5], SWAPPED), WEIGHTS)
    assert loaded == want
    assert loaded["visual_gain"]["relevance"]["accuracy"] == pytest.approx(1 / 8)


def test_cli_metrics_control_file_errors(files, tmp_path):
    rec, pred, params = files
    blind, swapped = _control_files(tmp_path)

    def run(option, path):
        return CliRunner().invoke(app, ["metrics", "--records", str(rec), "--predictions", str(pred), "--out", str(tmp_path / "o.json"), option, str(path)])

    short = tmp_path / "short.jsonl"
    write_jsonl(short, [{"id": "A1", "completion": REFUSE}])
    res = run("--blind-predictions", short)
    assert res.exit_code == 2 and "the blind predictions must cover exactly the records" in res.output
    refusable = tmp_path / "refusable.jsonl"
    write_jsonl(refusable, [{"id": "R1", "donor": "v2", "completion": REFUSE}])
    res = run("--swapped-predictions", refusable)
    assert res.exit_code == 2 and "refusable.jsonl:1: id 'R1': the swapped control holds answerable records only" in res.output
    own = tmp_path / "own.jsonl"
    write_jsonl(own, [{"id": "A1", "donor": "v1", "completion": REFUSE}])
    res = run("--swapped-predictions", own)
    assert res.exit_code == 2 and "field 'donor' missing or the record's own video" in res.output
    assert not (tmp_path / "o.json").exists()


def test_correction_metrics_skip_refusals_without_a_correction_target():
    # Issue 17, bug 2: an evaluation-only refusal (no refusable_queries) is scored for relevance, RA-IoU
    # and explanation; its correction similarity is NaN and left out of the correction block.
    eval_only = _with(ref("E1", "shuffled", None, []), refusable_queries=[])
    recs = [ref("H1", "hard_irrelevant", "hard", ["Attribute/AttributeValue"]), eval_only]
    m = metrics.compute_metrics(recs, [full(EXPL, TARGET), full(EXPL, TARGET)], WEIGHTS)
    # Both are correct refusals with the reference explanation: relevance and RA-IoU count both.
    assert m["relevance"]["recall_irrelevant"] == 1.0 and m["ra_iou"]["mean"] == 1.0
    assert m["explanation"] == pytest.approx({"sim_irrelevant": 1.0, "sim_correct_refusals": 1.0}, abs=1e-6)
    # Correction: H1 = s(TARGET, TARGET) = 1; E1 has no target and is skipped (not counted 0).
    assert m["correction"] == pytest.approx({"sim_irrelevant": 1.0, "sim_correct_refusals": 1.0}, abs=1e-6)
    table = metrics.item_table(recs, [full(EXPL, TARGET), full(EXPL, TARGET)])
    assert np.isnan(table.corr_sim[1]) and table.corr_sim[0] == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- evaluate.protocol: official (issue #17)
# A1: the think holds an answer-like span, then two answers: official takes "4 to 8" (IoU with [2,6] = 2/6 = 1/3),
#     the default takes the last, "2 to 6" (IoU 1).
# A2: one answer, "14 to 20": IoU 0.6 under both.
# R1: a span inside the think, then a refusal: a correct refusal under both (the default's last answer is the refusal).
# R2: a refusal, then a span: official takes the refusal (correct), the default the span (wrong).
OFF_RECORDS = [ans("A1", [2, 6]), ans("A2", [10, 20]),
               ref("R1", "hard_irrelevant", "hard", ["Attribute/AttributeValue"]), ref("R2", "shuffled", None, [])]
OFF_COMPLETIONS = [
    "<think>I see <answer>2 to 6</answer></think><answer>4 to 8</answer><answer>2 to 6</answer><correction>NIL</correction>",
    full("14 to 20"),
    f"<think>It might be <answer>5 to 9</answer></think><answer>{EXPL}</answer><correction>{TARGET}</correction>",
    f"<think>I watch.</think><answer>No segment is relevant.</answer><answer>5 to 9</answer><correction>{TARGET}</correction>",
]


def test_official_parser_takes_first_answer_outside_think():
    a1, r1, r2 = OFF_COMPLETIONS[0], OFF_COMPLETIONS[2], OFF_COMPLETIONS[3]
    assert parse_completion(a1).span == (2.0, 6.0) and parse_completion_official(a1).span == (4.0, 8.0)
    assert parse_completion(r2).span == (5.0, 9.0) and parse_completion_official(r2).answer == "No segment is relevant."
    assert parse_completion_official(r1).answer == EXPL and parse_completion_official(r1).span is None
    # An answer only inside the think is no answer at all for the official parser (the default finds it).
    only_think = "<think><answer>3 to 4</answer></think>"
    assert parse_completion(only_think).span == (3.0, 4.0) and parse_completion_official(only_think).answer is None


NO_MPNET = "skip: test"


def test_official_block_by_hand():
    o = official.official_metrics(OFF_RECORDS, OFF_COMPLETIONS, encoder=NO_MPNET)
    # RA-IoU: A1 1/3, A2 .6, R1 1, R2 1 -> mean (1/3 + .6 + 2) / 4 = 11/15; R@k in percent:
    # >=.3: 4/4 = 100; >=.5: A2 R1 R2 = 75; >=.7: R1 R2 = 50
    assert o["ra_iou"] == pytest.approx({"mean": 11 / 15, "r@0.3": 100.0, "r@0.5": 75.0, "r@0.7": 50.0})
    # grounding: IoU 1/3, .6 -> mIoU 7/15 (a fraction, not a percent); >=.3: 100; >=.5: 50; >=.7: 0
    assert o["grounding"] == pytest.approx({"miou": 7 / 15, "r@0.3": 100.0, "r@0.5": 50.0, "r@0.7": 0.0})
    assert o["relevance"]["accuracy"] == 1.0 and o["relevance"]["f1_macro"] == 1.0
    assert (o["n_items"], o["n_answerable"], o["n_refusable"]) == (4, 2, 2)
    assert o["conventions"]["recall_unit"] == "percent" and o["conventions"]["judge_steps"] == "not implemented"
    # Label-weighted mean (n_ans x mean_ans + n_ref x mean_ref) / n = (2 x 7/15 + 2 x 1) / 4 = 11/15: the plain mean.
    assert (2 * (7 / 15) + 2 * 1.0) / 4 == pytest.approx(o["ra_iou"]["mean"])
    # The default block of the same completions differs where the parse does: A1 IoU 1, R2 a wrong span.
    d = metrics.compute_metrics(OFF_RECORDS, OFF_COMPLETIONS, WEIGHTS)
    assert d["ra_iou"] == pytest.approx({"mean": 2.6 / 4, "r@0.3": 3 / 4, "r@0.5": 3 / 4, "r@0.7": 2 / 4})


def test_label_weighted_mean_is_the_plain_mean():
    # On the 8-item set: answerable RA-IoU 1, .6, .4, 0, 0 (mean 2/5), refusable 1, 0, 0 (mean 1/3):
    # (5 x 2/5 + 3 x 1/3) / 8 = 3/8 = ra_iou.mean; accuracy: (5 x 3/5 + 3 x 1/3) / 8 = 1/2.
    o = official.official_metrics(RECORDS, COMPLETIONS, encoder=NO_MPNET)
    assert o["ra_iou"]["mean"] == pytest.approx((5 * 2 / 5 + 3 * 1 / 3) / 8) == pytest.approx(3 / 8)
    assert o["relevance"]["accuracy"] == pytest.approx((5 * 3 / 5 + 3 * 1 / 3) / 8)


def test_official_explanation_clips_cosine_over_think_and_answer():
    seen: list[str] = []

    def encoder(texts):
        seen.extend(texts)
        # reference -> (1, 0); a text with R1's think -> cos .6; anything else -> cos -1 (clipped to 0, not (cos+1)/2 = 0)
        return np.array([[1.0, 0.0] if t == EXPL else [0.6, 0.8] if t.startswith("It might be") else [-1.0, 0.0] for t in texts])

    o = official.official_metrics(OFF_RECORDS, OFF_COMPLETIONS, encoder=encoder)
    assert f"It might be <answer>5 to 9</answer> {EXPL}" in seen  # think + answer text
    assert "I watch. No segment is relevant." in seen
    assert o["explanation"] == pytest.approx({"sim_irrelevant": 0.3, "sim_correct_refusals": 0.3})  # (.6 + 0) / 2


def test_official_explanation_without_mpnet_is_skipped_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.delenv(official.MPNET_ENV, raising=False)
    o = official.official_metrics(OFF_RECORDS, OFF_COMPLETIONS)
    assert set(o["explanation"]) == {"skipped"}
    assert "all-mpnet-base-v2 is not available offline" in o["explanation"]["skipped"]
    assert "RARFT_MPNET_PATH" in o["explanation"]["skipped"]
    monkeypatch.setenv(official.MPNET_ENV, str(tmp_path / "nowhere"))
    assert "nowhere is not a folder" in official.official_metrics(OFF_RECORDS, OFF_COMPLETIONS)["explanation"]["skipped"]


def test_default_protocol_block_is_unchanged(monkeypatch):
    monkeypatch.delenv(official.MPNET_ENV, raising=False)
    comps = {"m": COMPLETIONS}
    default, items = score(RECORDS, comps, WEIGHTS, [0.3, 0.5, 0.7])
    with_official, items_o = score(RECORDS, comps, WEIGHTS, [0.3, 0.5, 0.7], protocol="official")
    assert "official" not in default["m"] and "official" in with_official["m"]
    dump = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
    assert dump(default["m"]) == dump({k: v for k, v in with_official["m"].items() if k != "official"})
    assert dump(default["m"]) == dump(metrics.compute_metrics(RECORDS, COMPLETIONS, WEIGHTS))
    assert items.equals(items_o)


def test_cli_metrics_protocol_official(files, tmp_path, monkeypatch):
    monkeypatch.delenv(official.MPNET_ENV, raising=False)
    rec, pred, params = files
    base = ["metrics", "--records", str(rec), "--predictions", str(pred), "--params", str(params)]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "d.json")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "o.json"), "--protocol", "official"])
    assert res.exit_code == 0, res.output
    d, o = (json.loads((tmp_path / f).read_text()) for f in ("d.json", "o.json"))
    assert "official" not in d and {k: v for k, v in o.items() if k != "official"} == d
    assert o["official"]["ra_iou"]["r@0.3"] == pytest.approx(50.0)  # 4 of 8 items
    assert "skipped" in o["official"]["explanation"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x.json"), "--protocol", "paper"])
    assert res.exit_code != 0 and "--protocol" in res.output
