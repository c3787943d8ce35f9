"""RIQ records written in other formats (`rarft export`): ``EXPORTERS``.

``seed``: the RIQ record of the seed README (../shared/seed/RA-RFT-README.md, "Data Format"):
``{video, video_path, duration, problem, task_type, gt_answers}`` for an answerable query, plus
``refusable_queries`` for a refusal, in the README's key order. What only our schema has (id, kind,
explanation, categories, ...) is dropped; ``riq.source: seed`` imports the file back (docs/IMPORT.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.core.io import InputError, write_text
from pipeline.riq.schema import RiqRecord, read_riq


def _answers(answers) -> list[dict]:
    return [{"answer": [float(a.answer[0]), float(a.answer[1])]} for a in answers]


def to_seed(record: RiqRecord) -> dict:
    """One record in the seed README's shape."""
    out = {"video": record.video, "video_path": record.video_path, "duration": record.duration,
           "problem": record.problem, "task_type": record.task_type}
    if record.task_type == "refusable":
        out["refusable_queries"] = [{"problem": a.problem, "gt_answers": _answers(a.gt_answers)} for a in record.refusable_queries]
    out["gt_answers"] = _answers(record.gt_answers)
    return out


EXPORTERS: dict[str, Callable[[RiqRecord], dict]] = {"seed": to_seed}


def export_records(records: Sequence[RiqRecord], fmt: str, out: str | Path) -> int:
    """Write ``records`` in format ``fmt``: a JSON list (``.json``) or JSON Lines (otherwise); return the count."""
    if fmt not in EXPORTERS:
        raise InputError(f"{out}: unknown export format {fmt!r} (known: {', '.join(EXPORTERS)})")
    rows = [EXPORTERS[fmt](r) for r in records]
    if Path(out).suffix == ".json":
        text = json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_text(out, text)
    return len(rows)


def export_file(path: str | Path, fmt: str, out: str | Path) -> int:
    """``rarft export``: read a RIQ file (every record validated) and write it in format ``fmt``."""
    return export_records(read_riq(path), fmt, out)
