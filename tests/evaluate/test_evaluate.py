"""Stage evaluate on real parts: synthetic videos rendered and decoded by ffmpeg,
RIQ records from the real builder, and two real tiny Qwen2.5-VL checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.io import InputError, read_jsonl, write_jsonl
from pipeline.core.prompt import parse_completion
from pipeline.core.params import (
    FramesParams,
    Params,
    RiqParams,
    SyntheticParams,
    TinyModelParams,
)
from pipeline.data.frames import extract_dir
from pipeline.data.synthetic import render_dataset
from pipeline.evaluate import inference
from pipeline.evaluate.metrics import read_riq
from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer
from pipeline.model.video_inputs import batch_inputs, load_policy, prompt_text
from pipeline.riq.build import build_riq

MAX_NEW = 8


def _diversify(model, seed: int) -> None:
    """Redraw the weights larger. Freshly initialised (std 0.02, tied embeddings), the tiny
    model greedily repeats the prompt's last token whatever the video; with larger weights
    its output depends on the video and the query, so comparing completions means something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("eval")
    syn = SyntheticParams(n_videos=3, min_duration=4.0, max_duration=6.0, min_events=2, max_events=2, seed=3)
    logs, failures = render_dataset(syn, root / "raw", workers=2)
    assert not failures
    write_jsonl(root / "raw" / "annotations.jsonl", logs)
    extract_dir(root / "raw" / "videos", root / "frames", FramesParams(), workers=2, progress=False)
    build_riq(RiqParams(test_fraction=0.34, seed=0), root / "raw" / "annotations.jsonl", root / "frames", root / "riq", root / "stats.json")
    records = read_riq(root / "riq" / "eval" / "synthetic.jsonl") + read_riq(root / "riq" / "train.jsonl")
    # One file with every record: several videos, both task types, the shuffled kind.
    write_jsonl(root / "riq" / "all.jsonl", records)

    tokenizer = train_tokenizer([r.problem + " " + r.reference_answer for r in records], vocab_size=400)
    models = {}
    for name, seed in (("base", 0), ("trained", 1)):
        model = build_tiny_model(tokenizer, TinyModelParams(vocab_size=400, seed=seed))
        _diversify(model, seed)
        model.save_pretrained(root / name)
        build_processor(tokenizer).save_pretrained(root / name)
        models[name] = root / name
    return {"root": root, "records": records, "riq": root / "riq" / "all.jsonl", **models}


def test_fixture_covers_both_classes_and_several_videos(data):
    recs = data["records"]
    assert len({r.video for r in recs}) == 3
    assert {r.task_type for r in recs} == {"answerable", "refusable"}
    assert all(Path(r.frames_path).is_file() for r in recs)


def test_plan_batches_groups_queries_of_a_video():
    from pipeline.riq.schema import RiqRecord

    def rec(i, v):
        return RiqRecord(id=f"r{i}", video=v, video_path="x.mp4", frames_path=f"{v}.npz", duration=10, problem="q",
                         task_type="answerable", kind="answerable", gt_answers=[{"answer": [1, 2]}],
                         reference_answer="1.00 to 2.00", contrast_answer="none", source="t")

    recs = [rec(0, "a"), rec(1, "b"), rec(2, "a"), rec(3, "c"), rec(4, "b")]
    assert inference.plan_batches(recs, 2) == [[0, 2], [1, 4], [3]]


def test_grouped_inputs_equal_batch_inputs(data):
    """Preprocessing each video once and tiling it gives exactly the tensors of batch_inputs on the full batch."""
    _, processor = load_policy(data["base"])
    recs = data["records"]
    idxs = inference.plan_batches(recs, 7)[0]
    batch = [recs[i] for i in idxs]
    assert len({r.video for r in batch}) >= 2, "the batch must span videos"
    prompts = [prompt_text(processor, r.problem) for r in batch]
    got = inference.grouped_inputs(processor, prompts, batch, inference.VideoCache(processor))
    from pipeline.core.frames_cache import load_frames

    want = batch_inputs(processor, prompts, [load_frames(r.frames_path) for r in batch])
    assert set(got) == {k for k, v in want.items() if isinstance(v, torch.Tensor)}
    for key, value in got.items():
        assert torch.equal(value, want[key]), key


