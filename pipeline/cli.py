"""The `rarft` command: the pipeline's operations outside DVC.

Each area registers its commands in its own block below; heavy imports (torch,
transformers) stay inside the command bodies so `rarft --help` is instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])

# --- download ---------------------------------------------------------------


@app.command("download")
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

    from pipeline.download import DownloadError, print_summary, run_download, with_overrides
    from pipeline.io import InputError
    from pipeline.params import Params, load_params

    if progress:
        os.environ.setdefault("RARFT_PROGRESS", "1")
    try:
        base = load_params(params).download if params else Params().download
        chosen = with_overrides(base, source=source, n_videos=n_videos, seed=seed, workers=workers,
                                max_failures=max_failures, **{"http.presets": preset or None, "http.manifest": manifest,
                                                              "youtube.ids_file": ids_file, "local.folder": folder})
        summary = run_download(chosen, out, progress=progress)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except DownloadError as exc:
        if exc.summary:
            print_summary(exc.summary)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    print_summary(summary)


# --- frames (extract) -------------------------------------------------------


@app.command("extract")
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

    from pipeline.frames import extract_dir, with_overrides
    from pipeline.io import InputError
    from pipeline.params import Params, load_params

    try:
        base = load_params(params).frames if params else Params().frames
        frames_params = with_overrides(
            base, fps=fps, total_pixels=total_pixels, min_pixels=min_pixels, max_pixels=max_pixels,
            min_frames=min_frames, max_frames=max_frames, workers=workers,
        )
        summary = extract_dir(videos, out, frames_params, failures_path=failures, force=force, prune=prune)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
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

# --- riq (build-riq, validate) ---------------------------------------------


@app.command("build-riq")
def build_riq_cmd(
    annotations: str = typer.Option("data/raw/annotations.jsonl", help="Event logs (one VideoLog per line)."),
    frames: str = typer.Option("data/frames", help="Frame cache folder (<video_id>.npz)."),
    out: str = typer.Option("data/riq", help="Output folder for train/test/quarantine JSONL."),
    stats: str = typer.Option("data/reports/riq_stats.json", help="Stats JSON."),
    params: str = typer.Option("params.yaml", help="Params file (section riq)."),
) -> None:
    """Build the RIQ dataset from event logs (same code as the build_riq stage)."""
    import json

    from pipeline.params import load_params
    from pipeline.riq_build import build_riq

    report = build_riq(load_params(params).riq, annotations, frames, out, stats)
    typer.echo(json.dumps({"records": report["records"], "quarantined": report["quarantined"]}))


@app.command("validate")
def validate_cmd(
    file: str = typer.Argument(..., help="RIQ file (.jsonl, or .json holding a list)."),
    frames: str | None = typer.Option(None, help="Frame cache folder: each record's <video>.npz must exist."),
    report: str | None = typer.Option(None, help="Write the full report (JSON) here."),
) -> None:
    """Validate a RIQ file: one line per problem; exit 0 when every record is valid, 1 otherwise."""
    from pipeline.io import write_json
    from pipeline.validate import validate_file

    result = validate_file(file, frames)
    for line in result["errors"]:
        typer.echo(line)
    typer.echo(f"{file}: {result['valid']}/{result['records']} records valid", err=True)
    if report:
        write_json(report, result)
    raise typer.Exit(0 if not result["errors"] else 1)


# --- import (import, generate, card) ----------------------------------------


@app.command("import")
def import_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="hi-vtg, charades-sta, activitynet-captions or qvhighlights."),
    file: str = typer.Argument(..., help="Annotation file in that format."),
    out: str = typer.Option(..., help="RIQ JSONL to write."),
    frames: str | None = typer.Option(None, help="Frame cache folder: durations missing from the file come from it, and records without <video>.npz are quarantined."),
    quarantine: str | None = typer.Option(None, help="Quarantine JSONL ({id, reason, record}); default: OUT with .quarantine.jsonl."),
) -> None:
    """Import an annotation set into RIQ records; the last line printed is the JSON report."""
    import json

    from pipeline.importers import import_annotations
    from pipeline.io import InputError, write_jsonl

    try:
        result = import_annotations(fmt, file, frames)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    qpath = quarantine or str(out).removesuffix(".jsonl") + ".quarantine.jsonl"
    write_jsonl(out, result.records)
    write_jsonl(qpath, result.quarantine)
    for key, n in result.report["quirks"].items():
        typer.echo(f"quirk {key}: {n}")
    for q in result.quarantine[:5]:
        typer.echo(f"quarantined: {q['reason']}")
    typer.echo(f"{file}: {result.report['written']} written to {out}, {result.report['quarantined']} quarantined to {qpath}")
    typer.echo(json.dumps(result.report))


@app.command("generate")
def generate_cmd(
    file: str = typer.Argument(..., help="RIQ JSONL whose answerable records get refusable queries (e.g. from `rarft import`)."),
    out: str = typer.Option(..., help="RIQ JSONL to write: the input records plus the generated ones."),
    generators: str = typer.Option("perturb=1,shuffle=0.5", help="name=count per answerable query (perturb, shuffle, llm)."),
    params: str | None = typer.Option(None, help="Params file (section riq: perturb_difficulty, max_similarity, seed); default: built-in defaults."),
) -> None:
    """Generate refusable queries for the answerable records of a RIQ file; the last line is the JSON stats."""
    import json
    from collections import defaultdict

    from pipeline.generators import generate_refusables
    from pipeline.io import read_jsonl, write_jsonl
    from pipeline.llm_client import LLMClient
    from pipeline.params import Params, load_params

    riq = load_params(params).riq if params else Params().riq
    gens = {k: float(v) for k, v in (part.split("=") for part in generators.split(",") if part)}
    records = [r for _, r in read_jsonl(file)]
    captions: dict[str, list[str]] = defaultdict(list)
    for r in records:
        captions[r["video"]].append(r["problem"] if r["task_type"] == "answerable" else r["refusable_queries"][0]["problem"])
    result = generate_refusables(
        [r for r in records if r["task_type"] == "answerable"], captions, gens, difficulty_weights=riq.perturb_difficulty,
        max_similarity=riq.max_similarity, seed=riq.seed, llm=LLMClient.from_env() if "llm" in gens else None,
    )
    write_jsonl(out, records + result.records)
    if result.failures:
        write_jsonl(str(out).removesuffix(".jsonl") + ".quarantine.jsonl", result.failures)
    typer.echo(json.dumps(result.stats))


@app.command("card")
def card_cmd(
    file: str = typer.Argument(..., help="RIQ file."),
    quarantine: str | None = typer.Option(None, help="Its quarantine JSONL, to count what was left out and why."),
    out: str | None = typer.Option(None, help="Write the card (JSON) here too."),
) -> None:
    """Dataset card of a RIQ file: counts per task type, kind, difficulty, category; query length; duplicates; quarantine."""
    import json

    from pipeline.io import write_json
    from pipeline.validate import dataset_card

    card = dataset_card(file, quarantine)
    if out:
        write_json(out, card)
    typer.echo(json.dumps(card, indent=2))


# --- rewards and metrics (score, metrics) -----------------------------------
def _reward_settings(params_path: str | None):
    from pipeline.params import Params, load_params

    params = load_params(params_path) if params_path else Params()
    return dict(params.train.reward_weights), list(params.evaluate.iou_thresholds)


@app.command("score")
def score_cmd(
    records: str = typer.Option(..., "--records", help="RIQ records (JSON Lines)."),
    completions: str = typer.Option(..., "--completions", help='JSON Lines of {"id": record id, "completion": text}.'),
    out: str = typer.Option(..., "--out", help="Output JSON Lines: id, each reward, total."),
    params: str | None = typer.Option(None, "--params", help="params.yaml for train.reward_weights (default: built-in defaults)."),
):
    """Score completions with the four RA-RFT rewards."""
    from pipeline import rewards
    from pipeline.io import InputError, write_jsonl
    from pipeline.metrics import read_completions, read_riq

    try:
        weights, _ = _reward_settings(params)
        rewards.check_weights(weights)
        recs, ids, comps = read_completions(completions, read_riq(records), unique=False)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    scores = rewards.score(recs, comps)
    n = write_jsonl(out, ({"id": i, **s, "total": rewards.total(s, weights)} for i, s in zip(ids, scores, strict=True)))
    typer.echo(f"scored {n} completions -> {out}")


@app.command("metrics")
def metrics_cmd(
    records: str = typer.Option(..., "--records", help="RIQ records (JSON Lines)."),
    predictions: str = typer.Option(..., "--predictions", help='JSON Lines of {"id": record id, "completion": text}, one per record.'),
    out: str = typer.Option(..., "--out", help="metrics.json to write (sorted keys)."),
    params: str | None = typer.Option(None, "--params", help="params.yaml for train.reward_weights and evaluate.iou_thresholds."),
    partial: bool = typer.Option(False, "--partial", help="Score only the records that have a prediction (default: every record must have one)."),
):
    """Compute the metrics block of a prediction file."""
    from pipeline.io import InputError, write_json
    from pipeline.metrics import compute_metrics, missing_predictions, read_completions, read_riq
    from pipeline.params import Params, load_params

    try:
        weights, thresholds = _reward_settings(params)
        threshold_op = (load_params(params) if params else Params()).evaluate.threshold_op
        all_records = read_riq(records)
        recs, ids, comps = read_completions(predictions, all_records, unique=True)
        if not partial:
            missing_predictions(records, predictions, all_records, ids)
        result = compute_metrics(recs, comps, weights, thresholds, threshold_op)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    write_json(out, result)
    typer.echo(f"{result['n_items']} items: ra_iou.mean={result['ra_iou']['mean']:.4f} "
               f"relevance.accuracy={result['relevance']['accuracy']:.4f} -> {out}")


# --- model (make-model) -----------------------------------------------------


@app.command("make-model")
def make_model_cmd(
    riq: str = typer.Option("data/riq/train.jsonl", help="RIQ train split (tokenizer text and warm-start targets)."),
    frames: str = typer.Option("data/frames", help="Frame cache folder (<video_id>.npz)."),
    out: str = typer.Option("models/base", help="Output save_pretrained folder (replaced as a whole)."),
    params: str = typer.Option("params.yaml", help="Params file (sections model, frames)."),
    source: str = typer.Option(None, help="Override model.source ('tiny' or 'hub')."),
    hub_id: str = typer.Option(None, help="Override model.hub_id (a Hugging Face repo id or a local folder)."),
) -> None:
    """Build the base policy (same code as the make_model stage)."""
    from pipeline.io import InputError
    from pipeline.model import make_model, read_train_records, summary_line
    from pipeline.params import load_params

    try:
        p = load_params(params)
        overrides = {k: v for k, v in (("source", source), ("hub_id", hub_id)) if v is not None}
        model_params = type(p.model).model_validate(p.model.model_dump() | overrides)
        records = read_train_records(riq) if model_params.source == "tiny" else []
        summary = make_model(model_params, records, frames, out, frames=p.frames)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary_line(summary))


# --- train ------------------------------------------------------------------


@app.command("train")
def train_cmd(
    model: str = typer.Option("models/base", help="Base policy (save_pretrained folder)."),
    riq: str = typer.Option("data/riq/train.jsonl", help="RIQ train split (records with frames_path)."),
    out: str = typer.Option("models/trained", help="Output save_pretrained folder (replaced as a whole)."),
    live: str = typer.Option("reports/train", help="DVCLive folder for the training curves."),
    params: str = typer.Option("params.yaml", help="Params file (sections train, model)."),
    max_steps: int = typer.Option(None, help="Override train.max_steps."),
    checkpoints: str = typer.Option("scratch/checkpoints", help="Resumable checkpoints folder (a rerun resumes from it)."),
) -> None:
    """GRPO (RA-RFT) of the base policy in this process (same code as the train stage; for several
    processes or DeepSpeed run `python -m stages.train`, which launches them)."""
    import json

    from pipeline.io import InputError
    from pipeline.params import load_params
    from pipeline.train import train

    try:
        p = load_params(params)
        if max_steps is not None:
            p = p.model_copy(update={"train": p.train.model_copy(update={"max_steps": max_steps})})
        summary = train(p, model, riq, out, live, checkpoints)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary))


@app.command("profile")
def profile_cmd(
    name: str = typer.Argument(..., help="Profile: cpu (the defaults) or a configs/profiles/<name>.yaml, e.g. gpu8."),
    params: str = typer.Option("params.yaml", help="Params file to rewrite."),
) -> None:
    """Write a profile's values into params.yaml (then `dvc exp run`); prints the changed keys."""
    from pipeline.io import InputError
    from pipeline.profiles import apply_profile

    try:
        changed = apply_profile(name, params)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for key, (old, new) in changed.items():
        typer.echo(f"{key}: {old!r} -> {new!r}")
    typer.echo(f"{params}: profile {name} ({len(changed)} keys changed)")


