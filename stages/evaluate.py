"""Stage evaluate (one test set): base and trained model -> predictions, items, plots, report, metrics."""

from __future__ import annotations

import argparse
import json
import logging

from pipeline.core.io import one_line_errors
from pipeline.core.params import load_params
from pipeline.evaluate.run import evaluate


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="base model folder (save_pretrained)")
    parser.add_argument("--trained", required=True, help="trained model folder (save_pretrained)")
    parser.add_argument("--riq", required=True, help="test set (RIQ JSON Lines)")
    parser.add_argument("--out", required=True, help="output folder (predictions, items.csv, plots/, report.md)")
    parser.add_argument("--metrics", required=True, help="metrics JSON (DVC metric)")
    parser.add_argument("--frames", default=None, help="frame cache for records without frames_path (<video>.npz)")
    parser.add_argument("--set", default="test", help="test set name (key of test_sets in dvc.yaml), for the report")
    parser.add_argument("--events", default=None, help="synthetic event logs (data/raw/annotations.jsonl): the swapped control also checks donors against them")
    parser.add_argument("--train-riq", default=None, help="train RIQ (data/riq/train.jsonl) for the leakage guard: no video of this set may be in it (policy riq.eval_sets.<set>.leakage)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    result = evaluate(args.base, args.trained, args.riq, args.out, args.metrics, load_params(args.params),
                      frames_dir=args.frames, set_name=args.set, events_path=args.events,
                      train_riq=args.train_riq)
    print(json.dumps({m: {"n_items": r["n_items"], "ra_iou.mean": round(r["ra_iou"]["mean"], 4),
                          "relevance.accuracy": round(r["relevance"]["accuracy"], 4)} for m, r in result.items()}))


if __name__ == "__main__":
    main()