def test_grouped_batches_match_one_by_one_generation(data):
    """Left padding and video reuse change nothing: batched greedy == one query at a time."""
    model, processor = load_policy(data["base"])
    recs = data["records"][:9]
    batched = inference.generate(model, processor, recs, batch_size=5, max_new_tokens=MAX_NEW, progress=False)
    single = inference.generate(model, processor, recs, batch_size=1, max_new_tokens=MAX_NEW, progress=False, grouped=False)
    assert [p["id"] for p in batched] == [r.id for r in recs]
    assert batched == single
    assert len({p["completion"] for p in batched}) >= 3, "completions should differ across queries"


def test_missing_frames_path_is_a_clear_error(data):
    model, processor = load_policy(data["base"])
    rec = data["records"][0].model_copy(update={"frames_path": None})
    with pytest.raises(InputError, match=f"record {rec.id}: frames_path"):
        inference.generate(model, processor, [rec], batch_size=1, max_new_tokens=4, progress=False)


@pytest.fixture(scope="module")
def evaluated(data) -> dict:
    """The stage's own entry point, with a params file as DVC passes it."""
    from stages.evaluate import main

    out = data["root"] / "run"
    params = Params.model_validate({"evaluate": {"max_new_tokens": MAX_NEW, "batch_size": 4}})
    out.mkdir()
    (out / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    main(["--base", str(data["base"]), "--trained", str(data["trained"]), "--riq", str(data["riq"]),
          "--out", str(out / "eval"), "--metrics", str(out / "metrics.json"), "--params", str(out / "params.yaml"),
          "--events", str(data["root"] / "raw" / "annotations.jsonl")])
    return {"out": out, "eval": out / "eval", "params": params}


def test_predictions_one_line_per_record_and_deterministic(data, evaluated):
    ids = [r.id for r in data["records"]]
    rows = {}
    for name in ("base", "trained"):
        rows[name] = [obj for _, obj in read_jsonl(evaluated["eval"] / f"predictions_{name}.jsonl")]
        assert [r["id"] for r in rows[name]] == ids
        assert all(set(r) == {"id", "completion"} and isinstance(r["completion"], str) for r in rows[name])
    assert rows["base"] != rows["trained"]
    # A second run (another batch size, so other batch compositions) predicts the same.
    again = inference.predict(data["base"], data["records"], batch_size=3, max_new_tokens=MAX_NEW, progress=False)
    assert again == rows["base"]


def test_cli_predict_and_metrics_agree_with_the_stage(data, evaluated, tmp_path):
    """`rarft predict` writes what `rarft metrics --predictions` reads, and both agree with the stage."""
    runner = CliRunner()
    preds = tmp_path / "preds.jsonl"
    res = runner.invoke(app, ["predict", "--model", str(data["base"]), "--records", str(data["riq"]), "--out", str(preds),
                              "--batch-size", "4", "--max-new-tokens", str(MAX_NEW)])
    assert res.exit_code == 0, res.output
    assert preds.read_text() == (evaluated["eval"] / "predictions_base.jsonl").read_text()
    res = runner.invoke(app, ["metrics", "--records", str(data["riq"]), "--predictions", str(preds),
                              "--out", str(tmp_path / "m.json"), "--params", str(evaluated["out"] / "params.yaml")])
    assert res.exit_code == 0, res.output
    stage = json.loads((evaluated["out"] / "metrics.json").read_text())
    # Without the control files, the block without control/visual_gain (with them: test_cli_metrics_computes_the_controls_from_files).
    assert json.loads((tmp_path / "m.json").read_text()) == {k: v for k, v in stage["base"].items() if k not in ("control", "visual_gain")}


def test_metrics_json_structure(data, evaluated):
    text = (evaluated["out"] / "metrics.json").read_text()
    metrics = json.loads(text)
    assert text == json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    assert list(metrics) == ["base", "trained"]
    required = [
        "reward.total", "format_rate", "relevance.accuracy", "relevance.f1_relevant", "relevance.f1_irrelevant",
        "relevance.f1_macro", "ra_iou.mean", "ra_iou.r@0.3", "ra_iou.r@0.5", "ra_iou.r@0.7",
        "grounding.miou", "grounding.r@0.3", "grounding.r@0.5", "grounding.r@0.7", "n_items",
    ] + [f"reward.{name}" for name in evaluated["params"].train.reward_weights]
    for block in metrics.values():
        for key in required:
            node = block
            for part in key.split(".", 1) if "." in key else [key]:
                node = node[part]
            assert isinstance(node, (int, float)), key
        assert block["n_items"] == len(data["records"])


def test_items_table_and_plot_csvs(data, evaluated):
    out = evaluated["eval"]
    items = pd.read_csv(out / "items.csv")
    assert len(items) == 2 * len(data["records"])
    for col in ("model", "id", "task_type", "kind", "difficulty", "categories", "relevant_pred", "iou", "ra_iou",
                "reward_format", "reward_refuse_iou", "reward_explain", "reward_correction", "reward_total"):
        assert col in items.columns, col
    # items.csv agrees with metrics.json on the headline number.
    metrics = json.loads((evaluated["out"] / "metrics.json").read_text())
    for name in ("base", "trained"):
        assert items.loc[items["model"] == name, "ra_iou"].mean() == pytest.approx(metrics[name]["ra_iou"]["mean"], abs=1e-5)

    expected = {
        "by_difficulty": ["difficulty", "n", "ra_iou_mean", "accuracy"],
        "by_category": ["category", "n", "accuracy", "ra_iou_mean"],
        "confusion": ["actual", "predicted"],
    }
    for name in ("base", "trained"):
        for plot, cols in expected.items():
            df = pd.read_csv(out / "plots" / f"{plot}_{name}.csv")
            assert list(df.columns) == cols, plot
        conf = pd.read_csv(out / "plots" / f"confusion_{name}.csv")
        assert len(conf) == len(data["records"])
        assert set(conf["actual"]) == {"relevant", "irrelevant"}
        diff = pd.read_csv(out / "plots" / f"by_difficulty_{name}.csv")
        assert diff["n"].sum() == len(data["records"])
    hist = pd.read_csv(out / "plots" / "iou_hist.csv")
    assert list(hist.columns) == ["iou", "base", "trained"]
    n_answerable = sum(r.task_type == "answerable" for r in data["records"])
    assert hist["base"].sum() == hist["trained"].sum() == n_answerable
    report = (out / "report.md").read_text()
    assert "ra_iou.mean" in report and "base" in report and "trained" in report
    assert (out / "skipped.jsonl").read_text() == ""


def test_outputs_from_known_completions(data, tmp_path):
    """Hand-checkable completions: 'perfect' answers every item right; 'spans' gives the
    true span on answerable items and a span on every refusable one (all refusals wrong)."""
    from pipeline.core.prompt import format_span
    from pipeline.evaluate.run import score, write_outputs

    recs = data["records"]
    span_answer = "<think>t</think> <answer>{}</answer> <correction>NIL</correction>"
    refusal = "<think>t</think> <answer>{}</answer> <correction>{}</correction>"
    spans = [span_answer.format(format_span(*(r.span or (0.0, 1.0)))) for r in recs]
    perfect = [s if r.span else refusal.format(r.explanation, r.correction_target) for r, s in zip(recs, spans)]
    params = Params()
    results, items = score(recs, {"spans": spans, "perfect": perfect}, dict(params.train.reward_weights), [0.3, 0.5, 0.7])
    write_outputs(tmp_path / "eval", tmp_path / "metrics.json", results, items)

    n, n_ans = len(recs), sum(r.task_type == "answerable" for r in recs)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["perfect"]["relevance"]["accuracy"] == 1.0
    assert metrics["perfect"]["ra_iou"]["mean"] == 1.0
    assert metrics["perfect"]["format_rate"] == 1.0
    assert metrics["spans"]["relevance"]["accuracy"] == pytest.approx(n_ans / n)
    assert metrics["spans"]["ra_iou"]["mean"] == pytest.approx(n_ans / n)
    assert metrics["spans"]["grounding"]["miou"] == 1.0

    plots = tmp_path / "eval" / "plots"
    diff = pd.read_csv(plots / "by_difficulty_spans.csv").set_index("difficulty")
    assert diff.loc["original", "accuracy"] == 1.0 and diff.loc["original", "ra_iou_mean"] == 1.0
    assert diff.loc["original", "n"] == n_ans
    assert (diff.drop(index="original")[["accuracy", "ra_iou_mean"]] == 0).all().all()
    assert (pd.read_csv(plots / "by_difficulty_perfect.csv")["accuracy"] == 1.0).all()
    conf = pd.read_csv(plots / "confusion_spans.csv")
    assert (conf["predicted"] == "relevant").all()
    assert (conf["actual"] == "irrelevant").sum() == n - n_ans
    conf = pd.read_csv(plots / "confusion_perfect.csv")
    assert (conf["actual"] == conf["predicted"]).all()
    cats = pd.read_csv(plots / "by_category_spans.csv")
    assert (cats["accuracy"] == 0).all() and cats["n"].sum() == sum(len(r.categories) for r in recs)
    hist = pd.read_csv(plots / "iou_hist.csv")
    assert hist["spans"].tolist() == [0] * 9 + [n_ans]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| relevance.accuracy" in report


def test_select_records_skips_missing_frames_with_reason_and_caps(data, tmp_path):
    from pipeline.evaluate.run import select_records

    recs = data["records"][:4]
    broken = [recs[0].model_copy(update={"frames_path": None}),
              recs[1].model_copy(update={"frames_path": str(tmp_path / "gone.npz")}), *recs[2:]]
    keep, skipped = select_records(broken, max_items=0)
    assert [r.id for r in keep] == [r.id for r in recs[2:]]
    assert skipped == [{"id": recs[0].id, "reason": "frames_path: missing"},
                       {"id": recs[1].id, "reason": f"frames_path: {tmp_path / 'gone.npz'} not found"}]
    keep, skipped = select_records(recs, max_items=3)
    assert [r.id for r in keep] == [r.id for r in recs[:3]] and skipped == []


def evaluated_params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(Params().model_dump()))
    return path


