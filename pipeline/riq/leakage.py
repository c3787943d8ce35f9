"""The leakage guard: no video of an evaluation set may be trained on.

build_riq compares the annotation *files*, not only what has frames: a video counts when
any query of it was read, written or quarantined, so a leaky configuration is caught on a
machine without the videos too. Each evaluation set's ``leakage`` param says what an overlap
does: ``error`` (the build fails naming the set, the count and the first ids),
``exclude_from_train`` (the train records of those videos go to the quarantine) or ``allow``
(kept, and recorded in the set's metrics file). evaluate checks again on the RIQ files it
reads, so a train.jsonl edited by hand cannot slip through. docs/RIQ.md, "Leakage guard".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.core.io import InputError

FIRST_IDS = 5


@dataclass(frozen=True)
class Overlap:
    """Videos (and, per shared video, query texts) that an evaluation set shares with the train RIQ."""

    videos: list[str]
    queries: int

    def report(self, policy: str) -> dict:
        return {"policy": policy, "videos": len(self.videos), "queries": self.queries, "first": self.videos[:FIRST_IDS]}


def overlap(eval_queries: Mapping[str, set[str]], train_queries: Mapping[str, set[str]]) -> Overlap:
    """``*_queries``: video -> normalized query texts read for it."""
    shared = sorted(set(eval_queries) & set(train_queries))
    return Overlap(shared, sum(len(eval_queries[v] & train_queries[v]) for v in shared))


def check(set_name: str, where: str, found: Overlap, policy: str) -> None:
    """Raise the one-line error of policy ``error`` (and of any overlap left after ``exclude_from_train``)."""
    if not found.videos or policy == "allow":
        return
    first = ", ".join(found.videos[:FIRST_IDS]) + (", ..." if len(found.videos) > FIRST_IDS else "")
    hint = ("set riq.eval_sets." + set_name + ".leakage to exclude_from_train or allow" if policy == "error"
            else "train.jsonl still holds them although the policy is exclude_from_train: rerun build_riq")
    n = len(found.videos)
    raise InputError(f"{where}: evaluation set {set_name}: {n} video{'s' if n != 1 else ''} ({found.queries} with the same query text) "
                     f"are also in the train RIQ (first: {first}); {hint}")


def queries_by_video(records: Iterable) -> dict[str, set[str]]:
    """video -> normalized query texts of RIQ records (dicts or RiqRecords)."""
    from pipeline.riq.importers import norm

    out: dict[str, set[str]] = {}
    for r in records:
        video, problem = (r["video"], r["problem"]) if isinstance(r, dict) else (r.video, r.problem)
        out.setdefault(video, set()).add(norm(problem))
    return out
