"""The RIQ format (Refusal-aware Instance-level Queries): one query on one video,
answerable (a ground-truth span) or refusable (no span; refuse, explain, correct).

These pydantic models are the single definition of the format; the JSON Schema
in docs/riq.schema.json is exported from them.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.core.io import InputError, read_jsonl, read_records, write_json

Category = Literal[
    "Action/ActionSequence",
    "Action/FineGrainedAction",
    "Object/ObjectExistence",
    "Object/ObjectPartRelation",
    "Object/ObjectSpatialRelation",
    "Object/ObjectMoving",
    "Scene/SceneTransition",
    "Scene/SceneExistence",
    "Attribute/AttributeValue",
    "Attribute/Counting",
    "Attribute/Comparison",
]
CATEGORIES: tuple[str, ...] = get_args(Category)  # the 11 RA-RFT categories, in the release's order
TaskType = Literal["answerable", "refusable"]
Difficulty = Literal["original", "easy", "medium", "hard"]
Kind = Literal["answerable", "hard_irrelevant", "shuffled"]
# colour..count: synthetic edits; object/attribute: edits of a real query's noun/adjective
# (pipeline.riq.generators, where a word is not known to be a colour or a shape).
Edit = Literal["colour", "size", "shape", "direction", "action", "order", "count", "object", "attribute"]
# Which category a fact edit probes (documented in docs/RIQ.md); one edit, one category.
EDIT_CATEGORY: dict[str, str] = {
    "colour": "Attribute/AttributeValue",
    "size": "Attribute/Comparison",
    "shape": "Object/ObjectExistence",
    "direction": "Object/ObjectMoving",
    "action": "Action/FineGrainedAction",
    "order": "Action/ActionSequence",
    "count": "Attribute/Counting",
    "object": "Object/ObjectExistence",
    "attribute": "Attribute/AttributeValue",
}
DIFFICULTY_EDITS: dict[str, int] = {"hard": 1, "medium": 2, "easy": 3}
NO_SPAN = (-1.0, -1.0)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_safe_id(value: str) -> bool:
    """A file stem that cannot climb out of its folder."""
    return bool(_SAFE_ID.fullmatch(value)) and ".." not in value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GtAnswer(_Strict):
    answer: tuple[float, float] = Field(description="[start, end] in seconds; [-1, -1] for a refusable query.")


class Alternative(_Strict):
    problem: str = Field(min_length=1, description="An answerable query that a correction should lead to.")
    gt_answers: list[GtAnswer] = Field(min_length=1, description="Its ground-truth span(s).")


class RiqRecord(_Strict):
    id: str = Field(description="Stable unique id of this query record.")
    video: str = Field(description="Video id: a safe file stem (no path separators, no '..').")
    video_path: str = Field(description="Path of the source video (as recorded by the source).")
    frames_path: str | None = Field(None, description="Path of the pre-extracted frames file (set when joined with the frame cache).")
    duration: float = Field(gt=0, description="Video duration in seconds.")
    problem: str = Field(description="The query text.")
    task_type: TaskType = Field(description="'answerable' (has a span) or 'refusable' (must be refused).")
    kind: Kind = Field(description="'answerable', 'hard_irrelevant' (edited true query) or 'shuffled' (query from another video).")
    gt_answers: list[GtAnswer] = Field(min_length=1, description="Ground-truth span(s); [[-1, -1]] for refusable.")
    refusable_queries: list[Alternative] = Field(default_factory=list, description="For refusable records: answerable alternatives (correction targets). Empty on a shuffled refusable record = evaluation only (an imported refusal whose item has no true span, e.g. SS-VTG's all-refusable items): evaluated for relevance, RA-IoU and explanation, correction metrics skipped, never trained on.")
    explanation: str | None = Field(None, description="Why a refusable query cannot be answered.")
    reference_answer: str = Field(description="The ideal <answer> text: 'S to E' for answerable, the explanation for refusable.")
    contrast_answer: str = Field(description="The other class's answer on the same video (for the explain reward).")
    categories: list[Category] = Field(default_factory=list, description="Hard-irrelevant categories (subset of the 11 labels).")
    difficulty: Difficulty | None = Field(None, description="'original' for answerable; hard/medium/easy = 1/2/3 edits; None for shuffled.")
    edits: list[Edit] = Field(default_factory=list, description="Facts changed from the true query (hard_irrelevant only); one category per edit.")
    source: str = Field(description="Where the record came from (e.g. 'synthetic').")

    @field_validator("video")
    @classmethod
    def _safe_video(cls, v: str) -> str:
        if not is_safe_id(v):
            raise ValueError("must be a safe file name (letters, digits, '.', '_', '-'; no path separators or '..')")
        return v

    @field_validator("problem")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is empty")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.task_type == "answerable":
            for ans in self.gt_answers:
                s, e = ans.answer
                if not (0 <= s < e <= self.duration + 1e-6):
                    raise ValueError(f"gt_answers: span [{s}, {e}] must satisfy 0 <= start < end <= duration ({self.duration})")
            if self.kind != "answerable":
                raise ValueError("kind: an answerable record must have kind 'answerable'")
            if self.difficulty not in (None, "original"):
                raise ValueError("difficulty: an answerable record is 'original'")
        else:
            if any(tuple(a.answer) != NO_SPAN for a in self.gt_answers):
                raise ValueError("gt_answers: a refusable record's span must be [-1, -1]")
            if self.kind == "answerable":
                raise ValueError("kind: a refusable record cannot have kind 'answerable'")
            if not self.refusable_queries and self.kind != "shuffled":
                raise ValueError("refusable_queries: a hard_irrelevant record needs its true query as correction target (only a shuffled refusal may have none: evaluation only)")
            for alt in self.refusable_queries:
                for ans in alt.gt_answers:
                    s, e = ans.answer
                    if not (0 <= s < e <= self.duration + 1e-6):
                        raise ValueError(f"refusable_queries: span [{s}, {e}] must satisfy 0 <= start < end <= duration ({self.duration})")
        return self

    @model_validator(mode="after")
    def _edits_match(self):
        if self.kind != "hard_irrelevant":
            if self.edits:
                raise ValueError(f"edits: only a hard_irrelevant record has edits (kind is '{self.kind}')")
            return self
        if self.edits:
            if self.difficulty in DIFFICULTY_EDITS and len(self.edits) != DIFFICULTY_EDITS[self.difficulty]:
                raise ValueError(f"edits: difficulty '{self.difficulty}' means {DIFFICULTY_EDITS[self.difficulty]} edit(s), got {len(self.edits)}")
            expected = sorted({EDIT_CATEGORY[e] for e in self.edits})
            if sorted(set(self.categories)) != expected:
                raise ValueError(f"categories: edits {self.edits} imply {expected}, got {sorted(set(self.categories))}")
        return self

    @property
    def span(self) -> tuple[float, float] | None:
        return None if self.task_type == "refusable" else tuple(self.gt_answers[0].answer)

    @property
    def evaluation_only(self) -> bool:
        """A refusable record without a correction target: evaluated, not trained on (docs/IMPORT.md)."""
        return self.task_type == "refusable" and not self.refusable_queries

    @property
    def correction_target(self) -> str | None:
        return self.refusable_queries[0].problem if self.refusable_queries else None


def json_schema() -> dict:
    """The JSON Schema of one RIQ record (docs/riq.schema.json is this, committed)."""
    schema = RiqRecord.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = (
        "One RIQ record (one JSON object per line of data/riq/*.jsonl). Cross-field rules "
        "(span bounds, refusable => [-1, -1], no alternative = evaluation only, unique ids, frames file) "
        "are enforced by pipeline.riq.schema / `rarft validate`, not by this schema."
    )
    return schema


if __name__ == "__main__":  # python -m pipeline.riq.schema docs/riq.schema.json
    import sys


    write_json(sys.argv[1] if len(sys.argv) > 1 else "docs/riq.schema.json", json_schema())


def read_riq(path) -> list[RiqRecord]:
    """RIQ records from JSON Lines (or a JSON list); a bad record fails naming file, line, id and field."""
    from pathlib import Path

    from pydantic import ValidationError


    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found")
    if path.suffix == ".json":
        rows = [(f"item {i}", obj) for i, obj in enumerate(read_records(path), 1)]
    else:
        rows = [(str(lineno), obj) for lineno, obj in read_jsonl(path)]
    out = []
    for where, obj in rows:
        try:
            out.append(RiqRecord.model_validate(obj))
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "<record>"
            rid = obj.get("id", "?") if isinstance(obj, dict) else "?"
            raise InputError(f"{path}:{where}: record {rid!r}: {key}: {err['msg']}") from None
    return out


def read_train_records(path) -> list[RiqRecord]:
    """The records a model is trained on (make_model, train): non-empty, each joined with its frames file.

    A bad record fails naming file, line, id and field, as :func:`read_riq` does.
    """
    records = read_riq(path)
    for rec in records:
        if rec.evaluation_only:
            raise InputError(f"{path}: record {rec.id!r}: refusable_queries: empty (an evaluation-only refusal has no correction target to train on; build_riq keeps these out of train.jsonl)")
        if not rec.frames_path:
            raise InputError(f"{path}: record {rec.id!r}: frames_path: missing (build_riq joins records with the frame cache)")
    if not records:
        raise InputError(f"{path}: no records to train on")
    return records