def test_set_without_videos_reports_zero_evaluable_not_a_crash(data, tmp_path, caplog):
    """An imported set whose videos were never downloaded: 0 evaluable / N quarantined, every output written."""
    import logging

    from stages.evaluate import main

    recs = data["records"][:4]
    write_jsonl(tmp_path / "imported.jsonl", [r.model_copy(update={"frames_path": None, "video": "gone"}) for r in recs])
    with caplog.at_level(logging.INFO):
        main(["--base", str(tmp_path / "no-model"), "--trained", str(tmp_path / "no-model"), "--riq", str(tmp_path / "imported.jsonl"),
              "--out", str(tmp_path / "eval"), "--metrics", str(tmp_path / "m.json"), "--frames", str(data["root"] / "frames"),
              "--set", "charades", "--params", str(evaluated_params(tmp_path))])
    assert "charades: 0 evaluable / 4 quarantined (no video)" in caplog.text
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert list(metrics) == ["base", "trained"] and metrics["base"]["n_items"] == 0
    # Issue 17, bug 2: the metrics file says how much of the set a score covers.
    assert metrics["base"]["coverage"] == {"records": 4, "evaluated": 0, "share_evaluated": 0.0, "skipped_no_video": 4,
                                           "evaluation_only": 0, "correction_scored": 0}
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["skipped"] == 4
    skipped = [obj for _, obj in read_jsonl(tmp_path / "eval" / "skipped.jsonl")]
    assert [s["id"] for s in skipped] == [r.id for r in recs] and all("gone.npz not found" in s["reason"] for s in skipped)
    assert "0 evaluable / 4 quarantined" in (tmp_path / "eval" / "report.md").read_text()


