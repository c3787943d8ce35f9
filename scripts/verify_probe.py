"""Where a `verify`-think base fails: copying the query, naming what is seen, or deciding.

    python scripts/verify_probe.py models/base held    # the warm start's 8 held-out videos (77 records)
    python scripts/verify_probe.py models/base train   # 77 records the warm start trained on

Greedy completions are parsed for "Asked: A. Seen: T, from|not"; A and T are compared
with the phrases of pipeline.model.make.verify_phrases. Prints one JSON line of counts
(the table in docs/MODEL.md). Run from the repository root after `dvc repro make_model`.
"""

from __future__ import annotations

import json
import random
import re
import sys

import torch

from pipeline.core.frames_cache import frames_file, load_frames
from pipeline.core.params import load_params
from pipeline.model.make import split_holdout
from pipeline.model.targets import verify_phrases
from pipeline.model.video_inputs import batch_inputs, load_policy, prompt_text
from pipeline.riq.schema import read_riq

THINK = re.compile(r"Asked: (.*?)\. Seen: (.*?), (from|not)")


def main(model_dir: str, split: str) -> dict:
    mp = load_params("params.yaml").model
    records = read_riq("data/riq/train.jsonl")
    fit, held = split_holdout(records, mp.warm_start.holdout_videos, mp.tiny.seed)
    pool = held if split == "held" else random.Random(0).sample(fit, len(held))
    phrases = verify_phrases(records)
    model, processor = load_policy(model_dir)
    model.eval()
    texts: list[str] = []
    for i in range(0, len(pool), 16):
        chunk = pool[i : i + 16]
        batch = batch_inputs(processor, [prompt_text(processor, r.problem) for r in chunk],
                             [load_frames(frames_file(r, "data/frames")) for r in chunk])
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=128, do_sample=False)
        texts += processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    counts = {"split": split, "records": len(pool), "parsed": 0, "asked_exact": 0, "seen_exact": 0,
              "decision_follows_own_text": 0, "decision_correct": 0}
    for rec, text in zip(pool, texts, strict=True):
        m = THINK.search(text)
        if not m or rec.id not in phrases:
            continue
        asked, seen, decision = m.groups()
        counts["parsed"] += 1
        counts["asked_exact"] += asked == phrases[rec.id][0]
        counts["seen_exact"] += seen == phrases[rec.id][1]
        counts["decision_follows_own_text"] += (asked == seen) == (decision == "from")
        counts["decision_correct"] += (decision == "from") == (rec.task_type == "answerable")
    return counts


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "held")))
