"""Stage download: fill the raw data folder from one or more *sources*.

Layout written under ``out_dir``::

    videos/<video_id><ext>  the videos (.mp4 for synthetic; as published for the others)
    annotations.jsonl       one pipeline.core.events.VideoLog per line, sorted by video id
                            (empty for sources without event logs)
    manifest.json           counts, bytes, per-video file/source/bytes, other files, failures, params, tools
    failures.jsonl          one {"id", "source", "error", "status"} per item not written (gone, 404, bad checksum...)
    <other files>           what the http source's manifests put elsewhere (annotations/, archives/...)

A source is a callable ``(params: DownloadParams, out_dir: Path, progress: bool)
-> SourceResult`` registered in ``SOURCES`` (synthetic; http, youtube, local in
``pipeline.data.sources``). Sources skip what is already present and verified, so the
DVC output is ``persist: true`` and a re-run after a change or a kill fetches
only what is missing; the run then removes videos that no source listed, so
nothing stale survives. The manifest holds nothing that varies between runs
(no timings, no skip counts): a killed-and-resumed run writes the same bytes
as an uninterrupted one.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.core.io import InputError, write_json, write_jsonl
from pipeline.core.params import DownloadParams, parse_params
from pipeline.data.sources import PARTIAL_DIR, SourceResult


class DownloadError(RuntimeError):
    """The run wrote nothing at all, or more items failed than download.max_failures (details in manifest.json)."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


def _synthetic(params: DownloadParams, out_dir: Path, progress: bool = True) -> SourceResult:
    from pipeline.data.synthetic import encoder_exe, render_dataset

    logs, failures = render_dataset(params.synthetic, out_dir, params.workers)
    return SourceResult(
        videos={log.video_id: f"{log.video_id}.mp4" for log in logs}, annotations=logs,
        failures=[{**f, "status": None} for f in failures], tool=ffmpeg_version(encoder_exe()), downloaded=len(logs),
        fetched_bytes=sum((out_dir / "videos" / f"{log.video_id}.mp4").stat().st_size for log in logs),
    )


def _http(params: DownloadParams, out_dir: Path, progress: bool = True) -> SourceResult:
    from pipeline.data.sources.http_files import http_source

    return http_source(params, out_dir, progress)


def _youtube(params: DownloadParams, out_dir: Path, progress: bool = True) -> SourceResult:
    from pipeline.data.sources.youtube import youtube_source

    return youtube_source(params, out_dir, progress)


def _local(params: DownloadParams, out_dir: Path, progress: bool = True) -> SourceResult:
    from pipeline.data.sources.local_folder import local_source

    return local_source(params, out_dir, progress)


Source = Callable[[DownloadParams, Path, bool], SourceResult]
SOURCES: dict[str, Source] = {"synthetic": _synthetic, "http": _http, "youtube": _youtube, "local": _local}


@functools.cache
def ffmpeg_version(exe: str) -> str:
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else f"{exe} (no version)"


def with_overrides(params: DownloadParams, origin: str = "command line", **overrides) -> DownloadParams:
    """``params`` with fields replaced (None = keep), re-validated.

    Keys: a DownloadParams field (``sources``; ``source`` is an alias taking
    "a,b"), a SyntheticParams field, or ``section.field`` (e.g. ``local.folder``).
    """
    data = params.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        key = "sources" if key == "source" else key
        section, _, name = key.rpartition(".")
        if section:
            data[section][name] = value
        elif key in DownloadParams.model_fields:
            data[key] = value
        else:
            data["synthetic"][key] = value
    return parse_params({"download": data}, origin).download


def _prune(videos: Path, keep: set[str]) -> None:
    """Remove what no source listed this run (videos of an earlier config, temp files of a killed one)."""
    if videos.is_dir():
        for path in videos.iterdir():
            if path.name not in keep and (path.is_file() or path.is_symlink()):
                path.unlink()


