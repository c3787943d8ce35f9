"""The four RA-RFT rewards, in TRL's reward-function signature.

Each reward is ``fn(completions, **columns) -> list[float]``: ``completions`` are
plain strings or conversational messages, and ``columns`` are the dataset columns
that :func:`reward_columns` builds from a :class:`~pipeline.riq.schema.RiqRecord` (TRL
passes every dataset column, one list entry per completion, plus its own extras,
which the rewards ignore). Definitions, edge cases and examples: docs/REWARDS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pipeline.core import sbert
from pipeline.core.io import InputError
from pipeline.core.prompt import Parsed, is_nil, parse_completion
from pipeline.riq.schema import NO_SPAN, RiqRecord

RewardFn = Callable[..., list[float]]


def reference_texts(records: Sequence[RiqRecord]) -> list[str]:
    """Every reference text the explain and correction rewards compare against (for sbert.warm)."""
    cols = [reward_columns(r) for r in records]
    return [c[k] for c in cols for k in ("reference_answer", "contrast_answer", "correction_target") if c[k]]


def reward_columns(record: RiqRecord) -> dict:
    """The per-example columns the rewards read (same types on every row, for datasets)."""
    return {
        "task_type": record.task_type,
        "duration": float(record.duration),
        "gt_span": [float(x) for x in (record.span or NO_SPAN)],
        "reference_answer": record.reference_answer,
        "contrast_answer": record.contrast_answer,
        "correction_target": (record.correction_target or "") if record.task_type == "refusable" else "",
    }


def _parse_all(completions: Sequence) -> list[Parsed]:
    return [parse_completion(c) for c in completions]


# --------------------------------------------------------------------------- IoU
def span_arrays(parsed: Sequence[Parsed]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (start, end) arrays; NaN where the answer holds no span."""
    spans = np.array([p.span if p.span is not None else (np.nan, np.nan) for p in parsed], dtype=float).reshape(-1, 2)
    return spans[:, 0], spans[:, 1]


