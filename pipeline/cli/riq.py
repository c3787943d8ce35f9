"""`rarft build-riq`, `validate`, `import`, `generate`, `card`: building and checking RIQ files.

Command bodies only turn options into library calls; heavy imports (torch, transformers)
stay inside them so `rarft --help` is instant.
"""

from __future__ import annotations

import typer

from pipeline.core.io import one_line_errors


@one_line_errors
def build_riq_cmd(
    annotations: str = typer.Option("data/raw/annotations.jsonl", help="Event logs (one VideoLog per line)."),
    frames: str = typer.Option("data/frames", help="Frame cache folder (<video_id>.npz)."),
    out: str = typer.Option("data/riq", help="Output folder: train.jsonl, eval/<set>.jsonl, quarantine.jsonl."),
    stats: str = typer.Option("data/reports/riq_stats.json", help="Stats JSON."),
    imports: list[str] = typer.Option(["data/import", "data/raw/annotations"], help="Folders of annotation files (riq.import_file, riq.train_sets / eval_sets files), searched in order; repeat the option."),
    params: str = typer.Option("params.yaml", help="Params file (section riq)."),
) -> None:
    """Build the RIQ dataset from event logs or an imported set (same code and summary as the build_riq stage)."""
    from pipeline.core.params import load_params
    from pipeline.riq.build import build_riq, summary_line

    typer.echo(summary_line(build_riq(load_params(params).riq, annotations, frames, out, stats, imports=imports)))


@one_line_errors
def riq_table_cmd(
    stats: str = typer.Argument("data/reports/riq_stats.json", help="Stats file of a build (build_riq --stats)."),
) -> None:
    """Print the per-set table of a build as Markdown: items, queries, written, quarantined by reason, videos, overlap with the train RIQ."""
    import json
    from pathlib import Path

    from pipeline.core.io import InputError
    from pipeline.riq.report import sets_table

    if not Path(stats).is_file():
        raise InputError(f"{stats}: not found (build_riq writes it)")
    typer.echo(sets_table(json.loads(Path(stats).read_text(encoding="utf-8"))), nl=False)


@one_line_errors
def validate_cmd(
    file: str = typer.Argument(..., help="RIQ file (.jsonl, or .json holding a list)."),
    frames: str | None = typer.Option(None, help="Frame cache folder: each record's <video>.npz must exist."),
    report: str | None = typer.Option(None, help="Write the full report (JSON) here."),
) -> None:
    """Validate a RIQ file: one line per problem; exit 0 when every record is valid, 1 otherwise."""
    from pipeline.core.io import write_json
    from pipeline.riq.validate import validate_file

    result = validate_file(file, frames)
    for line in result["errors"]:
        typer.echo(line)
    typer.echo(f"{file}: {result['valid']}/{result['records']} records valid", err=True)
    if report:
        write_json(report, result)
    raise typer.Exit(0 if not result["errors"] else 1)

@one_line_errors
def import_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="seed, hi-vtg, charades-sta, activitynet-captions or qvhighlights."),
    file: str = typer.Argument(..., help="Annotation file in that format."),
    out: str = typer.Option(..., help="RIQ JSONL to write."),
    frames: str | None = typer.Option(None, help="Frame cache folder: durations missing from the file come from it, and records without <video>.npz are quarantined."),
    quarantine: str | None = typer.Option(None, help="Quarantine JSONL ({id, reason, record}); default: OUT with .quarantine.jsonl."),
) -> None:
    """Import an annotation set into RIQ records; the last line printed is the JSON report."""
    import json

    from pipeline.core.io import write_jsonl
    from pipeline.riq.importers import import_annotations

    result = import_annotations(fmt, file, frames)
    qpath = quarantine or str(out).removesuffix(".jsonl") + ".quarantine.jsonl"
    write_jsonl(out, result.records)
    write_jsonl(qpath, result.quarantine)
    for key, n in result.report["quirks"].items():
        typer.echo(f"quirk {key}: {n}")
    for q in result.quarantine[:5]:
        typer.echo(f"quarantined: {q['reason']}")
    typer.echo(f"{file}: {result.report['written']} written to {out}, {result.report['quarantined']} quarantined to {qpath}")
    typer.echo(json.dumps(result.report))


