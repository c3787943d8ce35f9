"""Stage download: fill data/raw/ (videos/, annotations.jsonl, manifest.json, failures.jsonl) from the sources in params.yaml."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.io import one_line_errors
from pipeline.core.params import load_params
from pipeline.data.download import download_and_report


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="Raw data folder to fill (data/raw).")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="Params file (section 'download').")
    args = parser.parse_args(argv)
    download_and_report(load_params(args.params).download, args.out)


if __name__ == "__main__":
    main()
