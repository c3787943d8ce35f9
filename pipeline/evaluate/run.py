"""Stage evaluate: greedy predictions of the base and the trained model on one test
set, scored with the same rewards and metrics as training.

Writes, under ``out_dir``: ``predictions_<model>.jsonl`` (``{"id", "completion"}``,
what ``rarft metrics --predictions`` reads; with the video controls (``evaluate.controls``)
also ``predictions_<model>_blind.jsonl`` and ``predictions_<model>_swapped.jsonl``
(``{"id", "donor", "completion"}``), read by ``--blind-predictions`` / ``--swapped-predictions``), ``items.csv (one row per model and
item; also ``items.parquet`` when pyarrow is installed), ``plots/*.csv`` (for ``dvc
plots``), ``report.md``, ``summary.json`` (evaluable / skipped counts) and
``skipped.jsonl`` (records that could not be evaluated, with the reason); with
``evaluate.judge``, ``judge_<model>.jsonl``; and ``metrics_path`` =
``{"base": {...}, "trained": {...}}``. A set none of whose videos has frames
(an imported set whose videos were not downloaded) writes its outputs with
0 items and says so; it is not an error.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.core.frames_cache import frames_path
from pipeline.core.io import InputError, atomic_path, write_json, write_jsonl
from pipeline.core.params import Params
from pipeline.evaluate import metrics as M
from pipeline.core.events import read_event_logs
from pipeline.evaluate.controls import assign_donors, blind_frames
from pipeline.evaluate.inference import predict_runs
from pipeline.evaluate.official import official_metrics
from pipeline.evaluate.plots import write_plots, write_report
from pipeline.riq.schema import RiqRecord
from pipeline.train import rewards

log = logging.getLogger(__name__)

ITEM_COLUMNS = (
    "model", "id", "task_type", "kind", "difficulty", "categories", "has_answer", "relevant_pred",
    "pred_start", "pred_end", "iou", "ra_iou", "expl_sim", "corr_sim", "rt_iou", "pred_categories",
)
REWARD_COLUMNS = tuple(f"reward_{k}" for k in (*rewards.REWARDS, "total"))
# The video controls of the same model and record (empty when the control did not run or,
# for swapped, on refusable records and answerable ones without a donor).
BLIND_COLUMNS = ("has_answer", "relevant_pred", "pred_start", "pred_end", "iou", "ra_iou")
CONTROL_COLUMNS = (*(f"blind_{k}" for k in BLIND_COLUMNS), "swapped_video", "swapped_has_answer", "swapped_relevant_pred", "swapped_refused")


@dataclass
class Controls:
    """Completions of the video controls, per model: ``blind`` one per record (grey frames),
    ``swapped`` one per ``swapped_records`` entry (answerable records on their ``donor`` video)."""

    blind: dict[str, list[str]] | None = None
    swapped: dict[str, list[str]] | None = None
    swapped_records: list[RiqRecord] = field(default_factory=list)
    donor: dict[str, str] = field(default_factory=dict)


def join_frames(records: Sequence[RiqRecord], frames_dir: str | Path | None) -> list[RiqRecord]:
    """Give records without ``frames_path`` the frame cache's ``<video>.npz`` (imported sets are often written without it)."""
    if frames_dir is None:
        return list(records)
    return [r if r.frames_path else r.model_copy(update={"frames_path": str(frames_path(frames_dir, r.video))}) for r in records]


def select_records(records: Sequence[RiqRecord], max_items: int) -> tuple[list[RiqRecord], list[dict]]:
    """Records with a readable frames file (the first ``max_items`` of them when > 0), and the skipped ones."""
    keep, skipped = [], []
    for rec in records:
        if not rec.frames_path:
            skipped.append({"id": rec.id, "reason": "frames_path: missing"})
        elif not Path(rec.frames_path).is_file():
            skipped.append({"id": rec.id, "reason": f"frames_path: {rec.frames_path} not found"})
        else:
            keep.append(rec)
    return (keep[:max_items] if max_items else keep), skipped


def item_rows(model: str, table: M.ItemTable, weights) -> list[dict]:
    rows = []
    for row in M.rows_from_table(table, weights):
        out = {"model": model, **{k: row.get(k) for k in ITEM_COLUMNS[1:]}}
        out["categories"] = ";".join(row["categories"])
        out["pred_categories"] = ";".join(row["pred_categories"])
        out |= {f"reward_{k}": row[k] for k in (*table.rewards, "total") if k in row}
        rows.append(out)
    return rows


