"""Which way GRPO's first step pushes the answer-vs-refuse decision of a base, per class.

    python scripts/decision_push.py models/base [N]   # N answerable + N refusable train records (default 32)

Samples ``train.num_generations`` completions per record at ``train.temperature`` (as a
GRPO rollout does), scores them with the reward registry and ``train.reward_weights``,
and sums each group's advantages with sign +1 for completions that answer (a span in
``<answer>``) and -1 for those that refuse: the direction in which one policy-gradient
step moves the decision, per class, with std-scaled or raw advantages and with the
loss normalised per sequence (``grpo``) or per token (``dapo``). Positive = toward
answering. Prints the table and, per (class, decision), count, mean reward, mean length.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import pandas as pd
import torch

from pipeline.core.frames_cache import frames_file, load_frames
from pipeline.core.params import load_params
from pipeline.core.prompt import parse_completion
from pipeline.model.video_inputs import batch_inputs, load_policy, prompt_text
from pipeline.riq.schema import read_riq
from pipeline.train.rewards import score, total


def rollouts(model_dir: str, n: int) -> pd.DataFrame:
    tp = load_params("params.yaml").train
    records = read_riq("data/riq/train.jsonl")
    rng = random.Random(1)
    pool = [r for cls in ("answerable", "refusable") for r in rng.sample([x for x in records if x.task_type == cls], n)]
    model, processor = load_policy(model_dir)
    model.eval()
    torch.manual_seed(0)
    g, rows = tp.num_generations, []
    for i in range(0, len(pool), 4):
        chunk = [r for r in pool[i : i + 4] for _ in range(g)]
        batch = batch_inputs(processor, [prompt_text(processor, r.problem) for r in chunk],
                             [load_frames(frames_file(r, "data/frames")) for r in chunk])
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=tp.max_completion_length, do_sample=True,
                                 temperature=tp.temperature, top_p=tp.top_p, top_k=0)
        ids = out[:, batch["input_ids"].shape[1] :]
        texts = processor.batch_decode(ids, skip_special_tokens=True)
        rewards = total(score(chunk, texts), tp.reward_weights)
        for k, (r, text) in enumerate(zip(chunk, texts, strict=True)):
            rows.append({"group": i + k // g, "cls": r.task_type, "answers": parse_completion(text).span is not None,
                         "reward": float(rewards[k]), "tokens": int((ids[k] != processor.tokenizer.pad_token_id).sum())})
    return pd.DataFrame(rows)


def push(df: pd.DataFrame, scale: str, loss: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, grp in df.groupby("group"):
        adv = grp.reward - grp.reward.mean()
        if scale == "group":
            adv = adv / (grp.reward.std() + 1e-4)
        weight = adv / (grp.tokens if loss == "grpo" else df.tokens.mean())
        cls = grp.cls.iloc[0]
        out[cls] = out.get(cls, 0.0) + float((weight * np.where(grp.answers, 1, -1)).sum())
    return out


if __name__ == "__main__":
    df = rollouts(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 32)
    for scale in ("group", "none"):
        for loss in ("grpo", "dapo"):
            p = push(df, scale, loss)
            print(f"scale_rewards={scale:5s} loss_type={loss:4s} push toward answering: answerable {p['answerable']:+.2f}  "
                  f"refusable {p['refusable']:+.2f}  net {sum(p.values()):+.2f}")
    print(df.groupby(["cls", "answers"]).agg(n=("reward", "size"), reward=("reward", "mean"), tokens=("tokens", "mean")).round(3))
