"""Stage build_riq: RIQ records from the synthetic event logs or an imported annotation set.

Synthetic logs: queries are written by pipeline.riq.synthetic. Imported sets: pipeline.riq.importers,
with refusals generated (pipeline.riq.generators) for answerable items that have none.
Records are validated (pipeline.riq.validate), joined with the frame cache and split by
video; whatever fails goes to the quarantine file with its reason. See docs/RIQ.md.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from pipeline.core.events import VideoLog
from pipeline.core.frames_cache import frames_path
from pipeline.core.io import InputError, write_json, write_jsonl
from pipeline.core.params import RiqParams
from pipeline.riq.schema import DIFFICULTY_EDITS, RiqRecord
from pipeline.riq.synthetic import (
    Draft,
    answerable_drafts,
    contrast_answer,
    hard_irrelevant_drafts,
    shuffled_drafts,
    to_record,
)
from pipeline.riq.validate import frames_error, record_errors


# --------------------------------------------------------------------------- build
def _read_logs(path: Path, quarantine: list[dict], stats: dict) -> list[VideoLog]:
    logs: dict[str, VideoLog] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            stats["videos"]["in"] += 1
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                _quarantine(quarantine, stats, f"line{lineno}", f"{path}:{lineno}: not valid JSON ({exc.msg})", line.rstrip("\n"), "invalid_log")
                continue
            rid = raw.get("video_id") if isinstance(raw, dict) and isinstance(raw.get("video_id"), str) else f"line{lineno}"
            try:
                log = VideoLog.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                # VideoLog's cross-field rules are about its events ("event e1: ...").
                field = ".".join(str(p) for p in err["loc"]) or ("events" if err["msg"].startswith("Value error, event") else "<log>")
                reason = f"{path}: record {rid}: {field}: {err['msg'].removeprefix('Value error, ')}"
                _quarantine(quarantine, stats, rid, reason, raw, "invalid_log")
                continue
            if log.video_id in logs:
                _quarantine(quarantine, stats, rid, f"{path}: record {rid}: video_id: duplicate video id", raw, "duplicate_video")
                continue
            logs[log.video_id] = log
    return [logs[k] for k in sorted(logs)]


def _quarantine(quarantine: list[dict], stats: dict, rid: str, reason: str, record, key: str) -> None:
    quarantine.append({"id": rid, "reason": reason, "record": record})
    stats["quarantined"][key] += 1


def blind_audit(params: RiqParams, rows: dict[str, list[dict]]) -> dict | None:
    """The query-only baseline of this build's own split (pipeline.riq.audit), or None when off.

    In the stats file, so `dvc metrics diff` shows when a generator change adds or removes a
    wording cue. A split that cannot be audited (one class only) says why instead of failing the build.
    """
    if not params.audit:
        return None
    from pipeline.riq.audit import audit

    train, test = ([RiqRecord.model_validate(r) for r in rows[s]] for s in ("train", "test"))
    try:
        return audit(train, test, seed=params.seed)
    except InputError as exc:
        return {"error": str(exc)}


def stats_report(videos: dict, records: dict, splits: dict, quarantined: dict, source: dict, audit: dict | None = None) -> dict:
    """The stats file (a DVC metric) of every build, synthetic or imported: the same keys in the
    same places, so `dvc metrics diff` across a change of source compares like with like.

    ``records.in``: queries read (imported) or written (synthetic); ``generated``: refusals the
    generators added (imported) or every generated record (synthetic). What only one source has
    lives under ``source`` (``source.kind`` names it).
    """
    out = {"videos": dict(videos), "records": dict(records), "splits": splits,
           "quarantined": dict(sorted(quarantined.items())), "source": source}
    if audit is not None:
        out["audit"] = audit
    return out


def split_videos(video_ids: list[str], test_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Seeded split by video: (train ids, test ids); each non-empty when there are >= 2 videos."""
    ids = sorted(video_ids)
    random.Random(f"{seed}:split").shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    if len(ids) >= 2:
        n_test = min(max(n_test, 1), len(ids) - 1)
    return set(ids[n_test:]), set(ids[:n_test])


