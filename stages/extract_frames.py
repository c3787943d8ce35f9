"""Stage extract_frames: one frames file per video in data/frames/, unreadable videos in a failures manifest.

Incremental: only new or changed videos are extracted unless the frames params changed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.core.io import one_line_errors
from pipeline.core.params import load_params
from pipeline.data.frames import extract_dir


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=Path, required=True, help="Folder of source videos (data/raw/videos).")
    parser.add_argument("--out", type=Path, required=True, help="Folder for <video_id>.npz frames files (data/frames).")
    parser.add_argument("--failures", type=Path, required=True, help="JSONL manifest of videos that could not be read.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="Params file (section 'frames').")
    args = parser.parse_args(argv)
    params = load_params(args.params).frames
    # prune: data/frames mirrors data/raw/videos (it is a persisted DVC output, kept between runs).
    summary = extract_dir(args.videos, args.out, params, failures_path=args.failures, prune=True)
    summary.pop("videos")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
