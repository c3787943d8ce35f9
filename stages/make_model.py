"""Stage make_model: RIQ train split + frame cache -> models/base (tiny build + warm start, or a hub snapshot)."""

from __future__ import annotations

import argparse

from pipeline.core.io import one_line_errors
from pipeline.core.params import load_params
from pipeline.model.make import make_model, summary_line, train_event_logs
from pipeline.riq.schema import read_train_records


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--riq", required=True, help="train.jsonl (tokenizer text and warm-start targets of the tiny model)")
    parser.add_argument("--frames", required=True, help="frame cache folder (<video_id>.npz)")
    parser.add_argument("--out", required=True, help="output save_pretrained folder")
    parser.add_argument("--events", default=None, help="synthetic event logs (data/raw/annotations.jsonl): dense targets of the tiny model's vision pretraining and its 'look' think; only train videos' logs are read")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    records = read_train_records(args.riq) if params.model.source == "tiny" else []
    logs = train_event_logs(args.events, records) if args.events and records else None
    summary = make_model(params.model, records, args.frames, args.out, frames=params.frames, logs=logs)
    print(summary_line(summary))


if __name__ == "__main__":
    main()