def _split_stats(records: list[dict]) -> dict:
    out = {"task_type": Counter(), "kind": Counter(), "difficulty": Counter(), "category": Counter()}
    for r in records:
        out["task_type"][r["task_type"]] += 1
        out["kind"][r["kind"]] += 1
        out["difficulty"][r["difficulty"] or "none"] += 1
        for c in r["categories"]:
            out["category"][c] += 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def build_riq(
    params: RiqParams, annotations: str | Path, frames_dir: str | Path, out_dir: str | Path, stats_path: str | Path,
    imports: str | Path | None = None,
) -> dict:
    """Write {out_dir}/train.jsonl, test.jsonl, quarantine.jsonl and the stats file; return the stats.

    With ``riq.source`` other than 'synthetic' the records come from ``imports/riq.import_file``
    (pipeline.riq.importers) instead of the event logs.
    """
    if params.source != "synthetic":
        return build_imported(params, imports, frames_dir, out_dir, stats_path)
    annotations, out_dir = Path(annotations), Path(out_dir)
    # Every key present from the start, so `dvc metrics diff` compares like with like.
    stats: dict = {
        "videos": Counter(dict.fromkeys(("in", "train", "test", "quarantined", "no_queries"), 0)),
        "records": Counter(dict.fromkeys(("generated", "train", "test", "quarantined", "ordinal_answerable", "unnameable_events"), 0)),
        "quarantined": Counter(dict.fromkeys(("no_frames", "invalid_record", "invalid_log", "duplicate_video"), 0)),
        "rejected": Counter({k: 0 for k in (*DIFFICULTY_EDITS, "shuffled")}),
        "gave_up": Counter({k: 0 for k in (*DIFFICULTY_EDITS, "shuffled")}),
    }
    quarantine: list[dict] = []
    logs = _read_logs(annotations, quarantine, stats)
    n_bad_logs = len(quarantine)
    train_ids, test_ids = split_videos([log.video_id for log in logs], params.test_fraction, params.seed)

    # Queries from each video are drawn from a generator seeded by its id, so adding
    # or dropping one video leaves the queries of the others unchanged.
    per_video: dict[str, tuple[list[Draft], list[Draft], set[str]]] = {}
    for log in logs:
        rng = random.Random(f"{params.seed}:{log.video_id}")
        answerable, by_event = answerable_drafts(rng, log, stats, params.order_clause_rate)
        seen = {d.problem for d in answerable}
        refusable = hard_irrelevant_drafts(rng, log, by_event, params, seen, stats)
        per_video[log.video_id] = (answerable, refusable, seen)

    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for log in logs:
        vid = log.video_id
        split = "test" if vid in test_ids else "train"
        split_ids = test_ids if split == "test" else train_ids
        answerable, refusable, seen = per_video[vid]
        donors = [per_video[other][0] for other in sorted(split_ids) if other != vid]
        rng = random.Random(f"{params.seed}:{vid}:shuffled")
        refusable = refusable + shuffled_drafts(
            rng, log, answerable, donors, params.shuffled_per_video, seen, params.max_redraws, stats
        )
        video_path = str(annotations.parent / log.video)
        stats["videos"][split] += 1
        if not answerable:
            stats["videos"]["no_queries"] += 1
        for idx, draft in enumerate(answerable + refusable):
            stats["records"]["generated"] += 1
            record = to_record(vid, idx, draft, video_path, log.duration, contrast_answer(draft, refusable), params.source)
            errors = record_errors(record)
            if errors:
                _quarantine(quarantine, stats, record["id"], f"{annotations}: record {record['id']}: {errors[0]}", record, "invalid_record")
                continue
            missing = frames_error(vid, frames_dir)
            if missing:
                _quarantine(quarantine, stats, record["id"], missing, record, "no_frames")
                continue
            record["frames_path"] = str(frames_path(frames_dir, vid))
            rows[split].append(RiqRecord.model_validate(record).model_dump(mode="json"))

    stats["videos"]["quarantined"] = n_bad_logs
    stats["records"]["train"], stats["records"]["test"] = len(rows["train"]), len(rows["test"])
    stats["records"]["quarantined"] = len(quarantine) - n_bad_logs
    # Nothing is lost: every log line and every generated record lands somewhere.
    assert stats["videos"]["in"] == len(logs) + n_bad_logs, stats["videos"]
    assert stats["records"]["generated"] == len(rows["train"]) + len(rows["test"]) + stats["records"]["quarantined"]
    assert not (train_ids & test_ids)

    write_jsonl(out_dir / "train.jsonl", rows["train"])
    write_jsonl(out_dir / "test.jsonl", rows["test"])
    write_jsonl(out_dir / "quarantine.jsonl", quarantine)
    v, r = stats["videos"], stats["records"]
    report = stats_report(
        videos={"in": v["in"], "train": v["train"], "test": v["test"], "quarantined": v["quarantined"]},
        records={"in": r["generated"], "generated": r["generated"], "train": r["train"], "test": r["test"], "quarantined": r["quarantined"]},
        splits={split: _split_stats(rows[split]) for split in ("train", "test")},
        quarantined=stats["quarantined"],
        source={"kind": "synthetic", "videos_without_queries": v["no_queries"], "ordinal_answerable": r["ordinal_answerable"],
                "unnameable_events": r["unnameable_events"], "rejected": dict(stats["rejected"]), "gave_up": dict(stats["gave_up"])},
        audit=blind_audit(params, rows),
    )
    write_json(stats_path, report)
    return report


