"""Evaluation metrics for refusal-aware temporal grounding.

Completions are parsed once into a columnar :class:`ItemTable` (numpy arrays, one
entry per item); every metric in :data:`METRICS` is a function of such a table, so
the same block is computed for the whole set and for each difficulty, category and
kind. Definitions, empty-class conventions and a worked example: docs/METRICS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core import sbert
from pipeline.core.io import InputError, read_jsonl
from pipeline.core.prompt import Parsed, parse_completion
from pipeline.riq import categorize
from pipeline.riq.schema import RiqRecord, read_riq  # noqa: F401  (read_riq: re-exported for callers)
from pipeline.train import rewards

THRESHOLDS = (0.3, 0.5, 0.7)
THRESHOLD_OPS = (">=", ">")


@dataclass(frozen=True)
class ItemTable:
    """Per-item results, column-major."""

    ids: list[str]
    task_type: list[str]
    kind: list[str]
    difficulty: list[str | None]
    categories: list[list[str]]
    answerable: np.ndarray  # gt class: True = relevant
    has_answer: np.ndarray  # an <answer> tag was found
    pred_relevant: np.ndarray  # the answer holds a span
    pred_start: np.ndarray  # NaN without a span
    pred_end: np.ndarray
    iou: np.ndarray  # temporal IoU with the first gt span (0 for refusable items)
    ra_iou: np.ndarray
    rewards: dict[str, np.ndarray] = field(default_factory=dict)
    # Refusal quality; NaN where the item is answerable (expl/corr) or has no gold category (rt_iou).
    expl_sim: np.ndarray | None = None  # s(answer, reference explanation) on correct refusals, 0 on missed ones
    corr_sim: np.ndarray | None = None  # s(correction, true query) on correct refusals, 0 on missed ones; NaN without a target
    rt_iou: np.ndarray | None = None  # Jaccard(predicted, gold categories) on correct refusals, 0 on missed ones
    pred_categories: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def pred_irrelevant(self) -> np.ndarray:
        # A refusal needs an <answer>: a completion without one is wrong for both classes.
        return self.has_answer & ~self.pred_relevant

    @property
    def correct_refusal(self) -> np.ndarray:
        return ~self.answerable & self.pred_irrelevant

    def subset(self, mask: np.ndarray) -> ItemTable:
        return self.take(np.flatnonzero(mask))

    def take(self, idx: np.ndarray) -> ItemTable:
        """The items at ``idx`` (repeats allowed), in that order."""
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        arr = {k: getattr(self, k)[idx] for k in ARRAY_COLUMNS if getattr(self, k) is not None}
        return ItemTable(
            ids=pick(self.ids), task_type=pick(self.task_type), kind=pick(self.kind),
            difficulty=pick(self.difficulty), categories=pick(self.categories),
            pred_categories=pick(self.pred_categories) if self.pred_categories else [],
            rewards={k: v[idx] for k, v in self.rewards.items()}, **arr,
        )


ARRAY_COLUMNS = ("answerable", "has_answer", "pred_relevant", "pred_start", "pred_end", "iou", "ra_iou", "expl_sim", "corr_sim", "rt_iou")


def span_columns(records: Sequence[RiqRecord], parsed: Sequence[Parsed]) -> dict[str, np.ndarray]:
    """The classification and grounding columns of an :class:`ItemTable` from parsed completions
    (whichever parser produced them: the official protocol parses its own way, pipeline/evaluate/official.py)."""
    answerable = np.array([r.task_type == "answerable" for r in records], dtype=bool)
    has_answer = np.array([p.answer is not None for p in parsed], dtype=bool)
    ps, pe = rewards.span_arrays(parsed)
    pred_relevant = ~np.isnan(ps)
    gt = np.array([r.span or (0.0, 0.0) for r in records], dtype=float).reshape(-1, 2)
    duration = np.array([r.duration for r in records], dtype=float)
    iou, _, _ = rewards.clipped_iou(ps, pe, gt[:, 0], gt[:, 1], duration)
    iou = np.where(answerable, iou, 0.0)
    correct_refusal = ~answerable & has_answer & ~pred_relevant
    ra_iou = np.where(answerable & pred_relevant, iou, np.where(correct_refusal, 1.0, 0.0))
    return {"answerable": answerable, "has_answer": has_answer, "pred_relevant": pred_relevant,
            "pred_start": ps, "pred_end": pe, "iou": iou, "ra_iou": ra_iou}


def item_table(records: Sequence[RiqRecord], completions: Sequence, pred_categories: Sequence[Sequence[str]] | None = None) -> ItemTable:
    """Parse every completion once and compute IoU, RA-IoU, all rewards and the refusal-quality columns.

    ``pred_categories``: the categories of each prediction from elsewhere (the judge);
    by default :mod:`pipeline.riq.categorize` derives them from each refusal's text.
    """
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    parsed = [parse_completion(c) for c in completions]
    cols = span_columns(records, parsed)
    answerable, has_answer, pred_relevant = cols["answerable"], cols["has_answer"], cols["pred_relevant"]
    ps, pe, iou, ra_iou = cols["pred_start"], cols["pred_end"], cols["iou"], cols["ra_iou"]
    correct_refusal = ~answerable & has_answer & ~pred_relevant
    rew = rewards.reward_arrays(records, parsed)
    refused = np.flatnonzero(correct_refusal)

    expl_sim = np.where(answerable, np.nan, 0.0)
    if refused.size:
        expl_sim[refused] = sbert.similarity([parsed[i].answer for i in refused],
                                             [records[i].explanation or records[i].reference_answer for i in refused])
    # The correction reward of a refusable item is already s(correction, true query) (0 when missing or NIL);
    # NaN (skipped) for an evaluation-only refusal, which has no true query to correct to.
    has_target = np.array([r.correction_target is not None for r in records], dtype=bool)
    corr_sim = np.where(answerable | ~has_target, np.nan, np.where(correct_refusal, rew["correction"], 0.0))

    if pred_categories is None:
        cats = categorize.classify_many([records[i].problem for i in refused], [parsed[i].answer for i in refused],
                                        [parsed[i].correction for i in refused])
        pred_cats: list[list[str]] = [[] for _ in records]
        for i, c in zip(refused, cats):
            pred_cats[i] = c
    else:
        if len(pred_categories) != len(records):
            raise ValueError(f"{len(records)} records but {len(pred_categories)} predicted category lists")
        pred_cats = [sorted(set(c)) if correct_refusal[i] else [] for i, c in enumerate(pred_categories)]
    has_gold = np.array([bool(r.categories) for r in records], dtype=bool)
    rt = np.array([categorize.jaccard(p, r.categories) if ok else 0.0
                   for p, r, ok in zip(pred_cats, records, correct_refusal)], dtype=float).reshape(-1)
    rt_iou = np.where(has_gold, rt, np.nan)
    return ItemTable(
        ids=[r.id for r in records],
        task_type=[r.task_type for r in records],
        kind=[r.kind for r in records],
        difficulty=[r.difficulty for r in records],
        categories=[list(r.categories) for r in records],
        answerable=answerable, has_answer=has_answer, pred_relevant=pred_relevant,
        pred_start=ps, pred_end=pe, iou=iou, ra_iou=ra_iou, rewards=rew,
        expl_sim=expl_sim, corr_sim=corr_sim, rt_iou=rt_iou, pred_categories=pred_cats,
    )


# --------------------------------------------------------------------------- metrics
def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return p, r, _ratio(2 * p * r, p + r)


def relevance(t: ItemTable, **_) -> dict[str, float]:
    """Relevant/irrelevant classification. No predictions -> precision 0; no support ->
    recall 0; P + R = 0 -> F1 0; f1_macro and balanced_accuracy (the mean recall) average the
    classes that have support. Balanced accuracy does not reward the majority class: on a set
    that is 70% refusable, refusing everything scores 0.70 accuracy but 0.50 balanced."""
    out: dict[str, float] = {}
    f1s, recalls = [], []
    for name, gold, pred in (
        ("relevant", t.answerable, t.pred_relevant),
        ("irrelevant", ~t.answerable, t.pred_irrelevant),
    ):
        tp, fp, fn = int((gold & pred).sum()), int((~gold & pred).sum()), int((gold & ~pred).sum())
        p, r, f1 = _prf(tp, fp, fn)
        out |= {f"precision_{name}": p, f"recall_{name}": r, f"f1_{name}": f1}
        if gold.any():
            f1s.append(f1)
            recalls.append(r)
    correct = (t.answerable & t.pred_relevant) | (~t.answerable & t.pred_irrelevant)
    out["accuracy"] = _mean(correct.astype(float))
    out["f1_macro"] = float(np.mean(f1s)) if f1s else 0.0
    out["balanced_accuracy"] = float(np.mean(recalls)) if recalls else 0.0
    return out


def _recall_at(x: np.ndarray, thresholds: Sequence[float], op: str = ">=") -> dict[str, float]:
    if op not in THRESHOLD_OPS:
        raise ValueError(f"threshold_op: {op!r} is not one of {THRESHOLD_OPS}")
    hit = np.greater_equal if op == ">=" else np.greater
    return {f"r@{k:g}": _mean(hit(x, k).astype(float)) for k in thresholds}


def ra_iou(t: ItemTable, thresholds: Sequence[float] = THRESHOLDS, threshold_op: str = ">=", **_) -> dict[str, float]:
    """RA-IoU over ALL items: 0 if misclassified, 1 for a correct refusal, else the IoU."""
    return {"mean": _mean(t.ra_iou), **_recall_at(t.ra_iou, thresholds, threshold_op)}


def grounding(t: ItemTable, thresholds: Sequence[float] = THRESHOLDS, threshold_op: str = ">=", **_) -> dict[str, float]:
    """mIoU and R@k over answerable items only (no span = IoU 0)."""
    iou = t.iou[t.answerable]
    return {"miou": _mean(iou), **_recall_at(iou, thresholds, threshold_op)}


def _refusal_quality(col: str) -> Callable[..., dict[str, float]]:
    def fn(t: ItemTable, **_) -> dict[str, float]:
        x = getattr(t, col)
        if x is None:
            return {"sim_irrelevant": 0.0, "sim_correct_refusals": 0.0}
        scored = ~t.answerable & ~np.isnan(x)  # NaN: skipped (corr_sim of a refusal without a correction target)
        return {"sim_irrelevant": _mean(x[scored]), "sim_correct_refusals": _mean(x[scored & t.correct_refusal])}

    fn.__doc__ = f"Mean {col} over refusable items (missed refusals 0; NaN items skipped) and over correct refusals only."
    return fn


def rt_iou(t: ItemTable, **_) -> dict[str, float]:
    """Category Jaccard over refusable items with gold categories (missed refusals 0), and over their correct refusals."""
    if t.rt_iou is None:
        return {"mean": 0.0, "mean_correct_refusals": 0.0}
    has_gold = ~np.isnan(t.rt_iou)
    return {"mean": _mean(t.rt_iou[has_gold]), "mean_correct_refusals": _mean(t.rt_iou[has_gold & t.correct_refusal])}


def reward(t: ItemTable, weights: Mapping[str, float] | None = None, **_) -> dict[str, float]:
    """Mean of each reward and their weighted sum (weights: train.reward_weights)."""
    means = {name: _mean(v) for name, v in t.rewards.items()}
    return {**means, "total": float(sum(w * means[name] for name, w in (weights or {}).items()))}


METRICS: dict[str, Callable[..., float | dict[str, float]]] = {
    "n_items": lambda t, **_: len(t),
    "n_answerable": lambda t, **_: int(t.answerable.sum()),
    "n_refusable": lambda t, **_: int((~t.answerable).sum()),
    "format_rate": lambda t, **_: _mean(t.rewards["format"]),
    "reward": reward,
    "relevance": relevance,
    "ra_iou": ra_iou,
    "grounding": grounding,
    "explanation": _refusal_quality("expl_sim"),
    "correction": _refusal_quality("corr_sim"),
    "rt_iou": rt_iou,
}


def coverage(n_records: int, evaluated: Sequence[RiqRecord], skipped_no_video: int = 0) -> dict:
    """How much of a set a score covers (each model's ``coverage`` block in the metrics file): records
    in the set's file, those evaluated and their share, those skipped for want of a video, evaluation-only
    refusals among the evaluated (no correction target: correction metrics skipped) and refusals whose
    correction is scored. What an import quarantined never reached the file: docs/IMPORT.md gives those per set."""
    n_eval_only = sum(r.evaluation_only for r in evaluated)
    return {
        "records": n_records, "evaluated": len(evaluated),
        "share_evaluated": len(evaluated) / n_records if n_records else 0.0,
        "skipped_no_video": skipped_no_video, "evaluation_only": n_eval_only,
        "correction_scored": sum(r.task_type == "refusable" for r in evaluated) - n_eval_only,
    }


def group_key(name: str | None) -> str:
    """A DVC-friendly key: no '/' or '.' (DVC joins nested keys with '.'); None -> 'none'."""
    return "none" if name is None else name.replace("/", "_").replace(".", "_")


def block(t: ItemTable, weights: Mapping[str, float], thresholds: Sequence[float], threshold_op: str = ">=") -> dict:
    return {name: fn(t, weights=weights, thresholds=thresholds, threshold_op=threshold_op) for name, fn in METRICS.items()}


def metrics_from_table(
    t: ItemTable, reward_weights: Mapping[str, float], thresholds: Sequence[float] = THRESHOLDS,
    threshold_op: str = ">=", rt_iou_source: str = categorize.SOURCE,
) -> dict:
    """The whole block with its breakdowns; ``conventions`` records how thresholds and RT-IoU categories were taken."""
    rewards.check_weights(reward_weights)
    out = block(t, reward_weights, thresholds, threshold_op)
    for by, labels in (("difficulty", t.difficulty), ("kind", t.kind)):
        groups = sorted({group_key(x) for x in labels})
        keys = np.array([group_key(x) for x in labels])
        out[f"by_{by}"] = {g: block(t.subset(keys == g), reward_weights, thresholds, threshold_op) for g in groups}
    cats = sorted({c for cs in t.categories for c in cs})
    out["by_category"] = {
        group_key(c): block(t.subset(np.array([c in cs for cs in t.categories], dtype=bool)), reward_weights, thresholds, threshold_op)
        for c in cats
    }
    out["conventions"] = {"threshold_op": threshold_op, "rt_iou_source": rt_iou_source}
    return out


def compute_metrics(
    records: Sequence[RiqRecord],
    completions: Sequence,
    reward_weights: Mapping[str, float],
    thresholds: Sequence[float] = THRESHOLDS,
    threshold_op: str = ">=",
) -> dict:
    """The nested metrics block (DVC shows ``reward.total``, ``by_difficulty.hard.ra_iou.mean``...)."""
    return metrics_from_table(item_table(records, completions), reward_weights, thresholds, threshold_op)


# --------------------------------------------------------------------------- video controls
VISUAL_GAIN_KEYS = ("accuracy", "f1_macro", "balanced_accuracy")


def swapped_block(t: ItemTable) -> dict[str, float]:
    """The swapped control: ``t`` holds answerable records scored on another video. ``refusal_rate``
    = share of them whose completion refuses (an <answer> without a span, as in ``relevance``)."""
    return {"n": len(t), "refusal_rate": _mean(t.pred_irrelevant.astype(float))}


def control_blocks(
    true_block: Mapping, blind: ItemTable | None, swapped: ItemTable | None, reward_weights: Mapping[str, float],
    thresholds: Sequence[float] = THRESHOLDS, threshold_op: str = ">=",
) -> dict:
    """``control.blind`` (the whole block of the grey-video run), ``control.swapped`` and
    ``visual_gain.relevance.<k>`` = true - blind; a control that did not run is absent."""
    out: dict = {}
    if blind is None and swapped is None:
        return out
    control: dict = {}
    if blind is not None:
        control["blind"] = metrics_from_table(blind, reward_weights, thresholds, threshold_op)
        out["visual_gain"] = {"relevance": {k: true_block["relevance"][k] - control["blind"]["relevance"][k] for k in VISUAL_GAIN_KEYS}}
    if swapped is not None:
        control["swapped"] = swapped_block(swapped)
    out["control"] = control
    return out


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def rows_from_table(t: ItemTable, reward_weights: Mapping[str, float] | None = None) -> list[dict]:
    rows = []
    for i in range(len(t)):
        row = {
            "id": t.ids[i],
            "task_type": t.task_type[i],
            "kind": t.kind[i],
            "difficulty": t.difficulty[i],
            "categories": t.categories[i],
            "has_answer": bool(t.has_answer[i]),
            "relevant_pred": bool(t.pred_relevant[i]),
            "pred_start": None if np.isnan(t.pred_start[i]) else float(t.pred_start[i]),
            "pred_end": None if np.isnan(t.pred_end[i]) else float(t.pred_end[i]),
            "iou": float(t.iou[i]),
            "ra_iou": float(t.ra_iou[i]),
            **{name: float(v[i]) for name, v in t.rewards.items()},
            **{k: _num(getattr(t, k)[i]) for k in ("expl_sim", "corr_sim", "rt_iou") if getattr(t, k) is not None},
            "pred_categories": t.pred_categories[i] if t.pred_categories else [],
        }
        if reward_weights is not None:
            row["total"] = rewards.total({n: row[n] for n in t.rewards}, reward_weights)
        rows.append(row)
    return rows


def per_item(records: Sequence[RiqRecord], completions: Sequence, reward_weights: Mapping[str, float] | None = None) -> list[dict]:
    """One row per item for tables (id, task_type, difficulty, categories, relevant_pred, iou, ra_iou, rewards)."""
    return rows_from_table(item_table(records, completions), reward_weights)


# --------------------------------------------------------------------------- files
def read_completions(path: str | Path, records: Sequence[RiqRecord], *, unique: bool) -> tuple[list[RiqRecord], list[str], list[str]]:
    """Match ``{"id", "completion"}`` lines to records; returns (records, ids, completions) in file order.

    Unknown ids and missing ``completion`` fail with file, line and id; with ``unique``
    a repeated id fails too (a prediction set has one answer per record).
    """
    path = Path(path)
    by_id = {r.id: r for r in records}
    seen: dict[str, int] = {}
    recs, ids, comps = [], [], []
    for lineno, obj in read_jsonl(path):
        rid = obj.get("id")
        if not isinstance(rid, str):
            raise InputError(f"{path}:{lineno}: field 'id' missing or not a string")
        if rid not in by_id:
            raise InputError(f"{path}:{lineno}: id {rid!r}: not in the records")
        comp = obj.get("completion")
        if not isinstance(comp, (str, list)):
            raise InputError(f"{path}:{lineno}: id {rid!r}: field 'completion' missing or not a string/messages")
        if unique and rid in seen:
            raise InputError(f"{path}:{lineno}: id {rid!r}: repeated (first on line {seen[rid]})")
        seen.setdefault(rid, lineno)
        recs.append(by_id[rid])
        ids.append(rid)
        comps.append(comp)
    return recs, ids, comps


def read_control_predictions(path: str | Path, records: Sequence[RiqRecord], *, swapped: bool) -> tuple[list[RiqRecord], list[str]]:
    """A control's predictions (``predictions_<model>_blind.jsonl`` / ``_swapped.jsonl``): (records, completions) in file order.

    Ids must be unique and in ``records``; a swapped line must name an answerable record and its ``donor`` video.
    """
    recs, _, comps = read_completions(path, records, unique=True)
    if swapped:
        for (lineno, obj), rec in zip(read_jsonl(path), recs):
            if rec.task_type != "answerable":
                raise InputError(f"{path}:{lineno}: id {rec.id!r}: the swapped control holds answerable records only")
            if not isinstance(obj.get("donor"), str) or obj["donor"] == rec.video:
                raise InputError(f"{path}:{lineno}: id {rec.id!r}: field 'donor' missing or the record's own video")
    return recs, comps


def metrics_with_controls(
    records: Sequence[RiqRecord], completions: Sequence, reward_weights: Mapping[str, float],
    thresholds: Sequence[float] = THRESHOLDS, threshold_op: str = ">=",
    blind: Sequence | None = None, swapped: tuple[Sequence[RiqRecord], Sequence] | None = None,
) -> dict:
    """``compute_metrics`` plus the control blocks: ``blind`` = one completion per record on grey
    frames, ``swapped`` = (answerable records, completions on their donor videos)."""
    out = compute_metrics(records, completions, reward_weights, thresholds, threshold_op)
    blind_t = None if blind is None else item_table(records, blind)
    swapped_t = None if swapped is None else item_table(*swapped)
    return out | control_blocks(out, blind_t, swapped_t, reward_weights, thresholds, threshold_op)


def missing_predictions(records_path: str | Path, predictions_path: str | Path, records: Sequence[RiqRecord], ids: Sequence[str]) -> None:
    """Fail on the first record that has no prediction (naming both files, the record's position and id)."""
    have = set(ids)
    for n, r in enumerate(records, 1):
        if r.id not in have:
            raise InputError(f"{predictions_path}: no prediction for id {r.id!r} ({records_path} record #{n})")


def metrics_from_files(
    records_path: str | Path, predictions_path: str | Path, reward_weights: Mapping[str, float],
    thresholds: Sequence[float] = THRESHOLDS, threshold_op: str = ">=", *, partial: bool = False,
    blind_path: str | Path | None = None, swapped_path: str | Path | None = None,
) -> dict:
    """What ``rarft metrics`` writes: the block of a prediction file, plus ``control``/``visual_gain``
    from the control prediction files when given (the same values as the evaluate stage's block).

    The blind file must hold exactly the scored records (any order); the swapped file, answerable records.
    """
    all_records = read_riq(records_path)
    recs, ids, comps = read_completions(predictions_path, all_records, unique=True)
    if not partial:
        missing_predictions(records_path, predictions_path, all_records, ids)
    blind = swapped = None
    if blind_path is not None:
        b_recs, b_comps = read_control_predictions(blind_path, all_records, swapped=False)
        by_id = dict(zip((r.id for r in b_recs), b_comps))
        if set(by_id) != set(ids):
            odd = sorted(set(by_id) ^ set(ids))[0]
            raise InputError(f"{blind_path}: id {odd!r}: the blind predictions must cover exactly the records of {predictions_path}")
        blind = [by_id[i] for i in ids]
    if swapped_path is not None:
        swapped = read_control_predictions(swapped_path, all_records, swapped=True)
    result = metrics_with_controls(recs, comps, reward_weights, thresholds, threshold_op, blind=blind, swapped=swapped)
    result["coverage"] = coverage(len(all_records), recs)  # as the evaluate stage writes it (no frames check here)
    return result