@one_line_errors
def export_cmd(
    file: str = typer.Argument(..., help="RIQ file (.jsonl, or .json holding a list)."),
    fmt: str = typer.Option("seed", "--format", help="Output format: seed (the seed README's RIQ record)."),
    out: str = typer.Option(..., help="File to write: a JSON list (.json) or JSON Lines (otherwise)."),
) -> None:
    """Write a RIQ file in another format (`--format seed`: the seed README's records; `rarft import seed` reads them back)."""
    from pipeline.riq.export import export_file

    n = export_file(file, fmt, out)
    typer.echo(f"{file}: {n} records written to {out} ({fmt})")


@one_line_errors
def generate_cmd(
    file: str = typer.Argument(..., help="RIQ JSONL whose answerable records get refusable queries (e.g. from `rarft import`)."),
    out: str = typer.Option(..., help="RIQ JSONL to write: the input records plus the generated ones."),
    generators: str = typer.Option("perturb=1,shuffle=0.5", help="name=count per answerable query (perturb, shuffle, llm)."),
    params: str | None = typer.Option(None, help="Params file (section riq: perturb_difficulty, max_similarity, seed); default: built-in defaults."),
) -> None:
    """Generate refusable queries for the answerable records of a RIQ file; the last line is the JSON stats."""
    import json
    from collections import defaultdict

    from pipeline.core.io import read_jsonl, write_jsonl
    from pipeline.core.params import Params, load_params
    from pipeline.riq.generators import generate_refusables
    from pipeline.riq.llm_client import LLMClient

    riq = load_params(params).riq if params else Params().riq
    gens = {k: float(v) for k, v in (part.split("=") for part in generators.split(",") if part)}
    records = [r for _, r in read_jsonl(file)]
    captions: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r["task_type"] == "answerable" or r["refusable_queries"]:
            captions[r["video"]].append(r["problem"] if r["task_type"] == "answerable" else r["refusable_queries"][0]["problem"])
    result = generate_refusables(
        [r for r in records if r["task_type"] == "answerable"], captions, gens, difficulty_weights=riq.perturb_difficulty,
        max_similarity=riq.max_similarity, seed=riq.seed, llm=LLMClient.from_env() if "llm" in gens else None,
    )
    write_jsonl(out, records + result.records)
    if result.failures:
        write_jsonl(str(out).removesuffix(".jsonl") + ".quarantine.jsonl", result.failures)
    typer.echo(json.dumps(result.stats))


@one_line_errors
def card_cmd(
    file: str = typer.Argument(..., help="RIQ file."),
    quarantine: str | None = typer.Option(None, help="Its quarantine JSONL, to count what was left out and why."),
    out: str | None = typer.Option(None, help="Write the card (JSON) here too."),
) -> None:
    """Dataset card of a RIQ file: counts per task type, kind, difficulty, category; query length; duplicates; quarantine."""
    import json

    from pipeline.core.io import write_json
    from pipeline.riq.validate import dataset_card

    card = dataset_card(file, quarantine)
    if out:
        write_json(out, card)
    typer.echo(json.dumps(card, indent=2))


@one_line_errors
def audit_cmd(
    files: list[str] = typer.Argument(..., help="TRAIN.jsonl TEST.jsonl (fit on one, score on the other), or one FILE split by video."),
    out: str = typer.Option(None, help="Write the full audit (JSON) here."),
    fmt: str = typer.Option("riq", "--format", help="riq, or an importer name (hi-vtg, charades-sta, activitynet-captions, qvhighlights) to read a released file directly."),
    test_fraction: float = typer.Option(0.2, help="One FILE: share of its videos held out for scoring."),
    seed: int = typer.Option(0, help="One FILE: seed of the split by video; also the classifiers' seed."),
    sbert: bool = typer.Option(True, help="Also the SBERT-embedding column (all-MiniLM-L6-v2)."),
) -> None:
    """Blind baseline: how well the query text alone separates refusable from answerable (split by video)."""
    from pipeline.core.io import write_json
    from pipeline.riq.audit import audit_files, summary_lines

    result = audit_files(files, fmt, test_fraction=test_fraction, seed=seed, use_sbert=sbert)
    for line in summary_lines(result):
        typer.echo(line)
    if out:
        write_json(out, result)