def run_download(params: DownloadParams, out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Fill ``out_dir`` from ``params.sources``; return the summary (see print_summary)."""
    unknown = [s for s in params.sources if s not in SOURCES]
    if unknown:
        raise InputError(f"download.sources: unknown source {unknown[0]!r} (known: {', '.join(sorted(SOURCES))})")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    # Always there, even empty: build_riq depends on it (annotation files of the http presets land in it).
    (out_dir / "annotations").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    videos: dict[str, dict] = {}  # id -> {"file", "source", "bytes"}
    failures: list[dict] = []
    annotations, files, tools, rows = [], [], {}, []
    for name in params.sources:
        result = SOURCES[name](params, out_dir, progress)
        for vid, file in sorted(result.videos.items()):
            if vid in videos:
                failures.append({"id": vid, "source": name, "status": "duplicate",
                                 "error": f"{vid}: duplicate video id (also from source {videos[vid]['source']}, which is kept)"})
                continue
            videos[vid] = {"file": file, "source": name, "bytes": (out_dir / "videos" / file).stat().st_size}
        failures += [{"source": name, **f} for f in result.failures]
        annotations += result.annotations
        files += result.files
        tools[name] = result.tool
        rows.append({"source": name, "downloaded": result.downloaded, "skipped": result.skipped,
                     "failed": len(result.failures), "bytes": result.fetched_bytes})
    _prune(out_dir / "videos", {v["file"] for v in videos.values()})
    shutil.rmtree(out_dir / PARTIAL_DIR, ignore_errors=True)  # every item is now done or failed
    failures.sort(key=lambda f: (f["id"], f["source"]))
    write_jsonl(out_dir / "annotations.jsonl", sorted(annotations, key=lambda log: log.video_id))
    write_jsonl(out_dir / "failures.jsonl", failures)
    total_bytes = sum(v["bytes"] for v in videos.values())
    manifest = {
        "sources": list(params.sources),
        "written": len(videos),
        "failed": len(failures),
        "annotations": len(annotations),
        "bytes": total_bytes,
        "videos": dict(sorted(videos.items())),
        "files": sorted(files, key=lambda f: f["path"]),
        "failures": failures,
        "params": params.model_dump(mode="json"),
        "tool": "; ".join(f"{k}: {v}" for k, v in tools.items()),
    }
    write_json(out_dir / "manifest.json", manifest)
    summary = {
        "source": ",".join(params.sources), "out_dir": str(out_dir), "written": len(videos), "failed": len(failures),
        "downloaded": sum(r["downloaded"] for r in rows), "skipped": sum(r["skipped"] for r in rows),
        "bytes": total_bytes, "seconds": round(time.perf_counter() - t0, 2), "rows": rows,
    }
    if failures and not videos:
        first = failures[0]
        raise DownloadError(f"{out_dir}: no video written; first failure {first['id']}: {first['error']}", summary)
    if 0 <= params.max_failures < len(failures):
        first = failures[0]
        raise DownloadError(
            f"{out_dir}: {len(failures)} item(s) failed, more than download.max_failures={params.max_failures} "
            f"({len(videos)} videos written; see failures.jsonl); first failure {first['id']}: {first['error']}",
            summary,
        )
    return summary


def print_summary(summary: dict) -> None:
    """One row per source (downloaded, skipped, failed, bytes fetched) and the total."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"download ({summary['source']}) -> {summary['out_dir']}")
    for col in ("source", "downloaded", "skipped", "failed", "bytes"):
        table.add_column(col, justify="right")
    for row in summary.get("rows", []):
        table.add_row(*(str(row[c]) for c in ("source", "downloaded", "skipped", "failed", "bytes")))
    table.add_row("total", str(summary["downloaded"]), str(summary["skipped"]), str(summary["failed"]),
                  str(summary["bytes"]), style="bold")
    Console(stderr=False).print(table)
    Console().print(f"written {summary['written']} videos, {summary['failed']} failed, {summary['seconds']} s")


def download_and_report(params: DownloadParams, out_dir: str | Path, progress: bool = True) -> dict:
    """:func:`run_download`, then its summary on stdout (the download stage and `rarft download`).

    More failures than ``download.max_failures`` (a DownloadError) print the summary, then
    one error line on stderr, and exit 1; bad input raises InputError (exit 2 at the entry point).
    """
    import sys

    try:
        summary = run_download(params, out_dir, progress=progress)
    except DownloadError as exc:
        if exc.summary:
            print_summary(exc.summary)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print_summary(summary)
    return summary