def test_records_without_frames_path_are_joined_with_the_frame_cache(data, evaluated, tmp_path):
    from pipeline.evaluate.run import join_frames, select_records

    bare = [r.model_copy(update={"frames_path": None}) for r in data["records"][:3]]
    keep, skipped = select_records(join_frames(bare, data["root"] / "frames"), 0)
    assert [r.frames_path for r in keep] == [r.frames_path for r in data["records"][:3]] and skipped == []


def test_new_metrics_and_item_columns(data, evaluated):
    metrics = json.loads((evaluated["out"] / "metrics.json").read_text())
    for block in metrics.values():
        assert block["conventions"] == {"threshold_op": ">=", "rt_iou_source": "rules+sbert-prototype"}
        for key in ("explanation", "correction"):
            assert set(block[key]) == {"sim_irrelevant", "sim_correct_refusals"}
        assert set(block["rt_iou"]) == {"mean", "mean_correct_refusals"}
    items = pd.read_csv(evaluated["eval"] / "items.csv")
    for col in ("expl_sim", "corr_sim", "rt_iou", "pred_categories"):
        assert col in items.columns
    assert items.loc[items["task_type"] == "answerable", "expl_sim"].isna().all()
    parquet = pd.read_parquet(evaluated["eval"] / "items.parquet")
    assert len(parquet) == len(items) and list(parquet["categories"].iloc[0]) == (
        items["categories"].iloc[0].split(";") if isinstance(items["categories"].iloc[0], str) else [])
    assert "rt_iou.mean" in (evaluated["eval"] / "report.md").read_text()