# --- evaluate (evaluate, predict) -------------------------------------------


@app.command("evaluate")
def evaluate_cmd(
    base: str = typer.Option("models/base", help="Base model folder (save_pretrained)."),
    trained: str = typer.Option("models/trained", help="Trained model folder (save_pretrained)."),
    riq: str = typer.Option("data/riq/test.jsonl", help="Test set (RIQ JSON Lines)."),
    out: str = typer.Option("reports/eval/synthetic", help="Output folder: predictions, items.csv, plots/, report.md."),
    metrics: str = typer.Option("metrics.json", help="Metrics JSON to write."),
    params: str = typer.Option("params.yaml", help="Params file (sections evaluate, train.reward_weights)."),
    frames: str = typer.Option("data/frames", help="Frame cache for records without frames_path."),
    set_name: str = typer.Option("synthetic", "--set", help="Test set name, for the report."),
) -> None:
    """Evaluate the base and trained models on the test split (same code as the evaluate stage)."""
    import logging

    from pipeline.evaluate import evaluate
    from pipeline.io import InputError
    from pipeline.params import load_params

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        result = evaluate(base, trained, riq, out, metrics, load_params(params), frames_dir=frames, set_name=set_name)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for name, r in result.items():
        typer.echo(f"{name}: {r['n_items']} items: ra_iou.mean={r['ra_iou']['mean']:.4f} "
                   f"relevance.accuracy={r['relevance']['accuracy']:.4f}")