# --------------------------------------------------------------------------- imported sets
def build_imported(params: RiqParams, imports: str | Path | None, frames_dir: str | Path, out_dir: str | Path, stats_path: str | Path) -> dict:
    """build_riq for an imported annotation set: import, join with the frame cache, generate
    refusable queries for answerable items that have none (riq.generators), split by video."""
    from pipeline.riq.importers import import_annotations

    if imports is None or not params.import_file:
        raise InputError(f"params.yaml: riq.import_file: required when riq.source is {params.source!r} (a file name inside data/import/)")
    path = Path(imports) / params.import_file
    result = import_annotations(params.source, path, frames_dir, source=params.source)
    quarantine = list(result.quarantine)
    records = result.records
    with_refusal = {(r["video"], r["refusable_queries"][0]["problem"]) for r in records if r["refusable_queries"]}
    needy = [r for r in records if r["task_type"] == "answerable" and (r["video"], r["problem"]) not in with_refusal]
    generation: dict = {}
    n_failed = 0
    if needy and any(v > 0 for v in params.generators.values()):
        from pipeline.riq.generators import Vocabulary, generate_refusables
        from pipeline.riq.llm_client import LLMClient

        gens = {k: v for k, v in params.generators.items() if v > 0}
        gen = generate_refusables(
            needy, result.captions, gens, difficulty_weights=params.perturb_difficulty, max_similarity=params.max_similarity,
            seed=params.seed, llm=LLMClient.from_env() if "llm" in gens else None,
            vocab=Vocabulary.from_texts([c for cs in result.captions.values() for c in cs]),
        )
        quarantine += gen.failures
        generation, n_failed = gen.stats, len(gen.failures)
        first = {}
        for g in gen.records:
            first.setdefault(g["refusable_queries"][0]["problem"] + "\0" + g["video"], g["explanation"])
        # An answerable query's contrast answer is the refusal generated from it, when there is one.
        records = [
            {**r, "contrast_answer": first.get(r["problem"] + "\0" + r["video"], r["contrast_answer"])} if r["task_type"] == "answerable" else r
            for r in records
        ]
        for g in gen.records:
            errors = record_errors(g)
            if errors:
                quarantine.append({"id": g["id"], "reason": f"generated: record {g['id']}: {errors[0]}", "record": g})
            else:
                records.append(g)
    # Evaluation-only refusals (no correction target, docs/IMPORT.md) are never trained on: a video that has
    # nothing else goes to test; one on a train video is quarantined (`evaluation_only_in_train`).
    eval_only = lambda r: r["task_type"] == "refusable" and not r["refusable_queries"]  # noqa: E731
    trainable = {r["video"] for r in records if not eval_only(r)}
    train_ids, test_ids = split_videos(sorted(trainable), params.test_fraction, params.seed)
    test_ids |= {r["video"] for r in records} - trainable
    n_eval_only_in_train = 0
    for r in [r for r in records if eval_only(r) and r["video"] in train_ids]:
        quarantine.append({"id": r["id"], "reason": f"{path}: record {r['id']}: refusable_queries: empty (evaluation only) and video {r['video']} is in the train split", "record": r})
        n_eval_only_in_train += 1
    records = [r for r in records if not (eval_only(r) and r["video"] in train_ids)]
    rows = {
        split: [RiqRecord.model_validate(r).model_dump(mode="json") for r in records if (r["video"] in test_ids) == (split == "test")]
        for split in ("train", "test")
    }
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "train.jsonl", rows["train"])
    write_jsonl(out_dir / "test.jsonl", rows["test"])
    write_jsonl(out_dir / "quarantine.jsonl", quarantine)
    reasons = Counter(result.report["quarantined_by_reason"])
    reasons["llm_failed"] = n_failed
    reasons["evaluation_only_in_train"] = n_eval_only_in_train
    n_videos_in = len({d["video"] for d in records} | {q["record"].get("video") for q in result.quarantine if isinstance(q["record"], dict)})
    report = stats_report(
        videos={"in": n_videos_in, "train": len(train_ids), "test": len(test_ids), "quarantined": n_videos_in - len(train_ids) - len(test_ids)},
        records={"in": result.report["queries_read"], "generated": sum(generation.get("generated", {}).values()),
                 "train": len(rows["train"]), "test": len(rows["test"]), "quarantined": len(quarantine)},
        splits={split: _split_stats(rows[split]) for split in ("train", "test")},
        quarantined=reasons,
        source={"kind": params.source, "import": result.report, "generation": generation},
        audit=blind_audit(params, rows),
    )
    write_json(stats_path, report)
    return report


def summary_line(stats: dict) -> str:
    """The one JSON line the build_riq stage and `rarft build-riq` print."""
    return json.dumps({"videos": stats["videos"], "records": stats["records"], "quarantined": stats["quarantined"]})
