"""Metrics under the official evaluator's conventions (``evaluate.protocol: official``, issue #17).

For comparison with published numbers only; the rule-based block of :mod:`metrics` stays the
default and is unchanged. Where the official evaluator differs (docs/METRICS.md, "Official
protocol", one table of every difference):

- parsing: every ``<think>`` block removed, then the FIRST ``<answer>``
  (:func:`pipeline.core.prompt.parse_completion_official`);
- ``r@k`` in percent (x 100);
- explanation similarity: clip(cos, 0, 1) on all-mpnet-base-v2 between think + answer text and
  the reference explanation. No package here ships that model: set ``RARFT_MPNET_PATH`` to a local
  sentence-transformers folder of it; without one the block says why it was skipped.

The label-weighted means (n_ans x mean_ans + n_ref x mean_ref) / n equal the plain means over all
items that :mod:`metrics` already reports, so they are not computed twice. The judge's four steps
are not implemented.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.core.prompt import completion_text, parse_completion_official, think_text
from pipeline.evaluate import metrics as M
from pipeline.riq.schema import RiqRecord

PROTOCOLS = ("rarft", "official")
MPNET_NAME = "all-mpnet-base-v2"
MPNET_ENV = "RARFT_MPNET_PATH"
PARSER = "first <answer> after removing <think> blocks"

Encoder = Callable[[list[str]], np.ndarray]  # texts -> unit-norm embeddings (n, dim)

_lock = threading.Lock()
_models: dict[str, object] = {}


def mpnet_encoder(path: str | os.PathLike | None = None) -> Encoder | str:
    """An encoder on the local all-mpnet-base-v2 folder (``path`` or ``$RARFT_MPNET_PATH``),
    or, when there is none, the message saying why explanation similarity is skipped."""
    path = path if path is not None else os.environ.get(MPNET_ENV)
    if not path:
        return (f"{MPNET_NAME} is not available offline (no installed package ships it and there is no model hub; "
                f"set {MPNET_ENV} to a local sentence-transformers folder of the model)")
    if not Path(path).is_dir():
        return f"{MPNET_NAME} is not available offline ({MPNET_ENV}={path} is not a folder)"
    key = str(Path(path).resolve())

    def encode(texts: list[str]) -> np.ndarray:
        with _lock:
            if key not in _models:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder; never reach for the hub
                from sentence_transformers import SentenceTransformer

                _models[key] = SentenceTransformer(key, device="cpu")
        emb = _models[key].encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    return encode


def explanation_texts(completions: Sequence) -> list[str]:
    """think + answer text of each completion (the official parse's answer)."""
    out = []
    for c in completions:
        answer = parse_completion_official(c).answer or ""
        out.append(" ".join(x for x in (think_text(c), answer) if x))
    return out


def explanation_block(records: Sequence[RiqRecord], completions: Sequence, t: M.ItemTable, encoder: Encoder | str) -> dict:
    """clip(cos, 0, 1) of think + answer text with the reference explanation, over refusable items
    (a missed refusal counts 0, as in :mod:`metrics`) and over correct refusals only."""
    if isinstance(encoder, str):
        return {"skipped": encoder}
    sim = np.zeros(len(records), dtype=float)
    refused = np.flatnonzero(t.correct_refusal)
    if refused.size:
        texts = explanation_texts([completions[i] for i in refused])
        refs = [records[i].explanation or records[i].reference_answer for i in refused]
        emb = encoder([*texts, *refs])
        ea, eb = emb[: len(texts)], emb[len(texts):]
        sim[refused] = np.clip(np.einsum("ij,ij->i", ea, eb), 0.0, 1.0)
    refusable = ~t.answerable
    return {"sim_irrelevant": M._mean(sim[refusable]), "sim_correct_refusals": M._mean(sim[refusable & t.correct_refusal])}


def official_table(records: Sequence[RiqRecord], completions: Sequence) -> M.ItemTable:
    """The classification and grounding columns under the official parse (no rewards, no SBERT columns)."""
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    cols = M.span_columns(records, [parse_completion_official(completion_text(c)) for c in completions])
    return M.ItemTable(
        ids=[r.id for r in records], task_type=[r.task_type for r in records], kind=[r.kind for r in records],
        difficulty=[r.difficulty for r in records], categories=[list(r.categories) for r in records], **cols,
    )


def _percent(block: dict[str, float]) -> dict[str, float]:
    return {k: 100.0 * v if k.startswith("r@") else v for k, v in block.items()}


def official_metrics(
    records: Sequence[RiqRecord], completions: Sequence, thresholds: Sequence[float] = M.THRESHOLDS,
    threshold_op: str = ">=", encoder: Encoder | str | None = None,
) -> dict:
    """Each model's ``official`` block. ``encoder``: texts -> unit-norm embeddings, or a skip message;
    by default :func:`mpnet_encoder` (the local all-mpnet-base-v2 folder, if any)."""
    t = official_table(records, completions)
    encoder = mpnet_encoder() if encoder is None else encoder
    return {
        "n_items": len(t), "n_answerable": int(t.answerable.sum()), "n_refusable": int((~t.answerable).sum()),
        "relevance": M.relevance(t),
        "ra_iou": _percent(M.ra_iou(t, thresholds, threshold_op)),
        "grounding": _percent(M.grounding(t, thresholds, threshold_op)),
        "explanation": explanation_block(records, completions, t, encoder),
        "conventions": {"protocol": "official", "parser": PARSER, "recall_unit": "percent", "threshold_op": threshold_op,
                        "explanation_model": MPNET_NAME, "judge_steps": "not implemented"},
    }


def official_from_files(
    records_path: str | Path, predictions_path: str | Path, thresholds: Sequence[float] = M.THRESHOLDS,
    threshold_op: str = ">=", *, partial: bool = False,
) -> dict:
    """The ``official`` block of a prediction file (``rarft metrics --protocol official``), on the same records as
    :func:`metrics.metrics_from_files`."""
    all_records = M.read_riq(records_path)
    recs, ids, comps = M.read_completions(predictions_path, all_records, unique=True)
    if not partial:
        M.missing_predictions(records_path, predictions_path, all_records, ids)
    return official_metrics(recs, comps, thresholds, threshold_op)
