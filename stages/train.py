"""Stage train: base policy + RIQ train split -> models/trained (GRPO / RA-RFT) and the DVCLive curves."""

from __future__ import annotations

import argparse
import json

from pipeline.params import load_params
from pipeline.train import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="base policy (save_pretrained folder)")
    parser.add_argument("--riq", required=True, help="RIQ train.jsonl (records with frames_path)")
    parser.add_argument("--out", required=True, help="output save_pretrained folder (replaced as a whole)")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    summary = train(load_params(args.params), args.model, args.riq, args.out, args.live)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
