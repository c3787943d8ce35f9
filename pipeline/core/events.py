"""The event log of a synthetic 'shapes world' video: the ground truth that
queries are built from and checked against.

Written by the synthetic source as ``data/raw/annotations.jsonl`` (one
``VideoLog`` per line); read by ``build_riq``, ``make_model`` (the tiny model's
dense vision targets, train videos only) and ``evaluate`` (the swapped control's donor check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.core.io import InputError, read_jsonl

# The RGB of each colour as drawn by the synthetic source; the tiny model's vision pretraining
# finds objects in the frames by it, so it lives here, below both.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 30),
    "blue": (40, 70, 250),
    "yellow": (240, 230, 40),
    "white": (245, 245, 245),
    "orange": (250, 140, 0),
    "purple": (160, 40, 210),
    "cyan": (30, 220, 230),
}
Color = Literal["red", "green", "blue", "yellow", "white", "orange", "purple", "cyan"]
Shape = Literal["square", "wide bar", "tall bar"]
Size = Literal["small", "large"]
Region = Literal[
    "whole frame", "left", "right", "top", "bottom", "top left", "top right", "bottom left", "bottom right",
]
Action = Literal[
    "appears", "disappears", "moves left", "moves right", "moves up", "moves down", "grows", "shrinks", "blinks",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShapeObject(_Strict):
    id: str = Field(description="Object id, unique within the video (e.g. 'o1').")
    color: Color = Field(description="Fill colour.")
    shape: Shape = Field(description="Box proportions.")
    size: Size = Field(description="Size class at first appearance.")
    region: Region | None = Field(None, description="Part of the frame the object stays in for the whole video (None: not recorded).")


class Event(_Strict):
    id: str = Field(description="Event id, unique within the video (e.g. 'e1').")
    object_id: str = Field(description="Id of the object that acts.")
    action: Action = Field(description="What the object does.")
    start: float = Field(ge=0, description="Start time, seconds.")
    end: float = Field(gt=0, description="End time, seconds.")

    @model_validator(mode="after")
    def _order(self):
        if self.start >= self.end:
            raise ValueError(f"event {self.id}: start must be < end")
        return self


class VideoLog(_Strict):
    video_id: str = Field(description="Safe file stem of the video.")
    video: str = Field(description="Path of the video relative to the raw data folder (e.g. 'videos/syn_0001.mp4').")
    duration: float = Field(gt=0, description="Duration in seconds.")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fps: float = Field(gt=0)
    background: str = Field(description="Background colour name.")
    objects: list[ShapeObject]
    events: list[Event] = Field(description="Events sorted by start time.")

    @model_validator(mode="after")
    def _refs(self):
        ids = {o.id for o in self.objects}
        for e in self.events:
            if e.object_id not in ids:
                raise ValueError(f"event {e.id}: unknown object {e.object_id}")
            if e.end > self.duration + 1e-6:
                raise ValueError(f"event {e.id}: ends after the video ({e.end} > {self.duration})")
        return self

    def object(self, object_id: str) -> ShapeObject:
        return next(o for o in self.objects if o.id == object_id)


def visible_spans(log: VideoLog, object_id: str) -> list[tuple[float, float]]:
    """When an object can be seen, as (start, end) seconds: from the start of the video (or the
    start of its first 'appears') until the end of a 'disappears', and again from the next 'appears'.
    Fading in and out counts as seen; a blink's off frames count as seen too (the object is
    between two on frames)."""
    events = [e for e in log.events if e.object_id == object_id]
    spans, start = [], None if events and events[0].action == "appears" else 0.0
    for e in events:
        if e.action == "appears" and start is None:
            start = e.start
        elif e.action == "disappears" and start is not None:
            spans.append((start, e.end))
            start = None
    if start is not None:
        spans.append((start, log.duration))
    return spans


def read_event_logs(path: str | Path) -> dict[str, VideoLog]:
    """``data/raw/annotations.jsonl``: one :class:`VideoLog` per line, by video id."""
    if not Path(path).is_file():
        raise InputError(f"{path}: event log not found")
    logs = {}
    for lineno, obj in read_jsonl(path):
        try:
            log = VideoLog.model_validate(obj)
        except ValueError as exc:
            raise InputError(f"{path}:{lineno}: not a video event log ({str(exc).splitlines()[0]})") from None
        logs[log.video_id] = log
    return logs
