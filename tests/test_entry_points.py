"""One front door: a stage and its `rarft` command fail alike on bad input (one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# stage -> (its arguments, the `rarft` command doing the same); every path is given so that the
# params file (missing) is the one bad input.
CASES = {
    "download": (["--out", "{tmp}/raw"], ["download", "--out", "{tmp}/raw"]),
    "extract_frames": (["--videos", "{tmp}", "--out", "{tmp}/f", "--failures", "{tmp}/x.jsonl"], ["extract", "{tmp}", "--out", "{tmp}/f"]),
    "build_riq": (["--annotations", "{tmp}/a.jsonl", "--frames", "{tmp}", "--out", "{tmp}/riq", "--stats", "{tmp}/s.json"],
                  ["build-riq", "--annotations", "{tmp}/a.jsonl", "--frames", "{tmp}", "--out", "{tmp}/riq", "--stats", "{tmp}/s.json"]),
    "make_model": (["--riq", "{tmp}/t.jsonl", "--frames", "{tmp}", "--out", "{tmp}/m"], ["make-model", "--riq", "{tmp}/t.jsonl", "--frames", "{tmp}", "--out", "{tmp}/m"]),
    "train": (["--model", "{tmp}/m", "--riq", "{tmp}/t.jsonl", "--out", "{tmp}/o", "--live", "{tmp}/l"],
              ["train", "--model", "{tmp}/m", "--riq", "{tmp}/t.jsonl", "--out", "{tmp}/o", "--live", "{tmp}/l"]),
    "evaluate": (["--base", "{tmp}/m", "--trained", "{tmp}/m", "--riq", "{tmp}/t.jsonl", "--out", "{tmp}/e", "--metrics", "{tmp}/m.json"],
                 ["evaluate", "--base", "{tmp}/m", "--trained", "{tmp}/m", "--riq", "{tmp}/t.jsonl", "--out", "{tmp}/e", "--metrics", "{tmp}/m.json"]),
}


@pytest.mark.parametrize("stage", sorted(CASES))
def test_stage_and_cli_exit_2_with_one_line_on_bad_input(stage, tmp_path):
    stage_args, cli_args = CASES[stage]
    params = str(tmp_path / "missing.yaml")
    fill = lambda args: [a.format(tmp=tmp_path) for a in args] + ["--params", params]  # noqa: E731
    runs = {
        "stage": subprocess.run([sys.executable, "-m", f"stages.{stage}", *fill(stage_args)], cwd=ROOT, capture_output=True, text=True),
        "rarft": subprocess.run([sys.executable, "-m", "pipeline.cli.main", *fill(cli_args)], cwd=ROOT, capture_output=True, text=True),
    }
    for name, proc in runs.items():
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}: {proc.stderr[-400:]}"
        assert proc.stderr.strip() == f"error: {params}: not found", f"{name}: {proc.stderr[-400:]}"