def add_control_columns(rows: list[dict], blind: M.ItemTable | None, swapped: M.ItemTable | None, donor: Mapping[str, str]) -> None:
    """The blind and swapped results of each row's record, as ``blind_*`` / ``swapped_*`` columns."""
    if blind is not None:
        for row, b in zip(rows, M.rows_from_table(blind)):
            row |= {f"blind_{k}": b[k] for k in BLIND_COLUMNS}
    if swapped is not None:
        at = {row["id"]: row for row in rows}
        for i, rid in enumerate(swapped.ids):
            at[rid] |= {"swapped_video": donor[rid], "swapped_has_answer": bool(swapped.has_answer[i]),
                        "swapped_relevant_pred": bool(swapped.pred_relevant[i]), "swapped_refused": bool(swapped.pred_irrelevant[i])}


def score(records: Sequence[RiqRecord], completions: Mapping[str, Sequence[str]], weights: Mapping[str, float],
          thresholds: Sequence[float], threshold_op: str = ">=", controls: Controls | None = None,
          protocol: str = "rarft") -> tuple[dict, pd.DataFrame]:
    """Metrics per model and the per-item table (completions: model name -> one per record, in order);
    with ``controls``, each model's block gains ``control`` and ``visual_gain`` (metrics.control_blocks);
    with ``protocol`` 'official', an ``official`` block beside the default one (pipeline/evaluate/official.py)."""
    controls = controls or Controls()
    results, rows = {}, []
    for name, comps in completions.items():
        table = M.item_table(records, comps)
        results[name] = M.metrics_from_table(table, weights, thresholds, threshold_op)
        blind = None if controls.blind is None else M.item_table(records, controls.blind[name])
        swapped = None if controls.swapped is None else M.item_table(controls.swapped_records, controls.swapped[name])
        results[name] |= M.control_blocks(results[name], blind, swapped, weights, thresholds, threshold_op)
        if protocol == "official":
            results[name]["official"] = official_metrics(records, comps, thresholds, threshold_op)
        model_rows = item_rows(name, table, weights)
        add_control_columns(model_rows, blind, swapped, controls.donor)
        rows += model_rows
    return results, pd.DataFrame(rows, columns=[*ITEM_COLUMNS, *REWARD_COLUMNS, *CONTROL_COLUMNS])


def write_outputs(out_dir: str | Path, metrics_path: str | Path, results: dict, items: pd.DataFrame, notes: Sequence[str] = ()) -> None:
    """items.csv (and items.parquet with pyarrow), plots/*.csv, report.md under ``out_dir``, and the metrics file."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "items.csv", suffix=".csv") as tmp:
        items.to_csv(tmp, index=False, float_format="%.6g")
    items = items.assign(categories=[c.split(";") if c else [] for c in items["categories"]],
                         pred_categories=[c.split(";") if c else [] for c in items["pred_categories"]])
    if importlib.util.find_spec("pyarrow") is not None:
        with atomic_path(out_dir / "items.parquet", suffix=".parquet") as tmp:
            items.to_parquet(tmp, index=False)
    models = list(results)
    write_plots(items, out_dir / "plots", models)
    write_report(out_dir / "report.md", results, items, models, notes)
    write_json(metrics_path, results)


def summary_line(name: str, summary: Mapping) -> str:
    return (f"{name}: {summary['evaluable']} evaluable / {summary['skipped']} quarantined (no video)"
            + (f", {summary['evaluable'] - summary['evaluated']} over evaluate.max_items" if summary["evaluable"] > summary["evaluated"] else ""))


def run_judge(records: Sequence[RiqRecord], completions: Mapping[str, Sequence[str]], results: dict, out_dir: Path, params: Params) -> None:
    """Add each model's ``judge`` block (and write judge_<model>.jsonl); the endpoint comes from the environment."""
    from pipeline.evaluate.judge import client_from_env, judge_all, judge_metrics

    ev = params.evaluate
    client = client_from_env()
    if client is None:
        raise InputError("params.yaml: evaluate.judge: true, but RARFT_JUDGE_BASE_URL and RARFT_JUDGE_MODEL are not set")
    for name, comps in completions.items():
        verdicts = judge_all(client, records, comps, workers=ev.judge_workers, retries=ev.judge_retries)
        write_jsonl(out_dir / f"judge_{name}.jsonl", verdicts)
        results[name]["judge"] = judge_metrics(records, verdicts, ev.iou_thresholds, ev.threshold_op)
        log.info("%s: judge: %d judged, %d failed", name, results[name]["judge"]["n_judged"], results[name]["judge"]["n_failed"])


