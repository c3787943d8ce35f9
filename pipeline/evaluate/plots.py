"""Plot data (CSV) for ``dvc plots`` and the Markdown report of an evaluation.

DVC draws one chart per plot definition and facets it by source file, so data
that is compared across models is written one file per model
(``by_difficulty_base.csv`` / ``by_difficulty_trained.csv``) where the template
aggregates rows (confusion) or needs one category axis (bars); the IoU
histogram is one file with a column per model, drawn as two lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.io import atomic_path, write_text

DIFFICULTY_ORDER = ("original", "easy", "medium", "hard", "shuffled")
IOU_BINS = 10


def difficulty_label(difficulty: str | None, kind: str) -> str:
    """Shuffled records have no difficulty; they get their own bar."""
    return kind if difficulty is None or pd.isna(difficulty) else difficulty


def predicted_label(row: Mapping) -> str:
    if row["relevant_pred"]:
        return "relevant"
    return "irrelevant" if row["has_answer"] else "no_answer"


def correct(items: pd.DataFrame) -> pd.Series:
    """Relevance decision is right: a span for answerable, an answer without a span for refusable."""
    answerable = items["task_type"] == "answerable"
    refused = items["has_answer"] & ~items["relevant_pred"]
    return (answerable & items["relevant_pred"]) | (~answerable & refused)


def by_difficulty(items: pd.DataFrame) -> pd.DataFrame:
    df = items.assign(correct=correct(items).astype(float))
    df["difficulty"] = [difficulty_label(d, k) for d, k in zip(df["difficulty"], df["kind"])]
    out = df.groupby("difficulty", sort=False).agg(n=("id", "size"), ra_iou_mean=("ra_iou", "mean"), accuracy=("correct", "mean"))
    order = [d for d in DIFFICULTY_ORDER if d in out.index] + sorted(set(out.index) - set(DIFFICULTY_ORDER))
    return out.loc[order].reset_index()


def by_category(items: pd.DataFrame) -> pd.DataFrame:
    """Refusal accuracy on hard-irrelevant records, per category label (a record counts for each of its labels)."""
    df = items.assign(correct=correct(items).astype(float)).explode("categories").dropna(subset=["categories"])
    out = df.groupby("categories").agg(n=("id", "size"), accuracy=("correct", "mean"), ra_iou_mean=("ra_iou", "mean"))
    return out.rename_axis("category").reset_index()


def confusion(items: pd.DataFrame) -> pd.DataFrame:
    actual = np.where(items["task_type"] == "answerable", "relevant", "irrelevant")
    predicted = [predicted_label(r) for r in items[["relevant_pred", "has_answer"]].to_dict("records")]
    return pd.DataFrame({"actual": actual, "predicted": predicted})


def iou_histogram(items: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Counts of grounding IoU on answerable records, in IOU_BINS bins (x = bin centre)."""
    edges = np.linspace(0.0, 1.0, IOU_BINS + 1)
    out = pd.DataFrame({"iou": np.round((edges[:-1] + edges[1:]) / 2, 3)})
    for model in models:
        iou = items.loc[(items["model"] == model) & (items["task_type"] == "answerable"), "iou"].to_numpy(float)
        out[model] = np.histogram(iou, bins=edges)[0]
    return out


