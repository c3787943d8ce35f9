"""Validation of RIQ files (`rarft validate`), shared with the builder's quarantine.

Every problem is one line naming the file, the record id and the field:
``test.jsonl: record syn_0003-q2: gt_answers: span [5.0, 3.0] must satisfy ...``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from pipeline.core.frames_cache import frames_path
from pipeline.core.io import InputError, read_jsonl
from pipeline.riq.schema import RiqRecord, is_safe_id

# Model-level rules raise "field: message"; recover the field so every line names one.
_FIELD_PREFIX = re.compile(r"^([a-z_]+): ")


def _format(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "literal_error":
        msg = f"unknown value {err['input']!r} ({msg})"
    elif err["type"] == "missing":
        msg = "missing"
    if not loc:
        return msg if _FIELD_PREFIX.match(msg) else f"<record>: {msg}"
    return f"{loc}: {msg}"


def record_errors(obj: dict) -> list[str]:
    """Problems of one record as 'field: message' lines (empty when valid)."""
    try:
        RiqRecord.model_validate(obj)
    except ValidationError as exc:
        return [_format(err) for err in exc.errors()]
    return []


def frames_error(video: str, frames_dir: str | Path) -> str | None:
    """The quarantine reason when the video's frames file is missing, else None."""
    if not isinstance(video, str) or not is_safe_id(video):
        return f"no frames file for video {video!r} (unsafe video id)"
    path = frames_path(frames_dir, video)
    return None if path.is_file() else f"no frames file for video {video} ({path})"


def _rows(path: Path) -> list[tuple[str, object]]:
    """(position label, object) pairs of a JSON Lines or JSON-list file."""
    if path.suffix == ".json":
        from pipeline.core.io import read_records

        return [(f"#{i}", obj) for i, obj in enumerate(read_records(path), 1)]
    return [(f"line {n}", obj) for n, obj in read_jsonl(path)]


def validate_file(path: str | Path, frames_dir: str | Path | None = None) -> dict:
    """Check every record of a RIQ file; return {'file', 'records', 'valid', 'errors', 'counts'}.

    With ``frames_dir`` the frames file ``<frames_dir>/<video>.npz`` of each record must exist.
    """
    path = Path(path)
    report: dict = {"file": str(path), "records": 0, "valid": 0, "errors": [], "counts": {}}
    try:
        rows = _rows(path)
    except (InputError, OSError, UnicodeDecodeError) as exc:
        report["errors"].append(str(exc) if isinstance(exc, InputError) else f"{path}: cannot read ({exc})")
        return report
    seen: dict[str, str] = {}
    counts: Counter = Counter()
    for where, obj in rows:
        report["records"] += 1
        if not isinstance(obj, dict):
            report["errors"].append(f"{path}: record {where}: <record>: expected a JSON object")
            continue
        rid = obj.get("id") if isinstance(obj.get("id"), str) and obj.get("id") else where
        problems = record_errors(obj)
        if rid in seen:
            problems.append(f"id: duplicate id (first at {seen[rid]})")
        else:
            seen[rid] = where
        if frames_dir is not None and not problems:
            missing = frames_error(obj["video"], frames_dir)
            if missing:
                problems.append(f"frames_path: {missing}")
        report["errors"].extend(f"{path}: record {rid}: {p}" for p in problems)
        if not problems:
            report["valid"] += 1
            counts[f"{obj['task_type']}/{obj['kind']}"] += 1
    report["counts"] = dict(sorted(counts.items()))
    return report


def dataset_card(path: str | Path, quarantine: str | Path | None = None) -> dict:
    """Counts of a RIQ file (task type, kind, difficulty, category, source), query length in
    words, duplicate queries (same video, same words), and quarantine reasons when given."""
    import statistics

    records = [obj for _, obj in _rows(Path(path))]
    lengths: dict[str, list[int]] = {}
    dupes, seen = 0, set()
    counts = {k: Counter() for k in ("task_type", "kind", "difficulty", "category", "source")}
    for r in records:
        counts["task_type"][r.get("task_type")] += 1
        counts["kind"][r.get("kind")] += 1
        counts["difficulty"][r.get("difficulty") or "none"] += 1
        counts["source"][r.get("source")] += 1
        for c in r.get("categories") or []:
            counts["category"][c] += 1
        lengths.setdefault(r.get("task_type"), []).append(len(str(r.get("problem", "")).split()))
        key = (r.get("video"), " ".join(re.findall(r"\w+", str(r.get("problem", "")).casefold())))
        dupes += key in seen
        seen.add(key)
    card = {
        "file": str(path), "records": len(records), "videos": len({r.get("video") for r in records}),
        **{k: dict(sorted(v.items(), key=lambda kv: str(kv[0]))) for k, v in counts.items()},
        "query_words": {
            t: {"mean": round(statistics.fmean(v), 2), "median": statistics.median(v), "max": max(v)} for t, v in sorted(lengths.items())
        },
        "duplicate_queries": dupes,
    }
    if quarantine is not None:
        reasons = Counter()
        for _, q in read_jsonl(quarantine):
            reason = str(q.get("reason", ""))
            # Reasons read "file: record id: field: message"; the field names the kind of problem.
            parts = [p.strip() for p in reason.split(": ")]
            reasons[parts[2] if len(parts) > 3 and parts[1].startswith("record") else parts[0].split(" (")[0][:60]] += 1
        card["quarantined"] = {"records": sum(reasons.values()), "by_field": dict(reasons.most_common())}
    return card
