"""Reward distributions of HF-generate rollouts vs vLLM rollouts for the same prompts and videos (GPU only).

    python benchmarks/rollout_compare.py --model models/base --riq data/riq/train.jsonl [--prompts 64 --generations 4]

Both backends sample at train.temperature from the same policy; if vLLM's video path
(prompt text + frames with their true fps, pipeline/train/grpo.py override 6) matched the
trainer's own encoding, the per-reward means agree within noise and the two-sample
Kolmogorov-Smirnov distance of the total reward is small. Not run in CI (needs CUDA + vLLM).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ks_distance(a, b) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b))))


def score(completions: list[str], rows: list[dict], weights: dict) -> dict[str, np.ndarray]:
    from pipeline.train.rewards import REWARDS

    cols = {k: [r[k] for r in rows] for k in rows[0] if k not in ("prompt", "frames_path", "record_id")}
    out = {name: np.asarray(REWARDS[name](completions, **cols), dtype=float) for name in weights}
    out["total"] = sum(weights[n] * out[n] for n in weights)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--riq", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--generations", type=int, default=4)
    args = ap.parse_args(argv)

    import torch
    from vllm import LLM, SamplingParams

    from pipeline.core.frames_cache import load_frames
    from pipeline.core.params import load_params
    from pipeline.model.video_inputs import (
        batch_inputs,
        load_policy,
        prompt_text,
        video_metadata,
    )
    from pipeline.riq.schema import read_train_records
    from pipeline.train.run import build_dataset, resolve_attention

    tp = load_params(args.params).train
    model, processor = load_policy(args.model, dtype=torch.bfloat16, attn_implementation=resolve_attention("flash_attention_2"), device_map="cuda")
    ds, _ = build_dataset(read_train_records(args.riq), lambda q: prompt_text(processor, q), tp.answerable_fraction, tp.seed)
    rows = [ds[i] for i in range(min(args.prompts, len(ds))) for _ in range(args.generations)]
    videos = [load_frames(r["frames_path"]) for r in rows]

    hf = []
    for i in range(0, len(rows), 8):
        batch = batch_inputs(processor, [r["prompt"] for r in rows[i:i + 8]], videos[i:i + 8]).to("cuda")
        with torch.no_grad():
            out = model.generate(**batch, do_sample=True, temperature=tp.temperature, top_p=tp.top_p, max_new_tokens=tp.max_completion_length)
        hf += processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    del model
    torch.cuda.empty_cache()

    llm = LLM(model=str(args.model), gpu_memory_utilization=0.6, limit_mm_per_prompt={"video": 1})
    sampling = SamplingParams(temperature=tp.temperature, top_p=tp.top_p, max_tokens=tp.max_completion_length)
    inputs = [{"prompt": r["prompt"], "multi_modal_data": {"video": (v.frames, video_metadata(v))},
               "mm_processor_kwargs": {"do_sample_frames": False}} for r, v in zip(rows, videos, strict=True)]
    vl = [o.outputs[0].text for o in llm.generate(inputs, sampling_params=sampling)]

    a, b = score(hf, rows, tp.reward_weights), score(vl, rows, tp.reward_weights)
    report = {k: {"hf_mean": float(a[k].mean()), "vllm_mean": float(b[k].mean()), "ks": ks_distance(a[k], b[k])} for k in a}
    print(json.dumps({"completions": len(rows), "rewards": report}, indent=2))


if __name__ == "__main__":
    main()
