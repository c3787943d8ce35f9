"""Throughput of frame extraction vs qwen-vl-utils and vs the ffmpeg decode floor.

    python benchmarks/frames.py                   # makes 20 videos of 10-30 s at 320x240 + one 640x360
    python benchmarks/frames.py --preset synthetic  # 20 videos like the default data: 160x120, 10 fps, 8-30 s
    python benchmarks/frames.py --videos DIR --repeats 5 --json results.json

All methods run on the same videos in the same process, interleaved, after one
untimed warm-up pass (imports, page cache); each number is the minimum wall time
over the repeats, because the box may be shared.

* ours:   ``pipeline.data.frames.extract_dir`` (probe + one ffmpeg pass + .npz write), 1 worker and N workers;
* qwen:   ``qwen_vl_utils.fetch_video`` (decord backend) on each video in turn, same frame/pixel params;
* floor:  ``ffmpeg -i X -f null -`` with the same ffmpeg binary, sequential and N in parallel.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.params import FramesParams  # noqa: E402
from pipeline.data import decode as D  # noqa: E402
from pipeline.data import frames as F  # noqa: E402
from pipeline.data.ffmpeg import decoder_exe, ffmpeg_exe  # noqa: E402

PRESETS = {
    # (width, height, fps, durations in s)
    "default": [(320, 240, 30, 10 + i) for i in range(20)] + [(640, 360, 30, 30)],
    "synthetic": [(160, 120, 10, 8 + round(i * 22 / 19)) for i in range(20)],
}


def make_videos(out: Path, preset: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h, fps, seconds) in enumerate(PRESETS[preset]):
        path = out / f"bench_{i:02d}_{w}x{h}_{seconds}s.mp4"
        if not path.exists():
            subprocess.run(
                [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "lavfi",
                 "-i", f"testsrc2=size={w}x{h}:rate={fps}:duration={seconds}",
                 "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
                check=True,
            )
        paths.append(path)
    return paths


def qwen_all(paths: list[Path], p: FramesParams) -> None:
    from qwen_vl_utils.vision_process import fetch_video

    for path in paths:
        fetch_video({
            "video": str(path), "fps": p.fps, "min_frames": p.min_frames, "max_frames": p.max_frames,
            "min_pixels": p.min_pixels, "max_pixels": p.max_pixels, "total_pixels": p.total_pixels,
        })


def floor_all(paths: list[Path], workers: int, exe: str) -> None:
    def one(path: Path) -> None:
        subprocess.run([exe, "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"], check=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, paths))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, help="Folder of videos (default: generate a set).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="Generated set when --videos is not given.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="Parallel workers for the N-worker runs (0 = CPU count).")
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    args = parser.parse_args(argv)

    logging_off()
    params = FramesParams()
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        paths = F.list_videos(args.videos) if args.videos else make_videos(Path(tmp) / "videos", args.preset)
        out = Path(tmp) / "frames"
        minutes = sum(D.probe_video(p)["duration"] or 0 for p in paths) / 60
        methods = {
            "ours_1": lambda: F.extract_dir(paths, out, params, workers=1, progress=False),
            f"ours_{workers}": lambda: F.extract_dir(paths, out, params, workers=workers, progress=False),
            "qwen_1": lambda: qwen_all(paths, params),
            "floor_1": lambda: floor_all(paths, 1, decoder_exe()),
            f"floor_{workers}": lambda: floor_all(paths, workers, decoder_exe()),
            "floor_system_1": lambda: floor_all(paths, 1, ffmpeg_exe()),
        }
        times: dict[str, list[float]] = {k: [] for k in methods}
        for rep in range(args.repeats + 1):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn()
                if rep:  # the first pass warms imports and the page cache
                    times[name].append(time.perf_counter() - start)
        summary = F.extract_dir(paths, out, params, workers=1, progress=False)

    best = {k: min(v) for k, v in times.items()}
    result = {
        "videos": len(paths),
        "video_minutes": round(minutes, 2),
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "decoder": decoder_exe(),
        "seconds_min": {k: round(v, 4) for k, v in best.items()},
        "seconds_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "ratios": {
            "qwen_1 / ours_1 (speed-up, target >= 2.5)": round(best["qwen_1"] / best["ours_1"], 3),
            f"qwen_1 / ours_{workers}": round(best["qwen_1"] / best[f"ours_{workers}"], 3),
            "ours_1 / floor_1 (target <= 1.15)": round(best["ours_1"] / best["floor_1"], 3),
            f"ours_{workers} / floor_{workers}": round(best[f"ours_{workers}"] / best[f"floor_{workers}"], 3),
            "floor_system_1 / floor_1": round(best["floor_system_1"] / best["floor_1"], 3),
        },
        "cache_bytes": summary["bytes"],
        "cache_bytes_per_video_minute": round(summary["bytes"] / minutes) if minutes else None,
        "frames_per_video": round(summary["frames"] / max(summary["processed"], 1), 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def logging_off() -> None:
    # qwen-vl-utils warns once per video that max_pixels exceeds the derived cap.
    import logging

    logging.getLogger("qwen_vl_utils").setLevel(logging.ERROR)
    logging.getLogger("qwen_vl_utils.vision_process").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
