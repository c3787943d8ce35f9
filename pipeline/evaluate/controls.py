"""Video controls of evaluation: does a model's answer depend on the video?

- **blind**: every frame replaced by constant grey (uint8 128), same frame count, size,
  timestamps and meta (fps), so the processor makes the same number of video tokens and
  the prompt is unchanged; only the pixels carry no information.
- **swapped**: each answerable record's video replaced by a donor video of the same test
  set whose queries do not include the record's query; the right answer is then a refusal.

Donors come from a seeded derangement of the test set's videos (Sattolo's algorithm: one
cycle, so no video keeps itself) and are checked per record (:func:`compatible`); a record
whose derangement donor fails the check takes the first video that passes in a second
seeded order. docs/EVALUATION.md has the exact rules.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.events import VideoLog
from pipeline.core.frames_cache import VideoFrames

from pipeline.riq.schema import RiqRecord
from pipeline.riq.synthetic import query_matches

GREY = 128


def blind_frames(vf: VideoFrames) -> VideoFrames:
    """The same video shape, timestamps and meta, every pixel ``GREY``."""
    return VideoFrames(frames=np.full_like(vf.frames, GREY), timestamps=vf.timestamps.copy(), meta=dict(vf.meta))


def normalize_query(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation: how query texts are compared."""
    return " ".join(text.lower().split()).rstrip(" .?!")


@dataclass(frozen=True)
class Donors:
    """The swapped control's plan: record id -> donor video, the donors' frames files, and the
    answerable records left without one (no video passed the check)."""

    donor: dict[str, str]
    frames: dict[str, str]
    no_donor: list[str]

    def records(self, records: Sequence[RiqRecord]) -> list[RiqRecord]:
        """The swapped answerable records, in input order: each one's frames are its donor's."""
        return [r.model_copy(update={"frames_path": self.frames[self.donor[r.id]]}) for r in records if r.id in self.donor]


def answerable_queries(pool: Sequence[RiqRecord]) -> dict[str, set[str]]:
    """Per video: the normalized texts of its answerable queries."""
    out: dict[str, set[str]] = {}
    for r in pool:
        out.setdefault(r.video, set())
        if r.task_type == "answerable":
            out[r.video].add(normalize_query(r.problem))
    return out


def compatible(rec: RiqRecord, donor: str, queries: Mapping[str, set[str]], logs: Mapping[str, VideoLog] | None = None) -> bool:
    """``donor`` may stand in for ``rec``'s video: another video, none of whose answerable
    queries is ``rec``'s query (normalized text), and, when the donor has an event log and the
    query is a synthetic one (:func:`pipeline.riq.synthetic.parse_query`), no event of the log
    matches it (:func:`pipeline.riq.synthetic.matching_events`)."""
    if donor == rec.video or normalize_query(rec.problem) in queries.get(donor, set()):
        return False
    return not (logs and donor in logs and query_matches(rec.problem, logs[donor]))


def sattolo(items: Sequence[str], rng: random.Random) -> dict[str, str]:
    """A uniformly random single-cycle permutation of ``items``: no item maps to itself (two or more items)."""
    perm = list(items)
    for i in range(len(perm) - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return dict(zip(items, perm))


def assign_donors(records: Sequence[RiqRecord], seed: int, pool: Sequence[RiqRecord] | None = None,
                  logs: Mapping[str, VideoLog] | None = None) -> Donors:
    """A donor video for every answerable record of ``records``; deterministic in ``seed``.

    ``pool``: the test set's records with frames (default ``records``); its videos are the
    candidates and its answerable queries define what a video "includes".
    """
    pool = list(records if pool is None else pool)
    frames = {}
    for r in pool:
        frames.setdefault(r.video, r.frames_path)
    videos = sorted(frames)
    rng = random.Random(seed)
    cycle = sattolo(videos, rng)
    fallback = list(videos)
    rng.shuffle(fallback)
    queries = answerable_queries(pool)
    donor, no_donor = {}, []
    for r in records:
        if r.task_type != "answerable":
            continue
        first = cycle.get(r.video)
        choices = ([first] if first is not None else []) + fallback
        pick = next((v for v in choices if compatible(r, v, queries, logs)), None)
        if pick is None:
            no_donor.append(r.id)
        else:
            donor[r.id] = pick
    return Donors(donor=donor, frames={v: frames[v] for v in set(donor.values())}, no_donor=no_donor)
