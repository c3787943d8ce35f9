"""The ``http`` source: files listed in a manifest (or a dataset preset), fetched with requests.

Each file is fetched into ``<raw>/.partial/<dest>.part`` and resumed from there
with an HTTP Range request after a dropped connection (or a killed run), retried
with exponential backoff on connection errors, 5xx/408/429 answers and checksum
mismatches, verified (size, sha256 when the manifest gives them) and only then
renamed onto ``<raw>/<dest>``: the next stage never sees a partial or corrupt
file. (``pipeline.core.io.atomic_path`` is not used because its temporary file must
survive a kill to be resumed.) A file already at ``dest`` that verifies is
skipped. Archives (``extract: <folder>``) are extracted safely
(:mod:`pipeline.data.sources.archives`) and replaced by a small
``<dest>.extracted.json`` record unless ``http.keep_archives``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.io import InputError, read_yaml, write_json
from pipeline.core.params import DownloadParams, HttpParams
from pipeline.data.sources import (
    PARTIAL_DIR,
    VIDEO_EXTS,
    SourceResult,
    progress_bar,
    unsafe_id,
)
from pipeline.data.sources.archives import extract_archive, member_problem

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
ALLOWED_SCHEMES = ("http", "https")
RETRY_STATUS = {408, 429}  # and every 5xx


class FileEntry(BaseModel):
    """One line of a manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(description="http(s) URL of the file.")
    dest: str = Field(description="Path relative to the raw folder; a video goes to videos/<id><ext>.")
    sha256: str | None = Field(None, description="Expected SHA-256 (hex); verified after the download.")
    size: int | None = Field(None, ge=0, description="Expected size in bytes.")
    extract: str | None = Field(None, description="Extract this archive into the folder (relative to the raw folder); 'videos' keeps only video files, flattened.")
    strip_components: int = Field(0, ge=0, description="Leading folders dropped from member names (non-video extraction).")
    flatten: bool = Field(False, description="Drop every folder of the member names (video extraction always flattens).")


class FetchError(Exception):
    def __init__(self, message: str, status: int | None = None, retry: bool = True):
        super().__init__(message)
        self.status = status
        self.retry = retry


# --------------------------------------------------------------------------- manifests
def load_manifest(path: Path) -> list[FileEntry]:
    """Entries of a manifest or preset file (a list, or a mapping with ``files:``); bad entries fail in one line."""
    data = read_yaml(path, "YAML/JSON")
    rows = data.get("files") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a list of files (or a mapping with 'files:')")
    entries = []
    for i, row in enumerate(rows):
        where = f"{path}: file {i} ({row.get('dest', '?') if isinstance(row, dict) else row!r})"
        try:
            entry = FileEntry.model_validate(row)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(f"{where}: {'.'.join(map(str, err['loc'])) or 'entry'}: {err['msg']}") from None
        problem = check_entry(entry)
        if problem:
            raise InputError(f"{where}: {problem}")
        entries.append(entry)
    return entries


