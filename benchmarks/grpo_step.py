"""Seconds per GRPO step and rollout tokens/s, against plain ``model.generate`` of the same tokens.

    python benchmarks/grpo_step.py                      # CPU: the tiny model on a toy data chain
    python benchmarks/grpo_step.py --model models/base --riq data/riq/train.jsonl --params P --vllm
                                                        # GPU: a real policy, HF generate vs vLLM rollouts

A GRPO step = generate num_generations completions per prompt, score the rewards, the
reference and policy log-prob forwards, backward and the optimizer step. The baseline,
timed in the same run on the same prompts and videos, is one ``model.generate`` call
forced to produce the same number of new tokens (``min_new_tokens = max_new_tokens``):
what the rollouts alone would cost, so "step / generate" is GRPO's overhead on top of
sampling. Peer anchors (not measured here): VLM-R1 25-30 s/step on 8xA100 (G=7),
Video-R1 ~54 s/step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _trainer(model_dir, riq, params, work):
    from pipeline.train.run import build_trainer

    return build_trainer(params, model_dir, riq, Path(work) / "live", Path(work) / "out")


def time_steps(trainer, steps: int) -> list[dict]:
    """Per optimizer step: seconds and completion tokens (the first step is warm-up and dropped)."""
    from transformers import TrainerCallback

    rows: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                n = args.per_device_train_batch_size * trainer.accelerator.num_processes
                rows.append({"seconds": time.perf_counter() - self.t, "tokens": logs["completions/mean_length"] * n})

    trainer.add_callback(Clock())
    trainer.train()
    return rows[1:] if len(rows) > 1 else rows


def time_generate(trainer, new_tokens: int, repeats: int = 3) -> dict:
    """Plain generate of ``new_tokens`` per sequence for one step's prompts (same videos, same batch size)."""
    import torch

    from pipeline.core.frames_cache import load_frames
    from pipeline.model.video_inputs import batch_inputs

    tp = trainer.args
    n = tp.per_device_train_batch_size
    rows = [trainer.train_dataset[i] for i in range(n // tp.num_generations)]
    prompts = [r["prompt"] for r in rows for _ in range(tp.num_generations)]
    videos = [load_frames(r["frames_path"]) for r in rows for _ in range(tp.num_generations)]
    batch = batch_inputs(trainer.processing_class, prompts, videos).to(trainer.accelerator.device)
    model = trainer.accelerator.unwrap_model(trainer.model)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(**batch, do_sample=True, temperature=tp.temperature, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           suppress_tokens=trainer.generation_config.suppress_tokens)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times[1:])
    return {"seconds": seconds, "tokens": new_tokens * len(prompts)}


def summarize(name: str, steps: list[dict], gen: dict) -> dict:
    s = statistics.median(r["seconds"] for r in steps)
    tok = statistics.median(r["tokens"] for r in steps)
    return {"run": name, "s_per_step": round(s, 3), "rollout_tokens_per_step": round(tok, 1), "step_tokens_per_s": round(tok / s, 1),
            "baseline_generate_s": round(gen["seconds"], 3), "baseline_tokens_per_s": round(gen["tokens"] / gen["seconds"], 1),
            "step_over_generate": round(s / gen["seconds"], 2)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="save_pretrained policy (default: a toy chain with the tiny model is built)")
    ap.add_argument("--riq", help="RIQ train.jsonl (with --model)")
    ap.add_argument("--params", help="params file (default: the CPU benchmark settings below)")
    ap.add_argument("--steps", type=int, default=6, help="timed GRPO steps (+1 warm-up)")
    ap.add_argument("--vllm", action="store_true", help="also time vLLM rollouts (GPU with vLLM installed)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    import torch

    from pipeline.core.params import load_params, parse_params

    torch.set_num_threads(1)  # the shared CPU box; thread scaling of the tiny model is not what is measured
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir, riq = args.model, args.riq
            params = load_params(args.params) if args.params else parse_params({})
        else:
            from train_chain import build_chain

            chain = build_chain(Path(tmp) / "chain")
            model_dir, riq = chain / "base", chain / "riq" / "train.jsonl"
            params = parse_params({"train": {"max_completion_length": 112, "num_generations": 4, "per_device_train_batch_size": 8,
                                             "learning_rate": 1e-3, "checkpoint_steps": 0}})
        params = params.model_copy(update={"train": params.train.model_copy(update={"max_steps": args.steps + 1, "checkpoint_steps": 0})})
        results = []
        for vllm in [False, True] if args.vllm else [False]:
            p = params.model_copy(update={"train": params.train.model_copy(update={"use_vllm": vllm})})
            trainer = _trainer(model_dir, riq, p, Path(tmp) / f"run{int(vllm)}")
            steps = time_steps(trainer, args.steps)
            mean_len = max(1, round(statistics.median(r["tokens"] for r in steps) / p.train.per_device_train_batch_size))
            gen = time_generate(trainer, mean_len)
            results.append(summarize("vllm" if vllm else "hf_generate", steps, gen))
            del trainer
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (1 torch thread)"
    out = {"device": device, "model": str(args.model or "tiny (tests/train/train_chain.py)"), "results": results,
           "anchors": {"VLM-R1 8xA100 G=7": "25-30 s/step", "Video-R1": "~54 s/step"}}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
