"""The real data chain at toy size for the training tests that run the train stage as a subprocess.

Synthetic videos encoded by ffmpeg, frames extracted, RIQ records built, and a tiny
Qwen2.5-VL warm-started long enough that its rollouts are well-formed often enough for
rewards to differ within a group (a random policy earns all-zero rewards, so GRPO
would not move it and "resumed == uninterrupted" could not fail).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.core.params import (
    FramesParams,
    ModelParams,
    RiqParams,
    SyntheticParams,
    TinyModelParams,
    VisionPretrainParams,
    WarmStartParams,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=400)
FRAMES = FramesParams(fps=1.0, total_pixels=16 * 28 * 28, workers=1)


def build_chain(root: Path) -> Path:
    from pipeline.core.params import DownloadParams
    from pipeline.data.download import run_download
    from pipeline.data.frames import extract_dir
    from pipeline.model.make import make_model
    from pipeline.riq.build import build_riq
    from pipeline.riq.schema import read_train_records

    synth = SyntheticParams(n_videos=3, min_duration=8.0, max_duration=9.0, seed=1)
    run_download(DownloadParams(synthetic=synth, workers=1), root / "raw")
    extract_dir(root / "raw" / "videos", root / "frames", FRAMES, progress=False)
    build_riq(RiqParams(test_fraction=0.34), root / "raw" / "annotations.jsonl", root / "frames", root / "riq", root / "stats.json")
    records = read_train_records(root / "riq" / "train.jsonl")
    # The chain tests GRPO's mechanics on a format-trained policy; seeing the video is not needed.
    # Both refusal kinds are taught so that 3 videos give the policy refusals to sample at all.
    warm = WarmStartParams(epochs=60, learning_rate=2e-2, eval_records=0, holdout_videos=0,
                           refusable_kinds=["hard_irrelevant", "shuffled"], answerable_fraction=0.5)
    vision = VisionPretrainParams(steps=0)
    make_model(ModelParams(tiny=TINY, vision_pretrain=vision, warm_start=warm), records, root / "frames", root / "base", frames=FRAMES)
    return root


def write_params(path: Path, **train) -> Path:
    small = {"max_completion_length": 112, "num_generations": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3}
    path.write_text(yaml.safe_dump({"train": small | train}))
    return path


def stage_cmd(chain: Path, params: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stages.train", "--model", str(chain / "base"), "--riq", str(chain / "riq" / "train.jsonl"),
            "--out", str(chain / f"{name}_out"), "--live", str(chain / f"{name}_live"),
            "--checkpoints", str(chain / f"{name}_ckpt"), "--params", str(params), *extra]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def env() -> dict[str, str]:
    # One torch thread per process: the box is shared, and results must not depend on thread counts.
    # A free rendezvous port: other runs on this machine may hold accelerate's default 29500.
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "RARFT_MAIN_PROCESS_PORT": free_port()}


def run_stage(cmd: list[str], timeout: int = 170) -> tuple[dict, str]:
    """(summary printed by the stage, stderr)."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1]), proc.stderr


def curve(live: Path, key: str) -> list[tuple[int, float]]:
    rows = (live / "plots" / "metrics" / f"{key}.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), float(r.split("\t")[1])) for r in rows]
