"""Optional LLM judge: an OpenAI-compatible model reads each completion and returns
relevance, the span it states, the hard-irrelevant categories its refusal names,
and a 0-5 reasoning score against the reference.

Off by default (``evaluate.judge: false``). The endpoint comes from the environment
only (never params, logs or dvc.lock): ``RARFT_JUDGE_BASE_URL``, ``RARFT_JUDGE_MODEL``,
``RARFT_JUDGE_API_KEY`` (optional), ``RARFT_JUDGE_CACHE`` (default ``.cache/rarft-judge``),
``RARFT_JUDGE_TIMEOUT`` (seconds, default 60). Transport is
:class:`pipeline.riq.llm_client.LLMClient` (on-disk cache keyed by the request, so a rerun
costs nothing and gives the same verdicts). Timeouts, HTTP and connection errors are
retried; a reply that does not parse is recorded as a failure for that item and never
aborts the run. The judge's numbers form their own block, ``<model>.judge.*``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.core.prompt import completion_text, format_span
from pipeline.evaluate import metrics as M
from pipeline.riq import categorize
from pipeline.riq.llm_client import LLMClient, LLMError
from pipeline.riq.schema import CATEGORIES, RiqRecord
from pipeline.train import rewards

log = logging.getLogger(__name__)

ENV_PREFIX = "RARFT_JUDGE_"
DEFAULT_CACHE = ".cache/rarft-judge"
RETRYABLE = ("timeout", "unreachable", "http_error")

SYSTEM = (
    "You grade answers of a video temporal grounding model. The model was given a video and a query and had to "
    "either give the moment as 'START to END' in seconds, or refuse (say no segment is relevant), explain why and "
    "propose a corrected query. You do not see the video; you see the query, the reference and the model's output. "
    "Reply with one JSON object only: "
    '{"relevant": bool, "span": [start, end] or null, "categories": [str, ...], "reasoning_score": int}. '
    "relevant: true iff the model's output claims the query happens in the video. "
    "span: the segment the output states, in seconds, or null. "
    f"categories: when the output refuses, which facts it says differ, from: {', '.join(CATEGORIES)}; else []. "
    "reasoning_score: 0 (wrong or no reasoning) to 5 (correct decision, reasoning and explanation consistent "
    "with the reference)."
)


class Verdict(BaseModel):
    model_config = ConfigDict(extra="ignore")

    relevant: bool
    span: tuple[float, float] | None = None
    categories: list[str] = Field(default_factory=list)
    reasoning_score: float = Field(ge=0, le=5)

    @field_validator("categories")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        # A label outside the 11 is the judge's vocabulary slip, not a reason to drop the verdict.
        known = {c.casefold(): c for c in CATEGORIES} | {c.split("/")[1].casefold(): c for c in CATEGORIES}
        return sorted({known[x.casefold()] for x in v if isinstance(x, str) and x.casefold() in known})


def client_from_env(env: Mapping[str, str] | None = None) -> LLMClient | None:
    """The judge's client from RARFT_JUDGE_* variables, or None when no endpoint is set."""
    import os

    env = os.environ if env is None else env
    mapped = {"RARFT_LLM_CACHE": DEFAULT_CACHE}
    mapped |= {"RARFT_LLM_" + k.removeprefix(ENV_PREFIX): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    return LLMClient.from_env(mapped)


def reference_text(rec: RiqRecord) -> str:
    if rec.task_type == "answerable":
        return f"The query is answerable: the moment is {format_span(*rec.span)} seconds (video length {rec.duration:g} s)."
    cats = f" Facts changed: {', '.join(rec.categories)}." if rec.categories else ""
    return (f"The query is NOT answerable. Reference explanation: {rec.explanation or rec.reference_answer}"
            f" A correct query would be: \"{rec.correction_target}\".{cats}")


def messages(rec: RiqRecord, completion) -> list[dict]:
    user = (f"Query: \"{rec.problem}\"\nReference: {reference_text(rec)}\n"
            f"Model output:\n<<<\n{completion_text(completion)}\n>>>")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(content: str) -> Verdict:
    """The reply's JSON object (a ```json fence or text around it is tolerated); LLMError('invalid_reply') otherwise."""
    text = content.strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise LLMError("invalid_reply", "no JSON object in the reply")
    try:
        return Verdict.model_validate(json.loads(text[start : end + 1]))
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "<reply>"
            raise LLMError("invalid_reply", f"{where}: {err['msg']}") from None
        raise LLMError("invalid_reply", "reply is not valid JSON") from None


def judge_one(client: LLMClient, rec: RiqRecord, completion, retries: int = 2, backoff_s: float = 1.0) -> dict:
    """``{"id", relevant, span, categories, reasoning_score}`` or ``{"id", "error", "reason"}``; never raises LLMError."""
    attempt = 0
    while True:
        try:
            verdict = parse_verdict(client.chat(messages(rec, completion)))
            return {"id": rec.id, **verdict.model_dump()}
        except LLMError as exc:
            if exc.key in RETRYABLE and attempt < retries:
                attempt += 1
                time.sleep(backoff_s * attempt)
                continue
            log.warning("judge: record %s: %s", rec.id, exc)
            return {"id": rec.id, "error": exc.key, "reason": str(exc)}


def judge_all(client: LLMClient, records: Sequence[RiqRecord], completions: Sequence, workers: int = 4,
              retries: int = 2, backoff_s: float = 1.0) -> list[dict]:
    """One verdict (or failure) per record, in record order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda rc: judge_one(client, rc[0], rc[1], retries, backoff_s), zip(records, completions, strict=True)))


def verdict_table(records: Sequence[RiqRecord], verdicts: Sequence[dict]) -> M.ItemTable:
    """An ItemTable whose decisions, spans and categories are the judge's (failed verdicts must be left out)."""
    answerable = np.array([r.task_type == "answerable" for r in records], dtype=bool)
    rel = np.array([bool(v["relevant"]) for v in verdicts], dtype=bool)
    spans = np.array([v["span"] if v.get("span") else (np.nan, np.nan) for v in verdicts], dtype=float).reshape(-1, 2)
    gt = np.array([r.span or (0.0, 0.0) for r in records], dtype=float).reshape(-1, 2)
    dur = np.array([r.duration for r in records], dtype=float)
    iou, _, _ = rewards.clipped_iou(spans[:, 0], spans[:, 1], gt[:, 0], gt[:, 1], dur)
    iou = np.where(answerable & rel, iou, 0.0)
    correct_refusal = ~answerable & ~rel
    ra = np.where(answerable & rel, iou, np.where(correct_refusal, 1.0, 0.0))
    cats = [v.get("categories") or [] if ok else [] for v, ok in zip(verdicts, correct_refusal)]
    rt = np.array([categorize.jaccard(c, r.categories) if ok else 0.0 for c, r, ok in zip(cats, records, correct_refusal)], dtype=float)
    has_gold = np.array([bool(r.categories) for r in records], dtype=bool)
    return M.ItemTable(
        ids=[r.id for r in records], task_type=[r.task_type for r in records], kind=[r.kind for r in records],
        difficulty=[r.difficulty for r in records], categories=[list(r.categories) for r in records],
        answerable=answerable, has_answer=np.ones(len(records), dtype=bool), pred_relevant=rel,
        pred_start=spans[:, 0], pred_end=spans[:, 1], iou=iou, ra_iou=ra,
        rt_iou=np.where(has_gold, rt.reshape(-1), np.nan), pred_categories=cats,
    )


def judge_metrics(records: Sequence[RiqRecord], verdicts: Sequence[dict], thresholds: Sequence[float] = M.THRESHOLDS,
                  threshold_op: str = ">=") -> dict:
    """The ``judge`` block: the RA-RFT metrics with the judge's reading of each completion, over judged items."""
    ok = [i for i, v in enumerate(verdicts) if "error" not in v]
    recs, vs = [records[i] for i in ok], [verdicts[i] for i in ok]
    t = verdict_table(recs, vs)
    scores = np.array([v["reasoning_score"] for v in vs], dtype=float)
    mean = lambda x: float(x.mean()) if x.size else 0.0  # noqa: E731
    return {
        "n_judged": len(ok),
        "n_failed": len(verdicts) - len(ok),
        "failed_by_reason": dict(Counter(v["error"] for v in verdicts if "error" in v)),
        "relevance": M.relevance(t),
        "ra_iou": M.ra_iou(t, thresholds, threshold_op),
        "grounding": M.grounding(t, thresholds, threshold_op),
        "rt_iou": M.rt_iou(t),
        "reasoning_score": {"mean": mean(scores), "answerable": mean(scores[t.answerable]), "refusable": mean(scores[~t.answerable])},
    }
