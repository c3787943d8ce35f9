"""The `rarft` command: the pipeline's operations outside DVC (`rarft --help`).

This file only wires typer to the command functions of pipeline/cli/<group>.py. Every command
runs the same library call as its stage, with the same defaults and exit status: 2 for bad
input (one line naming file, record and field), 1 for other failures.
"""

from __future__ import annotations

import typer

from pipeline.cli import data, evaluate, model, riq, train

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])

app.command("download")(data.download_cmd)
app.command("extract")(data.extract_cmd)
app.command("build-riq")(riq.build_riq_cmd)
app.command("riq-table")(riq.riq_table_cmd)
app.command("validate")(riq.validate_cmd)
app.command("import")(riq.import_cmd)
app.command("export")(riq.export_cmd)
app.command("generate")(riq.generate_cmd)
app.command("card")(riq.card_cmd)
app.command("audit")(riq.audit_cmd)
app.command("make-model")(model.make_model_cmd)
app.command("train")(train.train_cmd)
app.command("profile")(train.profile_cmd)
app.command("score")(evaluate.score_cmd)
app.command("metrics")(evaluate.metrics_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("predict")(evaluate.predict_cmd)


if __name__ == "__main__":
    app()
