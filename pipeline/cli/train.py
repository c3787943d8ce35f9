"""`rarft train`, `rarft profile`: GRPO in this process, and writing a profile into params.yaml.

Command bodies only turn options into library calls; heavy imports (torch, transformers)
stay inside them so `rarft --help` is instant.
"""

from __future__ import annotations

import typer

from pipeline.core.io import one_line_errors


@one_line_errors
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

    from pipeline.core.params import load_params
    from pipeline.train.run import train

    p = load_params(params)
    if max_steps is not None:
        p = p.model_copy(update={"train": p.train.model_copy(update={"max_steps": max_steps})})
    summary = train(p, model, riq, out, live, checkpoints)
    typer.echo(json.dumps(summary))


@one_line_errors
def profile_cmd(
    name: str = typer.Argument(..., help="Profile: cpu (the defaults) or a configs/profiles/<name>.yaml, e.g. gpu8."),
    params: str = typer.Option("params.yaml", help="Params file to rewrite."),
) -> None:
    """Write a profile's values into params.yaml (then `dvc exp run`); prints the changed keys."""
    from pipeline.train.profiles import apply_profile

    changed = apply_profile(name, params)
    for key, (old, new) in changed.items():
        typer.echo(f"{key}: {old!r} -> {new!r}")
    typer.echo(f"{params}: profile {name} ({len(changed)} keys changed)")