def write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def write_plots(items: pd.DataFrame, out_dir: str | Path, models: Sequence[str]) -> list[Path]:
    """Write every plot CSV under ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    written = []
    for model in models:
        sub = items[items["model"] == model]
        for name, df in (("by_difficulty", by_difficulty(sub)), ("by_category", by_category(sub)), ("confusion", confusion(sub))):
            path = out_dir / f"{name}_{model}.csv"
            write_csv(path, df)
            written.append(path)
    path = out_dir / "iou_hist.csv"
    write_csv(path, iou_histogram(items, models))
    return written + [path]


# --------------------------------------------------------------------------- report
# Overall table rows: these prefixes of the flattened metrics, in this order (by_* breakdowns stay in metrics.json).
HEADLINE = (
    "n_items", "format_rate", "reward.", "relevance.accuracy", "relevance.balanced_accuracy", "relevance.f1_", "relevance.recall_", "ra_iou.", "grounding.",
    "explanation.", "correction.", "rt_iou.", "judge.",
)


# Controls table rows (docs/EVALUATION.md, "Video controls"), when the controls ran.
CONTROL_ROWS = (
    "relevance.accuracy", "control.blind.relevance.accuracy", "visual_gain.relevance.accuracy",
    "relevance.f1_macro", "control.blind.relevance.f1_macro", "visual_gain.relevance.f1_macro",
    "relevance.balanced_accuracy", "control.blind.relevance.balanced_accuracy", "visual_gain.relevance.balanced_accuracy",
    "ra_iou.mean", "control.blind.ra_iou.mean", "control.swapped.refusal_rate", "control.swapped.n",
)


def headline_keys(flat: Mapping[str, float]) -> list[str]:
    keys = []
    for prefix in HEADLINE:
        keys += [k for k in flat if k.startswith(prefix) and k not in keys and isinstance(flat[k], (int, float))]
    return keys


def flatten(d: Mapping, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out |= flatten(v, key + ".")
        else:
            out[key] = v
    return out


def _table(rows: dict[str, dict[str, float]], models: Sequence[str]) -> str:
    df = pd.DataFrame(rows).T.reindex(columns=list(models))
    if len(models) == 2:
        df["delta"] = df[models[1]] - df[models[0]]
    return df.to_markdown(floatfmt=".3f")


def report_markdown(metrics: Mapping[str, Mapping], items: pd.DataFrame, models: Sequence[str], notes: Sequence[str] = ()) -> str:
    flat = {m: flatten(metrics[m]) for m in models}
    headline = {k: {m: flat[m].get(k, float("nan")) for m in models} for k in headline_keys(flat[models[0]])}
    parts = [
        "# Evaluation: " + " vs ".join(models),
        "",
        "Greedy decoding on the test split. RA-IoU counts every item (0 when the relevance "
        "decision is wrong, 1 for a correct refusal, else the IoU); grounding is over answerable items; "
        "explanation/correction are SBERT similarities to the reference over refusable items (missed refusals 0); "
        "RT-IoU is the Jaccard of predicted and gold categories"
        + (f" (categories: {metrics[models[0]]['conventions']['rt_iou_source']})" if "conventions" in metrics[models[0]] else "")
        + ". `judge.*` rows, when present, read each completion with the LLM judge. Definitions: docs/METRICS.md.",
        "",
        "## Overall",
        "",
        _table(headline, models),
        "",
    ]
    for title, fn, key in (("By difficulty", by_difficulty, "difficulty"), ("By hard-irrelevant category", by_category, "category")):
        rows: dict[str, dict[str, float]] = {}
        for m in models:
            for r in fn(items[items["model"] == m]).to_dict("records"):
                rows.setdefault(f"{r[key]} ra_iou", {})[m] = r["ra_iou_mean"]
                rows.setdefault(f"{r[key]} accuracy", {})[m] = r["accuracy"]
        if rows:
            parts += [f"## {title}", "", _table(rows, models), ""]
    controls = [k for k in CONTROL_ROWS if k.startswith(("relevance.", "ra_iou.")) or any(k in flat[m] for m in models)]
    if any(k.startswith(("control.", "visual_gain.")) for k in controls):
        parts += [
            "## Video controls",
            "",
            "The same records with the video made uninformative. **blind**: constant grey frames (same length, size, fps "
            "and token count); `visual_gain` = true-video value - blind value. **swapped**: each answerable record on "
            "another test video whose queries do not include it; a refusal is the right answer there.",
            "",
            _table({k: {m: flat[m].get(k, float("nan")) for m in models} for k in controls}, models),
            "",
        ]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)


def write_report(path: str | Path, metrics: Mapping, items: pd.DataFrame, models: Sequence[str], notes: Sequence[str] = ()) -> None:
    write_text(path, report_markdown(metrics, items, models, notes))
