"""`rarft score`, `metrics`, `evaluate`, `predict`: rewards, metrics and greedy answers.

Command bodies only turn options into library calls; heavy imports (torch, transformers)
stay inside them so `rarft --help` is instant.
"""

from __future__ import annotations

import typer

from pipeline.core.io import one_line_errors


def _reward_settings(params_path: str | None):
    from pipeline.core.params import Params, load_params

    params = load_params(params_path) if params_path else Params()
    return dict(params.train.reward_weights), list(params.evaluate.iou_thresholds)


@one_line_errors
def score_cmd(
    records: str = typer.Option(..., "--records", help="RIQ records (JSON Lines)."),
    completions: str = typer.Option(..., "--completions", help='JSON Lines of {"id": record id, "completion": text}.'),
    out: str = typer.Option(..., "--out", help="Output JSON Lines: id, each reward, total."),
    params: str | None = typer.Option(None, "--params", help="params.yaml for train.reward_weights (default: built-in defaults)."),
):
    """Score completions with the four RA-RFT rewards."""
    from pipeline.core.io import write_jsonl
    from pipeline.evaluate.metrics import read_completions, read_riq
    from pipeline.train import rewards

    weights, _ = _reward_settings(params)
    rewards.check_weights(weights)
    recs, ids, comps = read_completions(completions, read_riq(records), unique=False)
    scores = rewards.score(recs, comps)
    n = write_jsonl(out, ({"id": i, **s, "total": rewards.total(s, weights)} for i, s in zip(ids, scores, strict=True)))
    typer.echo(f"scored {n} completions -> {out}")


@one_line_errors
def metrics_cmd(
    records: str = typer.Option(..., "--records", help="RIQ records (JSON Lines)."),
    predictions: str = typer.Option(..., "--predictions", help='JSON Lines of {"id": record id, "completion": text}, one per record.'),
    out: str = typer.Option(..., "--out", help="metrics.json to write (sorted keys)."),
    params: str | None = typer.Option(None, "--params", help="params.yaml for train.reward_weights and evaluate.iou_thresholds."),
    partial: bool = typer.Option(False, "--partial", help="Score only the records that have a prediction (default: every record must have one)."),
    blind_predictions: str | None = typer.Option(None, "--blind-predictions", help="The blind control's predictions (predictions_<model>_blind.jsonl), one per scored record: adds control.blind and visual_gain."),
    swapped_predictions: str | None = typer.Option(None, "--swapped-predictions", help='The swapped control\'s predictions (predictions_<model>_swapped.jsonl: {"id", "donor", "completion"}): adds control.swapped.'),
    protocol: str | None = typer.Option(None, "--protocol", help="'rarft' (default: evaluate.protocol of --params, else rarft) or 'official': also the 'official' block (first <answer> after removing <think>, R@k in percent, all-mpnet-base-v2 explanation similarity from $RARFT_MPNET_PATH or skipped); docs/METRICS.md."),
):
    """Compute the metrics block of a prediction file (with its video controls when given)."""
    from pipeline.core.io import InputError, write_json
    from pipeline.core.params import Params, load_params
    from pipeline.evaluate.metrics import metrics_from_files
    from pipeline.evaluate.official import PROTOCOLS, official_from_files

    weights, thresholds = _reward_settings(params)
    ev = (load_params(params) if params else Params()).evaluate
    threshold_op, protocol = ev.threshold_op, protocol or ev.protocol
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol: {protocol!r} is not one of {PROTOCOLS}")
    result = metrics_from_files(records, predictions, weights, thresholds, threshold_op, partial=partial,
                                blind_path=blind_predictions, swapped_path=swapped_predictions)
    if protocol == "official":
        result["official"] = official_from_files(records, predictions, thresholds, threshold_op, partial=partial)
    write_json(out, result)
    extra = ""
    if "visual_gain" in result:
        extra += f" visual_gain.relevance.accuracy={result['visual_gain']['relevance']['accuracy']:.4f}"
    if "swapped" in result.get("control", {}):
        extra += f" control.swapped.refusal_rate={result['control']['swapped']['refusal_rate']:.4f}"
    typer.echo(f"{result['n_items']} items: ra_iou.mean={result['ra_iou']['mean']:.4f} "
               f"relevance.accuracy={result['relevance']['accuracy']:.4f}{extra} -> {out}")


@one_line_errors
def evaluate_cmd(
    base: str = typer.Option("models/base", help="Base model folder (save_pretrained)."),
    trained: str = typer.Option("models/trained", help="Trained model folder (save_pretrained)."),
    riq: str = typer.Option("data/riq/eval/synthetic.jsonl", help="Test set (RIQ JSON Lines; build_riq writes data/riq/eval/<set>.jsonl)."),
    out: str = typer.Option("reports/eval/synthetic", help="Output folder: predictions, items.csv, plots/, report.md."),
    metrics: str = typer.Option("reports/metrics/synthetic.json", help="Metrics JSON to write."),
    params: str = typer.Option("params.yaml", help="Params file (sections evaluate, train.reward_weights)."),
    frames: str = typer.Option("data/frames", help="Frame cache for records without frames_path."),
    set_name: str = typer.Option("synthetic", "--set", help="Test set name, for the report."),
    events: str = typer.Option("data/raw/annotations.jsonl", help="Synthetic event logs the swapped control checks donor videos against ('' = compare query texts only, e.g. imported sets)."),
    train_riq: str = typer.Option("data/riq/train.jsonl", help="Train RIQ for the leakage guard ('' = no check)."),
) -> None:
    """Evaluate the base and trained models on the test split (same code as the evaluate stage)."""
    import logging

    from pipeline.core.params import load_params
    from pipeline.evaluate.run import evaluate

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    result = evaluate(base, trained, riq, out, metrics, load_params(params), frames_dir=frames, set_name=set_name,
                      events_path=events or None, train_riq=train_riq or None)
    for name, r in result.items():
        typer.echo(f"{name}: {r['n_items']} items: ra_iou.mean={r['ra_iou']['mean']:.4f} "
                   f"relevance.accuracy={r['relevance']['accuracy']:.4f}")


@one_line_errors
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

    from pipeline.core.io import write_jsonl

    if (records is None) == (video is None) or (records is not None and out is None) or (video is not None and query is None):
        typer.echo('error: give either VIDEO "QUERY" or --records R.jsonl --out P.jsonl', err=True)
        raise typer.Exit(2)
    if records is not None:
        from pipeline.evaluate.inference import predict
        from pipeline.evaluate.metrics import read_riq

        preds = predict(model, read_riq(records), batch_size=batch_size, max_new_tokens=max_new_tokens, num_threads=threads)
        typer.echo(f"{write_jsonl(out, preds)} predictions -> {out}")
        return
    from pipeline.core.params import Params, load_params
    from pipeline.evaluate.predict import predict_video, render

    params_path = params or ("params.yaml" if Path("params.yaml").is_file() else None)
    frames = load_params(params_path).frames if params_path else Params().frames
    (answer,) = predict_video(model, video, [query], frames, max_new_tokens=max_new_tokens, num_threads=threads)
    typer.echo(json.dumps(answer) if json_out else render(answer))
