"""The protocol's build on the real annotation files (the table in docs/DATA.md).

    python -m benchmarks.real_sets [--shared ../shared/data] [--out /tmp/real_sets] [--no-generators]

Builds the train RIQ from Charades-STA train (refusals generated, as `rarft profile gpu8`; with
``--with-activitynet`` also ActivityNet Captions train) and
imports every released set present in ../shared, with a stand-in frames file (two grey frames
and the video's duration from the annotations) for every video: the real videos are not on
these machines, and without frames every record would be quarantined as ``no_frames``. So
"written" here counts what the annotations allow; ``no_frames`` on a real run adds the
videos a user lacks. Prints the per-set table (pipeline.riq.report) and the time. Skips
(exit 0) when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipeline.core.frames_cache import VideoFrames, frames_path, save_frames
from pipeline.core.params import parse_params
from pipeline.riq.build import build_riq
from pipeline.riq.report import sets_table
from pipeline.train.profiles import read_profile

# The shared copies: our file name -> path under ../shared/data (Charades-STA in the JSON layout).
FILES = {
    "charades_sta_train.json": "charades-sta/train.json", "charades_sta_test.json": "charades-sta/test.json",
    "train.json": "activitynet-captions/train.json", "val_2.json": "activitynet-captions/val_2.json",
    "hi_vtg_charades.json": "hi-vtg/hi_vtg_charades.json", "human_anno.json": "hi-vtg/human_anno.json",
}


def durations(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        return {k: float(v["duration"]) for k, v in data.items()}
    return {item["video"].rsplit("/", 1)[-1].rsplit(".", 1)[0]: float(item["duration"]) for item in data if item.get("duration")}


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--out", default="/tmp/real_sets")
    parser.add_argument("--no-generators", action="store_true", help="skip generated refusals (the overlap and import counts do not need them)")
    parser.add_argument("--with-activitynet", action="store_true", help="also train on ActivityNet Captions train (37,421 queries: generation takes much longer)")
    args = parser.parse_args(argv)
    shared, out = Path(args.shared), Path(args.out)
    if not (shared / "charades-sta" / "train.json").is_file():
        print(f"skipped: {shared} has no charades-sta/train.json")
        return None
    imports, frames = out / "import", out / "frames"
    imports.mkdir(parents=True, exist_ok=True)
    frames.mkdir(exist_ok=True)
    every: dict[str, float] = {}
    for name, rel in FILES.items():
        if (shared / rel).is_file():
            (imports / name).unlink(missing_ok=True)
            (imports / name).symlink_to((shared / rel).resolve())
            every |= durations(shared / rel)
    for vid, seconds in every.items():
        if not frames_path(frames, vid).is_file():
            save_frames(frames_path(frames, vid), VideoFrames(np.full((2, 28, 28, 3), 128, np.uint8), np.array([0.0, 0.5]), {"duration": seconds}))
    riq = read_profile("gpu8")["riq"]
    riq["train_sets"]["charades_sta_train"]["file"] = "charades_sta_train.json"
    if args.with_activitynet and (imports / "train.json").exists():  # both datasets in one train RIQ, as paper-cpu
        riq["train_sets"]["activitynet_train"] = {"format": "activitynet-captions", "file": "train.json"}
    riq["eval_sets"]["charades_sta_test"]["file"] = "charades_sta_test.json"
    riq["eval_sets"] = {k: v | {"required": False} for k, v in riq["eval_sets"].items()}
    if args.no_generators:
        riq["generators"] = {}
    t0 = time.perf_counter()
    stats = build_riq(parse_params({"riq": riq}).riq, out / "none.jsonl", frames, out / "riq", out / "riq_stats.json", imports=[imports])
    print(sets_table(stats))
    print(f"build_riq: {time.perf_counter() - t0:.0f} s; excluded train videos {stats['leakage']['excluded_train_videos']}, "
          f"records {stats['leakage']['excluded_train_records']}; stats in {out / 'riq_stats.json'}")
    return stats


if __name__ == "__main__":
    main()
