"""What every download source shares: the result record, video-id safety, id lists, progress bars.

A source is a callable ``(params: DownloadParams, out_dir: Path, progress: bool)
-> SourceResult`` (registry in :mod:`pipeline.data.download`). It writes videos as
``out_dir/videos/<id><ext>`` and nothing else under ``videos/``; resumable
partial files live under ``out_dir/.partial/`` (removed when a run completes).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.io import InputError, read_jsonl

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
PARTIAL_DIR = ".partial"

# Letters, digits, '_', '-' and inner dots (QVHighlights: "bP5KfdFJzC4_660.0_810.0"): never a path.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
# QVHighlights clip ids: {youtube_id}_{start}_{end}.
_CLIP_ID = re.compile(r"(?P<yt>[A-Za-z0-9_-]{11})_(?P<start>\d+(?:\.\d+)?)_(?P<end>\d+(?:\.\d+)?)")


@dataclass
class SourceResult:
    videos: dict[str, str] = field(default_factory=dict)  # id -> file name in videos/
    annotations: list = field(default_factory=list)  # pipeline.core.events.VideoLog (synthetic only)
    failures: list[dict] = field(default_factory=list)  # {"id", "error", "status"?}: not written, with the reason
    files: list[dict] = field(default_factory=list)  # other files written: {"path", "bytes", "sha256"?}
    tool: str = ""  # provenance of the bytes (encoder version, client version)
    downloaded: int = 0  # items fetched/linked in this run
    skipped: int = 0  # items already present and verified
    fetched_bytes: int = 0  # bytes moved over the network/linked in this run


def unsafe_id(video_id: str) -> str | None:
    """Why ``video_id`` cannot name a file in videos/, or None when it can."""
    if not isinstance(video_id, str) or not _SAFE_ID.fullmatch(video_id) or video_id.endswith("."):
        return f"unsafe video id {video_id!r} (allowed: letters, digits, '_', '-', inner '.'; no path)"
    return None


@dataclass(frozen=True)
class IdItem:
    id: str  # the dataset's video id (the file stem in videos/)
    youtube_id: str  # the id on the site
    start: float | None = None  # clip range, seconds (QVHighlights)
    end: float | None = None


def _item(raw: str) -> IdItem:
    m = _CLIP_ID.fullmatch(raw)
    if m:
        return IdItem(raw, m["yt"], float(m["start"]), float(m["end"]))
    if raw.startswith("v_") and len(raw) == 13:  # ActivityNet prefixes YouTube ids with v_
        return IdItem(raw, raw[2:])
    return IdItem(raw, raw)


def resolve_input(name: str, out_dir: Path, key: str) -> Path:
    """A params path: looked up in the raw folder first (a file another source just fetched), then as given."""
    if not name:
        raise InputError(f"params.yaml: {key}: is empty but the source is selected")
    for cand in (out_dir / name, Path(name)):
        if cand.is_file():
            return cand
    raise InputError(f"params.yaml: {key}: file {name!r} not found (looked in {out_dir} and the working directory)")


def read_ids(path: Path) -> list[IdItem]:
    """Video ids in file order, without duplicates (formats: see YoutubeParams.ids_file)."""
    raw: list[str] = []
    if path.suffix == ".jsonl":
        for lineno, rec in read_jsonl(path):
            raw.append(_record_id(rec, f"{path}:{lineno}"))
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict):
            raw = [str(k) for k in data]
        elif isinstance(data, list):
            raw = [_record_id(rec, f"{path}: record {i}") for i, rec in enumerate(data)]
        else:
            raise InputError(f"{path}: expected a JSON object keyed by id or a list of records")
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            # Charades-STA: "AO8RW 0.0 6.9##a person ..." -> the first token.
            token = line.split("##")[0].split()[0] if line.strip() and not line.lstrip().startswith("#") else ""
            if token:
                raw.append(token)
    return [_item(r) for r in dict.fromkeys(raw)]


def _record_id(rec, where: str) -> str:
    if isinstance(rec, dict):
        for key in ("vid", "video_id", "id", "video"):
            if rec.get(key) not in (None, ""):
                return str(rec[key])
    raise InputError(f"{where}: no video id (expected a field vid, video_id, id or video)")


def video_path(videos: Path, video_id: str) -> Path | None:
    """The file of ``video_id`` in videos/, whatever its extension, or None."""
    for ext in VIDEO_EXTS:
        p = videos / f"{video_id}{ext}"
        if p.exists():
            return p
    return None


def progress_bar(total: int | None, desc: str, unit: str = "file", enabled: bool = True, **kw):
    """A tqdm bar on stderr with totals and ETA (off when stderr is not a terminal unless forced by RARFT_PROGRESS=1)."""
    from tqdm import tqdm

    disable = not enabled or (not sys.stderr.isatty() and os.environ.get("RARFT_PROGRESS") != "1")
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True, **kw)