# --------------------------------------------------------------------------- video controls
def _logs(data) -> dict:
    from pipeline.core.events import read_event_logs

    return read_event_logs(data["root"] / "raw" / "annotations.jsonl")


def test_blind_frames_give_the_same_video_tokens(data):
    """Grey frames: same frame count, size, timestamps and fps, so the same grid and number of
    <|video_pad|> tokens; the pixels carry nothing (one value per channel)."""
    from pipeline.core.frames_cache import load_frames
    from pipeline.evaluate.controls import GREY, blind_frames

    _, processor = load_policy(data["base"])
    rec = data["records"][0]
    prompt = prompt_text(processor, rec.problem)
    true, n_true = inference.VideoCache(processor).get(rec, prompt)
    blind, n_blind = inference.VideoCache(processor, frames_fn=blind_frames).get(rec, prompt)
    assert n_blind == n_true > 0
    assert torch.equal(blind["video_grid_thw"], true["video_grid_thw"])
    assert blind["pixel_values_videos"].shape == true["pixel_values_videos"].shape
    assert torch.equal(blind["second_per_grid_ts"], true["second_per_grid_ts"])
    # Normalised per colour channel: grey is one value per channel; the true video has many.
    assert blind["pixel_values_videos"].unique().numel() <= 3 < true["pixel_values_videos"].unique().numel()
    vf, grey = load_frames(rec.frames_path), blind_frames(load_frames(rec.frames_path))
    assert grey.frames.shape == vf.frames.shape and grey.frames.dtype == np.uint8 and (grey.frames == GREY).all()
    assert np.array_equal(grey.timestamps, vf.timestamps) and grey.meta == vf.meta


def test_controls_stay_grouped_one_vision_pass_per_video(data, monkeypatch):
    """Each control run reads and encodes each of its videos once, and its grouped batches
    give what one query at a time through plain batch_inputs gives on the same (grey / donor) frames."""
    from pipeline.core import frames_cache
    from pipeline.evaluate.controls import assign_donors, blind_frames

    model, processor = load_policy(data["base"])
    recs = data["records"]
    calls = {"vision": 0, "read": 0}
    encode, read = model.get_video_features, frames_cache.load_frames

    def counting_encode(*args, **kwargs):
        calls["vision"] += 1
        return encode(*args, **kwargs)

    def counting_read(*args, **kwargs):
        calls["read"] += 1
        return read(*args, **kwargs)

    monkeypatch.setattr(model, "get_video_features", counting_encode)
    monkeypatch.setattr(frames_cache, "load_frames", counting_read)
    donors = assign_donors(recs, 0, logs=_logs(data))
    swapped = donors.records(recs)
    runs = {"blind": (recs, blind_frames), "swapped": (swapped, None)}
    out = {}
    for name, (rs, fn) in runs.items():
        calls.update(vision=0, read=0)
        out[name] = inference.generate(model, processor, rs, batch_size=4, max_new_tokens=MAX_NEW, progress=False, frames_fn=fn)
        n_videos = len({r.frames_path for r in rs})
        assert n_videos >= 2 and calls == {"vision": n_videos, "read": n_videos}, (name, calls)
    assert len(set(donors.donor.values())) == len({r.frames_path for r in swapped})
    monkeypatch.setattr(model, "get_video_features", encode)
    for name, (rs, fn) in runs.items():
        single = inference.generate(model, processor, rs, batch_size=1, max_new_tokens=MAX_NEW, progress=False, grouped=False, frames_fn=fn)
        assert out[name] == single, name
    true = inference.generate(model, processor, recs, batch_size=4, max_new_tokens=MAX_NEW, progress=False)
    assert out["blind"] != true, "grey frames should change some completion of the diversified model"


