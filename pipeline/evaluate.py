"""Stage evaluate: greedy predictions of the base and the trained model on the test
split, scored with the same rewards and metrics as training.

Writes, under ``out_dir``: ``predictions_<model>.jsonl`` (``{"id", "completion"}``,
what ``rarft metrics --predictions`` reads), ``items.csv`` (one row per model and
item), ``plots/*.csv`` (for ``dvc plots``), ``report.md`` and ``skipped.jsonl``
(records that could not be evaluated, with the reason); and ``metrics_path`` =
``{"base": {...}, "trained": {...}}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from pipeline import metrics as M
from pipeline.inference import predict
from pipeline.io import InputError, atomic_path, write_json, write_jsonl
from pipeline.params import Params
from pipeline.plots import write_plots, write_report
from pipeline.riq import RiqRecord

log = logging.getLogger(__name__)

ITEM_COLUMNS = (
    "model", "id", "task_type", "kind", "difficulty", "categories", "has_answer", "relevant_pred",
    "pred_start", "pred_end", "iou", "ra_iou",
)


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
        out = {"model": model, **{k: row[k] for k in ITEM_COLUMNS[1:]}}
        out["categories"] = ";".join(row["categories"])
        out |= {f"reward_{k}": v for k, v in row.items() if k not in ITEM_COLUMNS}
        rows.append(out)
    return rows


def score(records: Sequence[RiqRecord], completions: Mapping[str, Sequence[str]], weights: Mapping[str, float],
          thresholds: Sequence[float]) -> tuple[dict, pd.DataFrame]:
    """Metrics per model and the per-item table (completions: model name -> one per record, in order)."""
    results, rows = {}, []
    for name, comps in completions.items():
        table = M.item_table(records, comps)
        results[name] = M.metrics_from_table(table, weights, thresholds)
        rows += item_rows(name, table, weights)
    return results, pd.DataFrame(rows)


def write_outputs(out_dir: str | Path, metrics_path: str | Path, results: dict, items: pd.DataFrame, notes: Sequence[str] = ()) -> None:
    """items.csv, plots/*.csv, report.md under ``out_dir``, and the metrics file."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "items.csv", suffix=".csv") as tmp:
        items.to_csv(tmp, index=False, float_format="%.6g")
    items = items.assign(categories=[c.split(";") if c else [] for c in items["categories"]])
    models = list(results)
    write_plots(items, out_dir / "plots", models)
    write_report(out_dir / "report.md", results, items, models, notes)
    write_json(metrics_path, results)


def evaluate(
    base_dir: str | Path,
    trained_dir: str | Path,
    test_records_path: str | Path,
    out_dir: str | Path,
    metrics_path: str | Path,
    params: Params,
) -> dict:
    """Predict with both models, score, and write every output; returns the metrics dict."""
    ev = params.evaluate
    out_dir = Path(out_dir)
    records, skipped = select_records(M.read_riq(test_records_path), ev.max_items)
    if not records:
        raise InputError(f"{test_records_path}: no record can be evaluated ({len(skipped)} skipped, see {out_dir / 'skipped.jsonl'})")
    write_jsonl(out_dir / "skipped.jsonl", skipped)
    for s in skipped:
        log.warning("%s: record %s skipped: %s", test_records_path, s["id"], s["reason"])

    completions = {}
    for name, model_dir in (("base", base_dir), ("trained", trained_dir)):
        t0 = time.perf_counter()
        preds = predict(model_dir, records, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens,
                        num_threads=ev.torch_threads)
        secs = time.perf_counter() - t0
        log.info("%s: %d queries in %.1f s (%.2f queries/s, model load included)", name, len(records), secs, len(records) / secs)
        write_jsonl(out_dir / f"predictions_{name}.jsonl", preds)
        completions[name] = [p["completion"] for p in preds]

    results, items = score(records, completions, dict(params.train.reward_weights), ev.iou_thresholds)
    notes = [f"{len(records)} test items ({len(skipped)} skipped, see skipped.jsonl); "
             f"greedy decoding, max_new_tokens={ev.max_new_tokens}."]
    write_outputs(out_dir, metrics_path, results, items, notes)
    return results
