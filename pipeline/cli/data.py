"""`rarft download`, `rarft extract`: the download and extract_frames stages' operations.

Command bodies only turn options into library calls; heavy imports (torch, transformers)
stay inside them so `rarft --help` is instant.
"""

from __future__ import annotations

import typer

from pipeline.core.io import one_line_errors


@one_line_errors
def download_cmd(
    out: str = typer.Option(..., help="Raw data folder to fill: videos/, annotations.jsonl, manifest.json, failures.jsonl."),
    source: str = typer.Option(None, help="Source name(s), comma-separated: synthetic, http, youtube, local (default: download.sources)."),
    params: str = typer.Option(None, help="Params file (section download); default: built-in defaults."),
    n_videos: int = typer.Option(None, help="Override download.synthetic.n_videos."),
    seed: int = typer.Option(None, help="Override download.synthetic.seed."),
    workers: int = typer.Option(None, help="Override download.workers (0 = one per CPU core)."),
    preset: list[str] = typer.Option(None, help="Override download.http.presets (repeatable): charades-sta, activitynet-captions, qvhighlights, ra-rft."),
    manifest: str = typer.Option(None, help="Override download.http.manifest (YAML/JSON list of {url, dest, sha256, size})."),
    ids_file: str = typer.Option(None, help="Override download.youtube.ids_file."),
    folder: str = typer.Option(None, help="Override download.local.folder."),
    max_failures: int = typer.Option(None, help="Override download.max_failures (-1 = never fail for failures alone)."),
    progress: bool = typer.Option(True, help="Progress bars on stderr."),
) -> None:
    """Fill a raw data folder from one or more sources (same code as the download stage)."""
    import os

    from pipeline.core.params import Params, load_params
    from pipeline.data.download import download_and_report, with_overrides

    if progress:
        os.environ.setdefault("RARFT_PROGRESS", "1")
    base = load_params(params).download if params else Params().download
    chosen = with_overrides(base, source=source, n_videos=n_videos, seed=seed, workers=workers,
                            max_failures=max_failures, **{"http.presets": preset or None, "http.manifest": manifest,
                                                          "youtube.ids_file": ids_file, "local.folder": folder})
    download_and_report(chosen, out, progress=progress)

@one_line_errors
def extract_cmd(
    videos: str = typer.Argument(..., help="A video file or a folder of videos."),
    out: str = typer.Option(..., help="Folder for the <video_id>.npz frames files."),
    params: str = typer.Option(None, help="Params file (section frames); default: built-in defaults."),
    fps: float = typer.Option(None, help="Override frames.fps (target frames per second)."),
    total_pixels: int = typer.Option(None, help="Override frames.total_pixels (pixel budget per video)."),
    min_pixels: int = typer.Option(None, help="Override frames.min_pixels."),
    max_pixels: int = typer.Option(None, help="Override frames.max_pixels."),
    min_frames: int = typer.Option(None, help="Override frames.min_frames."),
    max_frames: int = typer.Option(None, help="Override frames.max_frames."),
    workers: int = typer.Option(None, help="Override frames.workers (0 = one per CPU core)."),
    failures: str = typer.Option(None, help="Also write unreadable videos to this JSONL manifest."),
    force: bool = typer.Option(False, "--force", help="Re-extract every video, ignoring frames files already up to date."),
    prune: bool = typer.Option(False, "--prune", help="Delete frames files in --out whose video is not among the inputs."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per video on stdout."),
) -> None:
    """Sample and resize frames as Qwen2.5-VL would (same code as the extract_frames stage).

    Exit status 1 when any video could not be read (each one is still reported), 2 on bad options.
    """
    import json

    from pipeline.core.params import Params, load_params
    from pipeline.data.frames import extract_dir, with_overrides

    base = load_params(params).frames if params else Params().frames
    frames_params = with_overrides(
        base, fps=fps, total_pixels=total_pixels, min_pixels=min_pixels, max_pixels=max_pixels,
        min_frames=min_frames, max_frames=max_frames, workers=workers,
    )
    summary = extract_dir(videos, out, frames_params, failures_path=failures, force=force, prune=prune)
    if json_out:
        for row in summary["videos"]:
            typer.echo(json.dumps(row))
    else:
        typer.echo(
            f"{summary['processed']} extracted, {summary['skipped']} up to date, {summary['failed']} failed "
            f"of {summary['inputs']} videos -> {summary['out_dir']} ({summary['frames']} frames, "
            f"{summary['bytes'] / 1e6:.1f} MB, {summary['seconds']:.1f} s); {summary['removed']} removed"
        )
        for row in summary["videos"]:
            if "error" in row:
                typer.echo(f"  failed: {row['error']}", err=True)
    if summary["failed"]:
        raise typer.Exit(1)