def check_entry(entry: FileEntry) -> str | None:
    scheme = urlsplit(entry.url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        return f"url: scheme {scheme or '(none)'!r} refused (only http and https): {entry.url}"
    for key, value in (("dest", entry.dest), ("extract", entry.extract)):
        if value is None:
            continue
        problem = member_problem(value) or (None if value.strip("/. ") else "empty")
        if problem or value.split("/")[0] == PARTIAL_DIR:
            return f"{key}: unsafe path {value!r} ({problem or 'reserved folder'})"
    dest = PurePosixPath(entry.dest)
    if dest.parent.as_posix() == "videos":
        if dest.suffix.lower() not in VIDEO_EXTS:
            return f"dest: {entry.dest!r} is under videos/ but not a video file ({', '.join(VIDEO_EXTS)})"
        return unsafe_id(dest.stem)
    if dest.parts[0] == "videos":
        return f"dest: {entry.dest!r}: only flat files go under videos/"
    return None


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if unsafe_id(name) or not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise InputError(f"params.yaml: download.http.presets: unknown preset {name!r} (known: {', '.join(known)})")
    return path


def entries_for(params: HttpParams, out_dir: Path) -> list[FileEntry]:
    entries = [e for name in params.presets for e in load_manifest(preset_path(name))]
    if params.manifest:
        from pipeline.data.sources import resolve_input

        entries += load_manifest(resolve_input(params.manifest, out_dir, "download.http.manifest"))
    seen: dict[str, str] = {}
    for e in entries:
        if e.dest in seen and seen[e.dest] != e.url:
            raise InputError(f"download.http: dest {e.dest!r} is given twice with different URLs ({seen[e.dest]}, {e.url})")
        seen[e.dest] = e.url
    return list({e.dest: e for e in entries}.values())


# --------------------------------------------------------------------------- one file
def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify(path: Path, entry: FileEntry) -> str | None:
    """Why the file at ``path`` is not the manifest's file, or None."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"size {size} bytes, expected {entry.size}"
    if entry.sha256 and (got := sha256_of(path)) != entry.sha256.lower():
        return f"sha256 {got}, expected {entry.sha256.lower()}"
    return None


def _looks_like_html(first: bytes, content_type: str) -> bool:
    head = first[:512].lstrip().lower()
    return "text/html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html"))


def _download_to(session: requests.Session, entry: FileEntry, part: Path, params: HttpParams, bar) -> None:
    """Append the missing bytes of ``entry`` to ``part`` (one request)."""
    have = part.stat().st_size if part.exists() else 0
    if entry.size is not None and have > entry.size:
        part.unlink()
        have = 0
    if entry.size is not None and have == entry.size:
        return
    # identity: a gzip-encoded answer would make byte ranges refer to compressed data.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    with session.get(entry.url, headers=headers, stream=True, timeout=params.timeout) as resp:
        if resp.status_code == 416:  # our partial is already complete or stale: start over
            part.unlink(missing_ok=True)
            raise FetchError("range not satisfiable, restarting", status=416)
        if resp.status_code >= 400:
            code = resp.status_code
            raise FetchError(f"HTTP {code} {resp.reason}", status=code, retry=code in RETRY_STATUS or code >= 500)
        if have and resp.status_code != 206:  # server ignores Range: start over
            bar.update(-have)
            have = 0
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        is_video = PurePosixPath(entry.dest).suffix.lower() in VIDEO_EXTS
        with open(part, "ab" if have else "wb") as fh:
            for i, chunk in enumerate(resp.iter_content(1 << 16)):
                if i == 0 and not have and is_video and _looks_like_html(chunk, resp.headers.get("Content-Type", "")):
                    raise FetchError(f"server returned HTML instead of a video (HTTP {resp.status_code})",
                                     status=resp.status_code, retry=False)
                fh.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise requests.ConnectionError(f"connection dropped at {got} of {expected} bytes")


def fetch(session: requests.Session, entry: FileEntry, out_dir: Path, params: HttpParams, bar) -> tuple[bool, int]:
    """Fetch one file to ``out_dir/dest``; return (skipped, bytes fetched). Raises FetchError naming the reason."""
    dest = out_dir / entry.dest
    if dest.is_file():
        if verify(dest, entry) is None:
            return True, 0
        dest.unlink()  # a corrupt file must not stay where the next stage reads
    part = out_dir / PARTIAL_DIR / f"{entry.dest}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    bar.update(start)
    attempt = 0
    while True:
        try:
            _download_to(session, entry, part, params, bar)
            problem = verify(part, entry)
            if problem:
                bar.update(-part.stat().st_size)
                part.unlink()
                raise FetchError(f"checksum mismatch: {problem}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, dest)
            return False, dest.stat().st_size - start
        except FetchError as exc:
            if not exc.retry or attempt >= params.retries:
                if not exc.retry:
                    part.unlink(missing_ok=True)
                raise FetchError(f"{exc} after {attempt + 1} attempt(s)" if exc.retry else str(exc), exc.status, exc.retry) from None
            err = exc
        except requests.RequestException as exc:
            if attempt >= params.retries:
                raise FetchError(f"connection failed after {attempt + 1} attempt(s): {_one_line(exc)}") from None
            err = exc
        attempt += 1
        if not (isinstance(err, FetchError) and err.status == 416):
            time.sleep(min(60.0, params.backoff * 2 ** (attempt - 1)))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# --------------------------------------------------------------------------- archives
def _marker(out_dir: Path, entry: FileEntry) -> Path:
    return out_dir / f"{entry.dest}.extracted.json"


def _extracted_ok(out_dir: Path, entry: FileEntry) -> dict | None:
    marker = _marker(out_dir, entry)
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    if record.get("source") != entry.model_dump(mode="json"):
        return None
    base = out_dir / (entry.extract or "")
    if all((base / w["path"]).is_file() and (base / w["path"]).stat().st_size == w["bytes"] for w in record["written"]):
        return record
    return None


def _extract(out_dir: Path, entry: FileEntry, keep: bool) -> dict:
    archive = out_dir / entry.dest
    try:
        found = extract_archive(archive, out_dir / entry.extract, videos=entry.extract == "videos",
                                strip_components=entry.strip_components, flatten=entry.flatten)
    except (ValueError, OSError, EOFError) as exc:
        raise FetchError(f"cannot extract {entry.dest}: {_one_line(exc)}", retry=False) from None
    record = {"source": entry.model_dump(mode="json"), "written": found.written, "refused": found.refused, "ignored": found.ignored}
    write_json(_marker(out_dir, entry), record)
    if not keep:
        archive.unlink()
    return record


# --------------------------------------------------------------------------- the source
def http_source(params: DownloadParams, out_dir: Path, progress: bool = True) -> SourceResult:
    hp = params.http
    entries = entries_for(hp, out_dir)
    result = SourceResult(tool=f"requests {requests.__version__}")
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = requests.Session()  # one per thread: Session is not thread-safe
        return local.s

    def one(entry: FileEntry) -> tuple[bool, int, dict | None]:
        if entry.extract:
            record = _extracted_ok(out_dir, entry)
            if record is not None:
                return True, 0, record
            skipped, n = fetch(session(), entry, out_dir, hp, bar)
            return skipped, n, _extract(out_dir, entry, hp.keep_archives)
        skipped, n = fetch(session(), entry, out_dir, hp, bar)
        return skipped, n, None

    total = sum(e.size for e in entries if e.size) if all(e.size for e in entries) else None
    bar = progress_bar(total, "http", unit="B", enabled=progress, unit_scale=True, unit_divisor=1024)
    with ThreadPoolExecutor(max_workers=hp.workers) as pool:
        futures = {pool.submit(one, e): e for e in entries}
        for fut in as_completed(futures):
            entry = futures[fut]
            try:
                skipped, n, record = fut.result()
            except FetchError as exc:
                result.failures.append({"id": entry.dest, "error": f"{entry.dest} ({entry.url}): {exc}", "status": exc.status})
                continue
            except OSError as exc:
                result.failures.append({"id": entry.dest, "error": f"{entry.dest}: {_one_line(exc)}", "status": None})
                continue
            result.skipped += skipped
            result.downloaded += not skipped
            result.fetched_bytes += n
            dest = PurePosixPath(entry.dest)
            if record is not None:
                for w in record["written"]:
                    path = PurePosixPath(entry.extract) / w["path"]
                    if entry.extract == "videos":
                        result.videos[path.stem] = path.name
                    else:
                        result.files.append({"path": path.as_posix(), "bytes": w["bytes"]})
                result.failures += [{"id": f"{entry.dest}:{r['member']}", "error": r["error"], "status": None} for r in record["refused"]]
                marker = _marker(out_dir, entry)
                result.files.append({"path": marker.relative_to(out_dir).as_posix(), "bytes": marker.stat().st_size})
            elif dest.parent.as_posix() == "videos":
                result.videos[dest.stem] = dest.name
            else:
                result.files.append({"path": entry.dest, "bytes": (out_dir / entry.dest).stat().st_size, "sha256": entry.sha256})
    bar.close()
    return result
