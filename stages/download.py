"""Stage download: fill data/raw/ (videos/, annotations.jsonl, manifest.json, failures.jsonl) from the sources in params.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.download import DownloadError, print_summary, run_download
from pipeline.io import InputError
from pipeline.params import load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="Raw data folder to fill (data/raw).")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="Params file (section 'download').")
    args = parser.parse_args(argv)
    try:
        summary = run_download(load_params(args.params).download, args.out)
    except InputError as exc:
        sys.exit(f"error: {exc}")
    except DownloadError as exc:
        if exc.summary:
            print_summary(exc.summary)
        sys.exit(f"error: {exc}")
    print_summary(summary)


if __name__ == "__main__":
    main()