@app.command("predict")
def predict_cmd(
    video: str = typer.Argument(None, help="A video file (frames extracted with the frames params) or a frames .npz; with QUERY."),
    query: str = typer.Argument(None, help="The query to ground or refuse."),
    model: str = typer.Option(..., "--model", help="Model folder (save_pretrained)."),
    records: str = typer.Option(None, "--records", help="Batch mode: RIQ records (JSON Lines) with frames_path, instead of VIDEO QUERY."),
    out: str = typer.Option(None, "--out", help='Batch mode: output JSON Lines of {"id", "completion"}.'),
    params: str = typer.Option(None, "--params", help="Params file for the frames section (VIDEO QUERY on a raw video); default: params.yaml if present, else built-in defaults."),
    json_out: bool = typer.Option(False, "--json", help="VIDEO QUERY: print one JSON object (relevant, span, explanation, correction, completion)."),
    batch_size: int = typer.Option(16, help="Prompts per generate call."),
    max_new_tokens: int = typer.Option(128, help="Most new tokens per completion."),
    threads: int = typer.Option(1, help="CPU threads for torch (0 = torch default; 1 is fastest for the tiny model)."),
) -> None:
    """Greedy answer(s) of a model: `--model DIR VIDEO "query"` prints the span or the refusal with
    explanation and correction; `--model DIR --records R.jsonl --out P.jsonl` writes the input of
    `rarft metrics --predictions`."""
    import json
    from pathlib import Path

    from pipeline.io import InputError, write_jsonl

    if (records is None) == (video is None) or (records is not None and out is None) or (video is not None and query is None):
        typer.echo('error: give either VIDEO "QUERY" or --records R.jsonl --out P.jsonl', err=True)
        raise typer.Exit(2)
    try:
        if records is not None:
            from pipeline.inference import predict
            from pipeline.metrics import read_riq

            preds = predict(model, read_riq(records), batch_size=batch_size, max_new_tokens=max_new_tokens, num_threads=threads)
            typer.echo(f"{write_jsonl(out, preds)} predictions -> {out}")
            return
        from pipeline.params import Params, load_params
        from pipeline.predict import predict_video, render

        params_path = params or ("params.yaml" if Path("params.yaml").is_file() else None)
        frames = load_params(params_path).frames if params_path else Params().frames
        (answer,) = predict_video(model, video, [query], frames, max_new_tokens=max_new_tokens, num_threads=threads)
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(answer) if json_out else render(answer))


if __name__ == "__main__":
    app()