def _rec(rid, video, problem, task_type="answerable"):
    from pipeline.riq.schema import RiqRecord

    refusable = task_type == "refusable"
    return RiqRecord(id=rid, video=video, video_path=f"{video}.mp4", frames_path=f"{video}.npz", duration=10, problem=problem,
                     task_type=task_type, kind="shuffled" if refusable else "answerable",
                     gt_answers=[{"answer": [-1, -1] if refusable else [1, 2]}],
                     refusable_queries=[{"problem": "x", "gt_answers": [{"answer": [1, 2]}]}] if refusable else [],
                     reference_answer="r", contrast_answer="c", source="t")


def test_derangement_never_keeps_a_video_nor_picks_a_donor_with_the_query(data):
    from pipeline.core.events import VideoLog
    from pipeline.evaluate.controls import assign_donors, normalize_query
    from pipeline.riq.synthetic import matching_events, parse_query

    # The real fixture, with its event logs: every answerable record gets another video, none of
    # whose answerable queries is its query and none of whose events matches it; seeded.
    recs, logs = data["records"], _logs(data)
    donors = assign_donors(recs, 0, logs=logs)
    answerable = [r for r in recs if r.task_type == "answerable"]
    assert sorted(donors.donor) == sorted(r.id for r in answerable) and donors.no_donor == []
    for r in answerable:
        d = donors.donor[r.id]
        assert d != r.video
        assert normalize_query(r.problem) not in {normalize_query(x.problem) for x in recs if x.video == d and x.task_type == "answerable"}
        assert matching_events(parse_query(r.problem), logs[d]) == [], (r.problem, d)
        assert donors.frames[d] == next(x.frames_path for x in recs if x.video == d)
    assert assign_donors(recs, 0, logs=logs) == donors

    # Hand-made: 4 videos; the seeded cycle is a derangement (each video donates to exactly one other).
    many = [_rec(f"{v}{i}", v, f"the small red square moves left {v}{i}") for v in "abcd" for i in range(2)]
    for seed in range(20):
        d = assign_donors(many, seed).donor
        per_video = {v: {d[f"{v}{i}"] for i in range(2)} for v in "abcd"}
        assert all(len(s) == 1 and v not in s for v, s in per_video.items())
        assert sorted(next(iter(s)) for s in per_video.values()) == list("abcd"), seed  # a permutation
    assert len({tuple(sorted(assign_donors(many, seed).donor.items())) for seed in range(20)}) > 1

    # The same query on every other video but one: only that one can donate (text check, case/space-insensitive).
    q = "the small red square moves left"
    same = [_rec("a0", "a", q), _rec("b0", "b", "The  small red square moves left."), _rec("c0", "c", q + " "),
            _rec("d0", "d", "the large blue square grows"), _rec("d1", "d", q, "refusable")]
    for seed in range(10):
        assert assign_donors(same, seed).donor["a0"] == "d"  # d's refusable record with the query does not count
    # Event logs: d's text differs, but its log shows a small red square moving left -> not a donor either.
    log = VideoLog(video_id="d", video="videos/d.mp4", duration=10, width=64, height=48, fps=10, background="black",
                   objects=[{"id": "o1", "color": "red", "shape": "square", "size": "small"}],
                   events=[{"id": "e1", "object_id": "o1", "action": "moves left", "start": 1, "end": 3}])
    d = assign_donors(same, 0, logs={"d": log})
    assert "a0" not in d.donor and "a0" in d.no_donor
    # One video only: nobody can donate.
    assert assign_donors([_rec("a0", "a", q)], 0).no_donor == ["a0"]