def evaluate(
    base_dir: str | Path,
    trained_dir: str | Path,
    test_records_path: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    params: Params,
    frames_dir: str | Path | None = None,
    set_name: str = "test",
    events_path: str | Path | None = None,
    train_riq: str | Path | None = None,
) -> dict:
    """Predict with both models (and their video controls), score, and write every output; returns the metrics dict.

    Records without ``frames_path`` are looked up in ``frames_dir``; records whose frames
    are missing are skipped with the reason (skipped.jsonl), and a set with none left
    yields 0-item metrics instead of an error. ``events_path``: the synthetic event logs
    (``data/raw/annotations.jsonl``), with which the swapped control also checks that no
    event of a donor video matches the query; without it (imported sets) only query texts are compared.
    ``train_riq``: the train RIQ, for the leakage guard (pipeline.riq.leakage; the policy is
    ``riq.eval_sets.<set_name>.leakage``, 'error' for a set not listed there); its count goes into
    every model's ``leakage`` block.
    """
    ev = params.evaluate
    ctl = ev.controls
    out_dir = Path(out_dir)
    all_records = join_frames(M.read_riq(test_records_path), frames_dir)
    leak = None
    if train_riq is not None:
        from pipeline.riq import leakage

        policy = params.riq.eval_sets[set_name].leakage if set_name in params.riq.eval_sets else "error"
        found = leakage.overlap(leakage.queries_by_video(all_records), leakage.queries_by_video(M.read_riq(train_riq)))
        # After exclude_from_train no overlap may be left: one now means train.jsonl changed since build_riq.
        leakage.check(set_name, str(test_records_path), found, policy)
        leak = found.report(policy)
    evaluable, skipped = select_records(all_records, 0)
    records = evaluable[: ev.max_items] if ev.max_items else evaluable
    summary = {"set": set_name, "records": len(all_records), "evaluable": len(evaluable), "evaluated": len(records), "skipped": len(skipped)}
    controls = Controls()
    runs: dict[str, tuple] = {"true": (records, None)}
    if ctl.blind:
        runs["blind"] = (records, blind_frames)
    if ctl.swapped:
        logs = read_event_logs(events_path) if events_path else None
        donors = assign_donors(records, ctl.seed, pool=evaluable, logs=logs)
        controls.swapped_records, controls.donor = donors.records(records), donors.donor
        runs["swapped"] = (controls.swapped_records, None)
        summary |= {"swapped": len(donors.donor), "swapped_without_donor": len(donors.no_donor)}
        if donors.no_donor:
            log.warning("%s: swapped control: %d answerable records have no donor video (e.g. %s)", set_name, len(donors.no_donor), donors.no_donor[0])
    write_jsonl(out_dir / "skipped.jsonl", skipped)
    write_json(out_dir / "summary.json", summary)
    for s in skipped[:5]:
        log.warning("%s: record %s skipped: %s", test_records_path, s["id"], s["reason"])
    log.info(summary_line(set_name, summary))

    completions: dict[str, list[str]] = {}
    controls.blind = {} if ctl.blind else None
    controls.swapped = {} if ctl.swapped else None
    for name, model_dir in (("base", base_dir), ("trained", trained_dir)):
        preds = {run: [] for run in runs}
        if records:  # no model is loaded for a set without a single video
            t0 = time.perf_counter()
            preds = predict_runs(model_dir, runs, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens, num_threads=ev.torch_threads)
            secs = time.perf_counter() - t0
            n = sum(len(p) for p in preds.values())
            log.info("%s: %d queries (%s) in %.1f s (%.2f queries/s, model load included)", name, n, "+".join(runs), secs, n / secs)
        write_jsonl(out_dir / f"predictions_{name}.jsonl", preds["true"])
        completions[name] = [p["completion"] for p in preds["true"]]
        if ctl.blind:
            write_jsonl(out_dir / f"predictions_{name}_blind.jsonl", preds["blind"])
            controls.blind[name] = [p["completion"] for p in preds["blind"]]
        if ctl.swapped:
            write_jsonl(out_dir / f"predictions_{name}_swapped.jsonl",
                        ({"id": p["id"], "donor": controls.donor[p["id"]], "completion": p["completion"]} for p in preds["swapped"]))
            controls.swapped[name] = [p["completion"] for p in preds["swapped"]]

    results, items = score(records, completions, dict(params.train.reward_weights), ev.iou_thresholds, ev.threshold_op, controls, ev.protocol)
    for block in results.values():
        block["coverage"] = M.coverage(summary["records"], records, summary["skipped"])
        if leak is not None:
            block["leakage"] = leak
    if ev.judge and records:
        run_judge(records, completions, results, out_dir, params)
    notes = [f"Test set `{set_name}` ({test_records_path}): {summary_line(set_name, summary).split(': ', 1)[1]} "
             f"(see skipped.jsonl); greedy decoding, max_new_tokens={ev.max_new_tokens}; R@k counts IoU {ev.threshold_op} k."]
    if ctl.swapped:
        notes.append(f"Swapped control: {summary['swapped']} answerable records on a donor video (seed {ctl.seed}; "
                     f"{'query text and event log' if events_path else 'query text only'} checked), "
                     f"{summary['swapped_without_donor']} without a donor.")
    write_outputs(out_dir, metrics_path, results, items, notes)
    return results
