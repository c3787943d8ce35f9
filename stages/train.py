"""Stage train: base policy + RIQ train split -> models/trained (GRPO / RA-RFT) and the DVCLive curves.

One process without DeepSpeed trains here; otherwise the stage re-runs itself under
`accelerate launch` as train.launch says (pipeline.train.launch; --dry-run prints the command).
"""

from __future__ import annotations

import argparse
import json
import sys

from accelerate import PartialState

from pipeline.core.io import one_line_errors
from pipeline.core.params import load_params
from pipeline.train.launch import relaunch
from pipeline.train.run import train


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="base policy (save_pretrained folder)")
    parser.add_argument("--riq", required=True, help="RIQ train.jsonl (records with frames_path)")
    parser.add_argument("--out", required=True, help="output save_pretrained folder (replaced as a whole)")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    parser.add_argument("--checkpoints", default="scratch/checkpoints", help="resumable checkpoints (not a DVC output)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the command that would train, and exit")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    command = relaunch(params.train, "stages.train", [a for a in argv if a != "--dry-run"], dry_run=args.dry_run)
    if args.dry_run:
        print(command)
        return
    summary = train(params, args.model, args.riq, args.out, args.live, args.checkpoints)
    # One summary per run: every rank printing its own interleaved them on one stdout line.
    if PartialState().is_main_process:
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