def test_metrics_json_holds_controls_and_visual_gain(data, evaluated):
    metrics = json.loads((evaluated["out"] / "metrics.json").read_text())
    n_answerable = sum(r.task_type == "answerable" for r in data["records"])
    items = pd.read_csv(evaluated["eval"] / "items.csv")
    for name in ("base", "trained"):
        block = metrics[name]
        blind = block["control"]["blind"]
        assert set(blind) == set(block) - {"control", "visual_gain", "coverage"}  # the same metric block (coverage: of the set, once)
        assert blind["n_items"] == block["n_items"] == len(data["records"])
        for k in ("accuracy", "f1_macro", "balanced_accuracy"):
            assert block["visual_gain"]["relevance"][k] == block["relevance"][k] - blind["relevance"][k]
        sw = block["control"]["swapped"]
        assert set(sw) == {"n", "refusal_rate"} and sw["n"] == n_answerable
        preds = [obj for _, obj in read_jsonl(evaluated["eval"] / f"predictions_{name}_swapped.jsonl")]
        refused = sum(not p.relevant and p.answer is not None for p in map(parse_completion, (x["completion"] for x in preds)))
        assert sw["refusal_rate"] == pytest.approx(refused / n_answerable)
        assert {p["id"] for p in preds} == {r.id for r in data["records"] if r.task_type == "answerable"}
        video = {r.id: r.video for r in data["records"]}
        assert all(set(p) == {"id", "donor", "completion"} and p["donor"] != video[p["id"]] for p in preds)
        blind_preds = [obj for _, obj in read_jsonl(evaluated["eval"] / f"predictions_{name}_blind.jsonl")]
        assert [p["id"] for p in blind_preds] == [r.id for r in data["records"]]
        # items.csv keeps the control predictions, one row per model and record as before.
        rows = items[items["model"] == name]
        assert rows["blind_ra_iou"].mean() == pytest.approx(blind["ra_iou"]["mean"], abs=1e-5)
        assert rows["swapped_refused"].dropna().astype(bool).mean() == pytest.approx(sw["refusal_rate"])
        assert rows.loc[rows["task_type"] == "refusable", "swapped_video"].isna().all()
    summary = json.loads((evaluated["eval"] / "summary.json").read_text())
    assert (summary["swapped"], summary["swapped_without_donor"]) == (n_answerable, 0)
    report = (evaluated["eval"] / "report.md").read_text()
    assert "## Video controls" in report and "| visual_gain.relevance.accuracy" in report and "| control.swapped.refusal_rate" in report


def test_cli_metrics_computes_the_controls_from_files(data, evaluated, tmp_path):
    """`rarft metrics` with the control prediction files reproduces each model's whole block, controls included."""
    stage = json.loads((evaluated["out"] / "metrics.json").read_text())
    runner = CliRunner()
    for name in ("base", "trained"):
        ev = evaluated["eval"]
        res = runner.invoke(app, ["metrics", "--records", str(data["riq"]), "--predictions", str(ev / f"predictions_{name}.jsonl"),
                                  "--blind-predictions", str(ev / f"predictions_{name}_blind.jsonl"),
                                  "--swapped-predictions", str(ev / f"predictions_{name}_swapped.jsonl"),
                                  "--out", str(tmp_path / f"{name}.json"), "--params", str(evaluated["out"] / "params.yaml")])
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / f"{name}.json").read_text()) == stage[name]


def test_each_control_can_be_turned_off(data, tmp_path):
    from stages.evaluate import main

    params = Params.model_validate({"evaluate": {"max_new_tokens": MAX_NEW, "max_items": 6, "controls": {"blind": False}}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    main(["--base", str(data["base"]), "--trained", str(data["base"]), "--riq", str(data["riq"]), "--out", str(tmp_path / "eval"),
          "--metrics", str(tmp_path / "m.json"), "--params", str(tmp_path / "params.yaml")])
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["base"]["control"]) == {"swapped"} and "visual_gain" not in metrics["base"]
    assert not (tmp_path / "eval" / "predictions_base_blind.jsonl").exists()
    assert (tmp_path / "eval" / "predictions_base_swapped.jsonl").exists()
    assert "## Video controls" in (tmp_path / "eval" / "report.md").read_text()

    params = Params.model_validate({"evaluate": {"max_new_tokens": MAX_NEW, "max_items": 6, "controls": {"blind": False, "swapped": False}}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    main(["--base", str(data["base"]), "--trained", str(data["base"]), "--riq", str(data["riq"]), "--out", str(tmp_path / "eval2"),
          "--metrics", str(tmp_path / "m2.json"), "--params", str(tmp_path / "params.yaml")])
    metrics = json.loads((tmp_path / "m2.json").read_text())
    assert "control" not in metrics["base"] and "visual_gain" not in metrics["base"]
    assert sorted(p.name for p in (tmp_path / "eval2").glob("predictions_*")) == ["predictions_base.jsonl", "predictions_trained.jsonl"]
    assert "## Video controls" not in (tmp_path / "eval2" / "report.md").read_text()
