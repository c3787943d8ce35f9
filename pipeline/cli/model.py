"""`rarft make-model`: the make_model stage's operation.

Command bodies only turn options into library calls; heavy imports (torch, transformers)
stay inside them so `rarft --help` is instant.
"""

from __future__ import annotations

import typer

from pipeline.core.io import one_line_errors


@one_line_errors
def make_model_cmd(
    riq: str = typer.Option("data/riq/train.jsonl", help="RIQ train split (tokenizer text and warm-start targets)."),
    frames: str = typer.Option("data/frames", help="Frame cache folder (<video_id>.npz)."),
    out: str = typer.Option("models/base", help="Output save_pretrained folder (replaced as a whole)."),
    events: str = typer.Option("", help="Synthetic event logs (data/raw/annotations.jsonl): dense vision targets and the look think of the tiny model; only train videos' logs are read ('' = none)."),
    params: str = typer.Option("params.yaml", help="Params file (sections model, frames)."),
    source: str = typer.Option(None, help="Override model.source ('tiny' or 'hub')."),
    hub_id: str = typer.Option(None, help="Override model.hub_id (a Hugging Face repo id or a local folder)."),
) -> None:
    """Build the base policy (same code as the make_model stage)."""
    from pipeline.core.params import load_params
    from pipeline.model.make import make_model, summary_line, train_event_logs
    from pipeline.riq.schema import read_train_records

    p = load_params(params)
    overrides = {k: v for k, v in (("source", source), ("hub_id", hub_id)) if v is not None}
    model_params = type(p.model).model_validate(p.model.model_dump() | overrides)
    records = read_train_records(riq) if model_params.source == "tiny" else []
    logs = train_event_logs(events, records) if events and records else None
    summary = make_model(model_params, records, frames, out, frames=p.frames, logs=logs)
    typer.echo(summary_line(summary))
