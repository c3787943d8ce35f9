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
from pipeline.core.io import InputError, atomic_dir, write_json, write_jsonl
from pipeline.core.params import RiqParams
from pipeline.riq import leakage
from pipeline.riq.schema import DIFFICULTY_EDITS, RiqRecord
from pipeline.riq.sets import ImportedSet, add_refusals, find_file, import_set, subset_videos
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


def stats_report(videos: dict, records: dict, splits: dict, quarantined: dict, source: dict) -> dict:
    """The stats file (a DVC metric) of every build, synthetic or imported: the same keys in the
    same places, so `dvc metrics diff` across a change of source compares like with like.

    ``records.in``: queries read (imported) or written (synthetic); ``generated``: refusals the
    generators added (imported) or every generated record (synthetic). What only one source has
    lives under ``source`` (``source.kind`` names it).
    """
    out = {"videos": dict(videos), "records": dict(records), "splits": splits,
           "quarantined": dict(sorted(quarantined.items())), "source": source}
    return out


def split_videos(video_ids: list[str], test_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Seeded split by video: (train ids, test ids); each non-empty when there are >= 2 videos.
    ``test_fraction`` 0: no evaluation set is a split of this source, every video trains."""
    ids = sorted(video_ids)
    if test_fraction == 0:
        return set(ids), set()
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


def split_set(params: RiqParams) -> str | None:
    """The evaluation set that holds the train source's held-out videos (format 'split'), if any."""
    return next((name for name, s in params.eval_sets.items() if s.format == "split"), None)


def import_folders(imports) -> list[Path]:
    if imports is None:
        return []
    return [Path(imports)] if isinstance(imports, (str, Path)) else [Path(f) for f in imports]


def build_riq(
    params: RiqParams, annotations: str | Path, frames_dir: str | Path, out_dir: str | Path, stats_path: str | Path,
    imports: str | Path | list | None = None,
) -> dict:
    """Write {out_dir}/train.jsonl, {out_dir}/eval/<set>.jsonl per evaluation set, quarantine.jsonl
    and the stats file; return the stats.

    The train RIQ comes from the event logs (``riq.source`` 'synthetic'), one imported file
    (``riq.import_file``) or every file of ``riq.train_sets`` ('sets'); the held-out videos of the
    first two go to the evaluation set of format 'split', if there is one. Imported evaluation
    sets are read as released; the leakage guard (pipeline.riq.leakage) compares each with the
    train RIQ. ``imports``: the folder(s) annotation files are looked up in, in order.
    """
    folders = import_folders(imports)
    hold_out = params.test_fraction if split_set(params) else 0.0
    if params.source == "synthetic":
        rows, quarantine, report, train_queries = build_synthetic(params, annotations, frames_dir, hold_out)
    elif params.source == "sets":
        rows, quarantine, report, train_queries = build_train_sets(params, folders, frames_dir, hold_out)
    else:
        rows, quarantine, report, train_queries = build_imported(params, folders, frames_dir, hold_out)
    return finish_build(params, rows, quarantine, report, train_queries, folders, frames_dir, Path(out_dir), stats_path)


def build_synthetic(params: RiqParams, annotations: str | Path, frames_dir: str | Path, hold_out: float):
    """Records written from the event logs: (rows by split, quarantine, stats report, train queries by video)."""
    annotations = Path(annotations)
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
    train_ids, test_ids = split_videos([log.video_id for log in logs], hold_out, params.seed)

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
        n_shuffled = params.shuffled_per_video
        if split == "train" and params.train_shuffled_per_video is not None:
            n_shuffled = params.train_shuffled_per_video
        refusable = refusable + shuffled_drafts(rng, log, answerable, donors, n_shuffled, seen, params.max_redraws, stats)
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

    v, r = stats["videos"], stats["records"]
    report = stats_report(
        videos={"in": v["in"], "train": v["train"], "test": v["test"], "quarantined": v["quarantined"]},
        records={"in": r["generated"], "generated": r["generated"], "train": r["train"], "test": r["test"], "quarantined": r["quarantined"]},
        splits={split: _split_stats(rows[split]) for split in ("train", "test")},
        quarantined=stats["quarantined"],
        source={"kind": "synthetic", "videos_without_queries": v["no_queries"], "ordinal_answerable": r["ordinal_answerable"],
                "unnameable_events": r["unnameable_events"], "rejected": dict(stats["rejected"]), "gave_up": dict(stats["gave_up"])},
    )
    return rows, quarantine, report, leakage.queries_by_video(rows["train"])


# --------------------------------------------------------------------------- imported sets
def _split_imported(params: RiqParams, imported: ImportedSet, hold_out: float, where: Path) -> tuple[dict, set[str], set[str]]:
    """Rows by split of an imported train source, split by video; (rows, train ids, test ids)."""
    # Evaluation-only refusals (no correction target, docs/IMPORT.md) are never trained on: a video that has
    # nothing else goes to the held-out split; one elsewhere is quarantined (`evaluation_only_in_train`).
    eval_only = lambda r: r["task_type"] == "refusable" and not r["refusable_queries"]  # noqa: E731
    records = imported.records
    trainable = {r["video"] for r in records if not eval_only(r)}
    train_ids, test_ids = split_videos(sorted(trainable), hold_out, params.seed)
    if hold_out:
        test_ids |= {r["video"] for r in records} - trainable
    for r in [r for r in records if eval_only(r) and r["video"] not in test_ids]:
        where_to = f"video {r['video']} is in the train split" if r["video"] in train_ids else "no evaluation set of format 'split' holds it"
        imported.quarantine_extra(r["id"], f"{where}: record {r['id']}: refusable_queries: empty (evaluation only) and {where_to}", r, "evaluation_only_in_train")
    records = [r for r in records if not (eval_only(r) and r["video"] not in test_ids)]
    imported.records = records
    rows = {
        split: [RiqRecord.model_validate(r).model_dump(mode="json") for r in records if (r["video"] in test_ids) == (split == "test")]
        for split in ("train", "test")
    }
    return rows, train_ids, test_ids


def _imported_report(sets: list[ImportedSet], rows: dict, train_ids: set[str], test_ids: set[str], source: dict) -> dict:
    reasons: Counter = Counter()
    for imp in sets:
        reasons += Counter(imp.report["quarantined_by_reason"]) + imp.extra_reasons
    for key in ("llm_failed", "evaluation_only_in_train"):
        reasons.setdefault(key, 0)
    n_videos_in = len(set().union(*(imp.queries_by_video for imp in sets)))
    return stats_report(
        videos={"in": n_videos_in, "train": len(train_ids), "test": len(test_ids), "quarantined": n_videos_in - len(train_ids) - len(test_ids)},
        records={"in": sum(imp.report["queries_read"] for imp in sets),
                 "generated": sum(sum(imp.generation.get("generated", {}).values()) for imp in sets),
                 "train": len(rows["train"]), "test": len(rows["test"]), "quarantined": sum(len(imp.quarantine) for imp in sets)},
        splits={split: _split_stats(rows[split]) for split in ("train", "test")},
        quarantined=reasons,
        source=source,
    )


def build_imported(params: RiqParams, folders: list[Path], frames_dir: str | Path, hold_out: float):
    """The train RIQ from one imported file (riq.source + riq.import_file): import, join with the frame cache,
    generate refusable queries for answerable items that have none (riq.generators), split by video."""
    if not params.import_file:
        raise InputError(f"params.yaml: riq.import_file: required when riq.source is {params.source!r} (a file name inside data/import/)")
    path = find_file(folders, params.import_file, "riq.import_file")
    imported = import_set(params.source, params.source, path, frames_dir, source=params.source)
    add_refusals(params, imported)
    rows, train_ids, test_ids = _split_imported(params, imported, hold_out, path)
    report = _imported_report([imported], rows, train_ids, test_ids,
                              {"kind": params.source, "import": imported.report, "generation": imported.generation})
    train_queries = {v: q for v, q in imported.queries_by_video.items() if v not in test_ids}
    return rows, imported.quarantine, report, train_queries


def build_train_sets(params: RiqParams, folders: list[Path], frames_dir: str | Path, hold_out: float):
    """The train RIQ from every file of riq.train_sets (riq.source 'sets'), each given its own refusals."""
    sets: list[ImportedSet] = []
    owner: dict[str, str] = {}
    for name, ts in params.train_sets.items():
        path = find_file(folders, ts.file, f"riq.train_sets.{name}.file")
        imported = import_set(name, ts.format, path, frames_dir)
        subset_videos(imported, ts.max_videos, params.seed, str(path))
        add_refusals(params, imported)
        for r in imported.records:
            if owner.setdefault(r["id"], name) != name:
                raise InputError(f"{path}: record {r['id']}: id: also in train set {owner[r['id']]} (the same video in two train files; list it once)")
        sets.append(imported)
    merged = ImportedSet("sets", [r for imp in sets for r in imp.records], [], {}, {}, {})
    rows, train_ids, test_ids = _split_imported(params, merged, hold_out, Path("riq.train_sets"))
    report = _imported_report(sets, rows, train_ids, test_ids,
                              {"kind": "sets", "train_sets": {imp.name: imp.stats() for imp in sets}})
    report["records"]["quarantined"] += len(merged.quarantine)
    report["quarantined"] = dict(sorted((Counter(report["quarantined"]) + merged.extra_reasons).items()))
    train_queries: dict[str, set[str]] = {}
    for imp in sets:
        for v, q in imp.queries_by_video.items():
            if v not in test_ids:
                train_queries.setdefault(v, set()).update(q)
    return rows, [q for imp in sets for q in imp.quarantine] + merged.quarantine, report, train_queries


# --------------------------------------------------------------------------- evaluation sets, leakage guard, files
def finish_build(params: RiqParams, rows: dict, quarantine: list[dict], report: dict, train_queries: dict[str, set[str]],
                 folders: list[Path], frames_dir: str | Path, out_dir: Path, stats_path: str | Path) -> dict:
    """Import every evaluation set, run the leakage guard, and write every file of the build."""
    evals: dict[str, list[dict]] = {}
    set_stats: dict[str, dict] = {}
    excluded: dict[str, str] = {}  # train video -> the evaluation set it is excluded for
    allowed: set[str] = set()
    for name, es in params.eval_sets.items():
        if es.format == "split":
            evals[name] = rows["test"]
            set_stats[name] = {"format": "split", "in": len(rows["test"]), "written": len(rows["test"]), "quarantined": 0,
                               "videos": len({r["video"] for r in rows["test"]}),
                               "leakage": {"policy": es.leakage, "videos": 0, "queries": 0, "first": []}}
            continue
        try:
            path = find_file(folders, es.file, f"riq.eval_sets.{name}.file")
        except InputError:
            if es.required:
                raise
            evals[name] = []
            set_stats[name] = {"format": es.format, "file": es.file, "present": False, "in": 0, "written": 0, "quarantined": 0, "videos": 0,
                               "leakage": {"policy": es.leakage, "videos": 0, "queries": 0, "first": []}}
            continue
        imported = import_set(name, es.format, path, frames_dir)
        subset_videos(imported, es.max_videos, params.seed, str(path))
        found = leakage.overlap(imported.queries_by_video, train_queries)
        if es.leakage == "error":
            leakage.check(name, str(path), found, "error")
        if es.leakage == "exclude_from_train":
            for v in found.videos:
                excluded.setdefault(v, name)
        elif found.videos:
            allowed |= set(found.videos)
        quarantine += imported.quarantine
        evals[name] = [RiqRecord.model_validate(r).model_dump(mode="json") for r in imported.records]
        set_stats[name] = {**imported.stats(), "leakage": found.report(es.leakage)}

    # exclude_from_train: the train records of an evaluation set's videos go to the quarantine, with the set named.
    kept, n_excluded = [], Counter()
    for r in rows["train"]:
        if r["video"] in excluded:
            quarantine.append({"id": r["id"], "reason": f"leakage: record {r['id']}: video {r['video']} is in evaluation set {excluded[r['video']]} "
                                                        f"(riq.eval_sets.{excluded[r['video']]}.leakage: exclude_from_train)", "record": r})
            n_excluded[excluded[r["video"]]] += 1
        else:
            kept.append(r)
    rows["train"] = kept
    for name, st in set_stats.items():
        st["leakage"] |= {"excluded_train_videos": len({v for v, s in excluded.items() if s == name and v in train_queries}),
                          "excluded_train_records": n_excluded[name]}
    report["records"]["train"] = len(kept)
    report["records"]["quarantined"] += sum(n_excluded.values())
    report["videos"]["train"] = len({r["video"] for r in kept}) if excluded else report["videos"]["train"]
    report["quarantined"] = dict(sorted({**report["quarantined"], "leakage": sum(n_excluded.values())}.items()))
    report["splits"]["train"] = _split_stats(kept)
    audit = blind_audit(params, rows)
    if audit is not None:
        report["audit"] = audit
    for name, es in params.eval_sets.items():
        if es.format != "split" and params.audit and len({r["task_type"] for r in evals[name]}) == 2:
            set_stats[name]["audit"] = blind_audit(params, {"train": rows["train"], "test": evals[name]})
    report["sets"] = set_stats
    report["leakage"] = {"excluded_train_videos": len(set(excluded) & set(train_queries)), "excluded_train_records": sum(n_excluded.values()),
                         "allowed_videos": len(allowed)}

    write_jsonl(out_dir / "train.jsonl", rows["train"])
    with atomic_dir(out_dir / "eval") as tmp:
        for name, recs in evals.items():
            write_jsonl(tmp / f"{name}.jsonl", recs)
    write_jsonl(out_dir / "quarantine.jsonl", quarantine)
    write_json(stats_path, report)
    return report


def summary_line(stats: dict) -> str:
    """The one JSON line the build_riq stage and `rarft build-riq` print."""
    return json.dumps({"videos": stats["videos"], "records": stats["records"], "quarantined": stats["quarantined"]})
