"""Stage download: fill the raw data folder from a *source*.

Layout written under ``out_dir``::

    videos/<video_id>.mp4   the videos
    annotations.jsonl       one pipeline.events.VideoLog per line, sorted by video id
                            (empty for a source without event logs)
    manifest.json           counts, bytes, failures, params, tool (e.g. encoder version)

A source is a callable ``(params: DownloadParams, out_dir: Path, workers: int)
-> SourceResult`` registered in ``SOURCES``; only ``synthetic`` exists for now
(http, youtube and local sources plug in the same way). The manifest holds
nothing that varies between runs (no timings), so it is a stable DVC output;
the wall time is in the returned summary only.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.events import VideoLog
from pipeline.io import InputError, write_json, write_jsonl
from pipeline.params import DownloadParams, parse_params


class DownloadError(RuntimeError):
    """The source wrote nothing at all (the failures are in manifest.json)."""


@dataclass
class SourceResult:
    videos: list[str] = field(default_factory=list)  # ids written to videos/
    annotations: list[VideoLog] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # {"id", "error"}: not written, with the reason
    tool: str = ""  # provenance of the bytes (e.g. the encoder's version line)


def _synthetic(params: DownloadParams, out_dir: Path, workers: int) -> SourceResult:
    from pipeline.synthetic import encoder_exe, render_dataset

    logs, failures = render_dataset(params.synthetic, out_dir, workers)
    return SourceResult([log.video_id for log in logs], logs, failures, tool=ffmpeg_version(encoder_exe()))


Source = Callable[[DownloadParams, Path, int], SourceResult]
SOURCES: dict[str, Source] = {"synthetic": _synthetic}


@functools.cache
def ffmpeg_version(exe: str) -> str:
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else f"{exe} (no version)"


def with_overrides(params: DownloadParams, origin: str = "command line", **overrides) -> DownloadParams:
    """``params`` with ``workers``/``source`` or any SyntheticParams field replaced (None = keep), re-validated."""
    data = params.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        if key in DownloadParams.model_fields:
            data[key] = value
        else:
            data["synthetic"][key] = value
    return parse_params({"download": data}, origin).download


def run_download(params: DownloadParams, out_dir: str | os.PathLike) -> dict:
    """Fill ``out_dir`` from ``params.source``; return the summary (also the basis of manifest.json)."""
    if params.source not in SOURCES:
        raise InputError(f"download.source: unknown source {params.source!r} (known: {', '.join(sorted(SOURCES))})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = SOURCES[params.source](params, out_dir, params.workers)
    write_jsonl(out_dir / "annotations.jsonl", sorted(result.annotations, key=lambda log: log.video_id))
    sizes = {vid: (out_dir / "videos" / f"{vid}.mp4").stat().st_size for vid in sorted(result.videos)}
    manifest = {
        "source": params.source,
        "written": len(sizes),
        "failed": len(result.failures),
        "annotations": len(result.annotations),
        "bytes": sum(sizes.values()),
        "failures": sorted(result.failures, key=lambda f: f["id"]),
        "params": params.model_dump(mode="json"),
        "tool": result.tool,
    }
    write_json(out_dir / "manifest.json", manifest)
    if result.failures and not sizes:
        first = result.failures[0]
        raise DownloadError(f"{out_dir}: no video written; first failure {first['id']}: {first['error']}")
    return {
        "source": params.source, "out_dir": str(out_dir), "written": len(sizes), "failed": len(result.failures),
        "bytes": manifest["bytes"], "seconds": round(time.perf_counter() - t0, 2),
    }


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"download ({summary['source']}) -> {summary['out_dir']}")
    for col in ("written", "failed", "bytes", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(*(str(summary[c]) for c in ("written", "failed", "bytes", "seconds")))
    Console().print(table)
