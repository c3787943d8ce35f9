"""Stage build_riq: event logs + frame cache -> data/riq/{train,test,quarantine}.jsonl and the stats metric."""

from __future__ import annotations

import argparse

from pipeline.core.io import one_line_errors
from pipeline.core.params import load_params
from pipeline.riq.build import build_riq, summary_line


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--annotations", required=True, help="annotations.jsonl (one VideoLog per line)")
    parser.add_argument("--frames", required=True, help="frame cache folder (<video_id>.npz)")
    parser.add_argument("--out", required=True, help="output folder: train.jsonl, eval/<set>.jsonl, quarantine.jsonl")
    parser.add_argument("--stats", required=True, help="stats JSON (DVC metric)")
    parser.add_argument("--imports", action="append", default=[], help="folder of annotation files (riq.import_file, riq.train_sets/eval_sets files); repeat it: the first folder that has a file wins")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    stats = build_riq(load_params(args.params).riq, args.annotations, args.frames, args.out, args.stats, imports=args.imports)
    print(summary_line(stats))


if __name__ == "__main__":
    main()
