"""Annotation sets of the paper's protocol: train sets given refusals, evaluation sets as released.

A *train set* (``riq.train_sets``: Charades-STA train, ActivityNet Captions train, ...) is
imported (pipeline.riq.importers), and every answerable query without a refusal of its own gets
refusals from the generators (perturb / llm: hard-irrelevant; shuffle: a query of another video
*of the same set*, so a refusal is never given away by another dataset's style). An *evaluation
set* (``riq.eval_sets``) is imported as released: its refusals are the authors', never ours.
Both may be cut to a seeded sample of the videos that have frames (``max_videos``).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.io import InputError
from pipeline.core.params import RiqParams
from pipeline.riq.importers import ImportResult, import_annotations
from pipeline.riq.validate import record_errors


@dataclass
class ImportedSet:
    """One imported file: its records, its quarantine and the numbers of its stats entry."""

    name: str
    records: list[dict]
    quarantine: list[dict]
    queries_by_video: dict[str, set[str]]
    report: dict
    captions: dict[str, list[str]]
    generation: dict = field(default_factory=dict)
    extra_reasons: Counter = field(default_factory=Counter)  # quarantined after the import, by reason

    def stats(self) -> dict:
        """``in`` (queries read + generated) == ``written`` + ``quarantined``, by reason."""
        rep = self.report
        reasons = Counter(rep["quarantined_by_reason"]) + self.extra_reasons
        generated = sum(self.generation.get("generated", {}).values()) if self.generation else 0
        return {"format": rep["format"], "file": Path(rep["file"]).name, "items": rep["items_read"], "queries": rep["queries_read"],
                "generated": generated, "in": rep["queries_read"] + generated, "written": len(self.records),
                "quarantined": len(self.quarantine), "quarantined_by_reason": dict(sorted(reasons.items())),
                "videos": len({r["video"] for r in self.records}), "videos_in_file": len(self.queries_by_video),
                "task_type": dict(sorted(Counter(r["task_type"] for r in self.records).items())),
                **({"generation": self.generation} if self.generation else {})}


def find_file(folders: list[Path], name: str, key: str) -> Path:
    """``name`` in the first imports folder that has it (data/import/, then data/raw/annotations/)."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    looked = ", ".join(str(f) for f in folders) or "no imports folder given"
    raise InputError(f"params.yaml: {key}: {name} not found (looked in {looked})")


    def quarantine_extra(self, rid: str, reason: str, record, key: str) -> None:
        self.quarantine.append({"id": rid, "reason": reason, "record": record})
        self.extra_reasons[key] += 1


def subset_videos(imported: ImportedSet, max_videos: int, seed: int, where: str) -> None:
    """Keep a seeded sample of ``max_videos`` of the written videos; the others' records are quarantined."""
    videos = sorted({r["video"] for r in imported.records})
    if not max_videos or len(videos) <= max_videos:
        return
    random.Random(f"{seed}:{imported.name}:subset").shuffle(videos)
    keep = set(videos[:max_videos])
    kept = []
    for r in imported.records:
        if r["video"] in keep:
            kept.append(r)
        else:
            imported.quarantine_extra(r["id"], f"{where}: record {r['id']}: video {r['video']} not in the sample of max_videos={max_videos}", r, "not_in_subset")
    imported.records = kept


def import_set(name: str, fmt: str, path: Path, frames_dir, source: str | None = None) -> ImportedSet:
    result: ImportResult = import_annotations(fmt, path, frames_dir, source=source or name)
    return ImportedSet(name, list(result.records), list(result.quarantine), result.queries_by_video, result.report, result.captions)


def add_refusals(params: RiqParams, imported: ImportedSet) -> None:
    """Generated refusals for the set's answerable queries that have none (riq.generators); an
    answerable query's contrast answer becomes the refusal generated from it."""
    records = imported.records
    with_refusal = {(r["video"], r["refusable_queries"][0]["problem"]) for r in records if r["refusable_queries"]}
    needy = [r for r in records if r["task_type"] == "answerable" and (r["video"], r["problem"]) not in with_refusal]
    gens = {k: v for k, v in params.generators.items() if v > 0}
    if not needy or not gens:
        return
    from pipeline.riq.generators import Vocabulary, generate_refusables
    from pipeline.riq.llm_client import LLMClient

    gen = generate_refusables(
        needy, imported.captions, gens, difficulty_weights=params.perturb_difficulty, max_similarity=params.max_similarity,
        seed=params.seed, llm=LLMClient.from_env() if "llm" in gens else None,
        vocab=Vocabulary.from_texts([c for cs in imported.captions.values() for c in cs]),
    )
    imported.quarantine += gen.failures
    imported.extra_reasons["llm_failed"] += len(gen.failures)
    imported.generation = gen.stats
    first = {}
    for g in gen.records:
        first.setdefault(g["refusable_queries"][0]["problem"] + "\0" + g["video"], g["explanation"])
    records = [
        {**r, "contrast_answer": first.get(r["problem"] + "\0" + r["video"], r["contrast_answer"])} if r["task_type"] == "answerable" else r
        for r in records
    ]
    for g in gen.records:
        errors = record_errors(g)
        if errors:
            imported.quarantine_extra(g["id"], f"generated: record {g['id']}: {errors[0]}", g, "invalid_record")
        else:
            records.append(g)
    imported.records = records