def clipped_iou(ps, pe, gs, ge, duration) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Temporal IoU after clipping the prediction to [0, duration]; vectorised.

    A reversed prediction (start > end) and one that is empty after clipping get IoU 0:
    the model must write a non-empty span inside the video. NaN (no span) gives IoU 0.
    Returns (iou, clipped start, clipped end).
    """
    ps, pe, gs, ge, d = (np.asarray(x, dtype=float) for x in (ps, pe, gs, ge, duration))
    valid = ~(np.isnan(ps) | np.isnan(pe)) & (ps <= pe)
    cs = np.clip(np.nan_to_num(ps), 0.0, d)
    ce = np.clip(np.nan_to_num(pe), 0.0, d)
    valid &= ce > cs
    inter = np.clip(np.minimum(ce, ge) - np.maximum(cs, gs), 0.0, None)
    union = np.maximum(ce, ge) - np.minimum(cs, gs)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(valid & (union > 0), inter / np.where(union > 0, union, 1.0), 0.0)
    return iou, cs, ce


def _refuse_iou_values(parsed: Sequence[Parsed], task_type, gt_span, duration) -> np.ndarray:
    ps, pe = span_arrays(parsed)
    gt = np.asarray(gt_span, dtype=float).reshape(-1, 2)
    d = np.asarray(duration, dtype=float)
    answerable = np.asarray(task_type) == "answerable"
    has_answer = np.array([p.answer is not None for p in parsed], dtype=bool)
    has_span = ~np.isnan(ps)
    iou, cs, ce = clipped_iou(ps, pe, gt[:, 0], gt[:, 1], d)
    # The boundary factors use the clipped span, so each lies in [0, 1].
    grounded = iou * (1.0 - np.abs(gt[:, 0] - cs) / d) * (1.0 - np.abs(gt[:, 1] - ce) / d)
    out = np.where(answerable, np.where(has_span, grounded, 0.0), np.where(has_span, 0.0, 1.0))
    return np.where(has_answer, out, 0.0)


# --------------------------------------------------------------------------- rewards
def format_reward(completions, **kwargs) -> list[float]:
    """1 iff the completion is exactly <think>..</think> <answer>..</answer> <correction>..</correction>."""
    return [1.0 if p.well_formed else 0.0 for p in _parse_all(completions)]


def refuse_iou_reward(completions, task_type, gt_span, duration, **kwargs) -> list[float]:
    """Answerable: IoU x (1-|gs-ps|/D) x (1-|ge-pe|/D) if a span is given, else 0.
    Refusable: 1 if the answer holds no span, else 0. No <answer>: 0."""
    return _refuse_iou_values(_parse_all(completions), task_type, gt_span, duration).tolist()


def _explain_values(parsed: Sequence[Parsed], reference_answer, contrast_answer) -> list[float]:
    idx = [i for i, p in enumerate(parsed) if p.answer is not None]
    out = [0.0] * len(parsed)
    if idx:
        answers = [parsed[i].answer for i in idx]
        # One similarity call: answers against references and contrasts together.
        sims = sbert.similarity(answers + answers, [reference_answer[i] for i in idx] + [contrast_answer[i] for i in idx])
        for k, i in enumerate(idx):
            out[i] = sims[k] - sims[k + len(idx)]
    return out


def explain_reward(completions, reference_answer, contrast_answer, **kwargs) -> list[float]:
    """s(answer, reference) - s(answer, contrast), s = (cos+1)/2 on SBERT; 0 without <answer>."""
    return _explain_values(_parse_all(completions), reference_answer, contrast_answer)


def _correction_values(parsed: Sequence[Parsed], task_type, correction_target) -> list[float]:
    out = [0.0] * len(parsed)
    pairs = []
    for i, (p, t) in enumerate(zip(parsed, task_type, strict=True)):
        if t == "answerable":
            out[i] = 1.0 if is_nil(p.correction) else 0.0
        elif p.correction and not is_nil(p.correction) and correction_target[i]:
            pairs.append(i)
    if pairs:
        sims = sbert.similarity([parsed[i].correction for i in pairs], [correction_target[i] for i in pairs])
        for i, s in zip(pairs, sims, strict=True):
            out[i] = s
    return out


def correction_reward(completions, task_type, correction_target, **kwargs) -> list[float]:
    """Answerable: 1 iff the correction is NIL. Refusable: 0 if missing/empty/NIL, else
    s(correction, correction_target)."""
    return _correction_values(_parse_all(completions), task_type, correction_target)


REWARDS: dict[str, RewardFn] = {
    "format": format_reward,
    "refuse_iou": refuse_iou_reward,
    "explain": explain_reward,
    "correction": correction_reward,
}


# --------------------------------------------------------------------------- helpers
def check_weights(weights: Mapping[str, float], source: str = "train.reward_weights") -> None:
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise InputError(f"{source}: unknown reward(s) {unknown}; known: {list(REWARDS)}")


def columns_of(records: Sequence[RiqRecord]) -> dict[str, list]:
    """Column-major reward columns of many records (what a datasets.Dataset would hold)."""
    rows = [reward_columns(r) for r in records]
    return {k: [row[k] for row in rows] for k in rows[0]} if rows else {}


def reward_arrays(records: Sequence[RiqRecord], parsed: Sequence[Parsed]) -> dict[str, np.ndarray]:
    """Every reward for pre-parsed completions, as arrays (the metrics path: parse once)."""
    if len(records) != len(parsed):
        raise ValueError(f"{len(records)} records but {len(parsed)} completions")
    if not records:
        return {name: np.zeros(0) for name in REWARDS}
    cols = columns_of(records)
    return {
        "format": np.array([1.0 if p.well_formed else 0.0 for p in parsed]),
        "refuse_iou": _refuse_iou_values(parsed, cols["task_type"], cols["gt_span"], cols["duration"]),
        "explain": np.array(_explain_values(parsed, cols["reference_answer"], cols["contrast_answer"])),
        "correction": np.array(_correction_values(parsed, cols["task_type"], cols["correction_target"])),
    }


def score(records: Sequence[RiqRecord], completions: Sequence) -> list[dict[str, float]]:
    """Every reward of each (record, completion) pair: ``[{name: value}]`` in REWARDS order."""
    arrays = reward_arrays(records, _parse_all(completions))
    return [{name: float(arrays[name][i]) for name in REWARDS} for i in range(len(records))]


def total(scores, weights: Mapping[str, float]):
    """Weighted sum of rewards (missing weights count 0) for one score dict or a list of them."""
    check_weights(weights)
    if isinstance(scores, Mapping):
        return float(sum(w * scores[name] for name, w in weights.items()))
    return [total(s, weights) for s in scores]
