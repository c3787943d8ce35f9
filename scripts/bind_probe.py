"""Can the decoder read an object's shape and size at its colour, when the query offers no word to copy?

    python scripts/bind_probe.py models/base [--steps 1000] [--holdout 24]

Teaches the decoder of a base (tower and word embeddings frozen) one question about the synthetic
train videos: after the prompt "What shape and size is the C object?", the think "The C object: S,
Z." for every object of colour C (colours are unique within a video). Every 200 steps it teacher-
forces "The C object:" on the objects of the held-out train videos (the same ``split_holdout`` as
the warm start: never the test split) and counts where the top shape word (3) and, after the true
shape, the top size word (2) are the object's. Nothing is saved; prints JSON lines, with the share
of the commonest shape and size as the floor. Needs data/raw/annotations.jsonl (synthetic source).
"""

from __future__ import annotations

import argparse
import functools
import json
import random

import torch

from pipeline.core.events import read_event_logs
from pipeline.core.frames_cache import load_frames
from pipeline.model.make import split_holdout
from pipeline.model.video_inputs import batch_inputs, load_policy, prompt_text
from pipeline.riq.schema import read_train_records
from pipeline.riq.synthetic import SHAPES, SIZES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--holdout", type=int, default=24, help="Held-out train videos (warm_start.holdout_videos of the base).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, processor = load_policy(args.model_dir)
    tok = processor.tokenizer
    logs = read_event_logs("data/raw/annotations.jsonl")
    fit, held = split_holdout(read_train_records("data/riq/train.jsonl"), args.holdout, 0)

    def items(records):
        videos = sorted({r.video: r.frames_path for r in records}.items())
        return [(f"What shape and size is the {o.color} object?", path, o) for video, path in videos for o in logs[video].objects]

    train, test = items(fit), items(held)
    load = functools.lru_cache(maxsize=256)(load_frames)
    first = {n: {w: tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in words} for n, words in (("shape", SHAPES), ("size", SIZES))}

    @torch.no_grad()
    def accuracy(data) -> dict:
        model.eval()
        hit = {"shape": 0, "size": 0}
        for q, path, o in data:
            for name, said in (("shape", f"The {o.color} object:"), ("size", f"The {o.color} object: {o.shape},")):
                logits = model(**batch_inputs(processor, [prompt_text(processor, q) + "<think>" + said], [load(path)])).logits[0, -1]
                hit[name] += max(first[name], key=lambda w: float(logits[first[name][w]])) == getattr(o, name)
        model.train()
        return {name: round(h / len(data), 3) for name, h in hit.items()}

    floor = {n: round(max(sum(getattr(o, n) == w for *_, o in test) for w in first[n]) / len(test), 3) for n in first}
    print(json.dumps({"train_objects": len(train), "held_out_objects": len(test), "commonest": floor, "before": accuracy(test)}), flush=True)
    model.model.visual.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    rng, losses = random.Random(0), []
    model.train()
    for step in range(args.steps):
        chunk = rng.sample(train, 8)
        batch = batch_inputs(processor, [prompt_text(processor, q) + "<think>" for q, _, _ in chunk], [load(p) for _, p, _ in chunk],
                             [f"The {o.color} object: {o.shape}, {o.size}." for *_, o in chunk], append_eos=False)
        batch.pop("completion_mask")
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 200 == 199:
            print(json.dumps({"step": step + 1, "loss": round(sum(losses[-200:]) / 200, 4), "held_out": accuracy(test)}), flush=True)


if __name__ == "__main__":
    main()
