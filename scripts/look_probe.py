"""Does the tiny model see the query's colour? Two numbers for a model folder (docs/MODEL.md).

    python scripts/look_probe.py models/base [data/riq/eval/synthetic.jsonl]

- ``tower_colour_auc``: for every video of the records and every colour, the best video token's
  score for the colour word against "an object of this colour is in the video" (event log);
  also for the shape and size words. 0.5 = chance.
- ``look_auc``: teacher-forced, after ``<think>Asked: A. In view: C``, the yes-minus-no logit for
  up to 100 answerable queries, each asked of its own video and of 6 others; AUC of that logit
  against "the video has an object of colour C". ``yes_rate`` = share with logit > 0.
- ``shape_look_auc`` / ``size_look_auc``: on the pairs whose video has colour C, the same logit after
  ``In view: C yes, S`` (and ``…, S yes, Z``) against "the object of colour C has shape S (size Z)".
- ``named``: for a model taught ``look_names``: on the same pairs, the share where the word the
  decoder ranks first after ``In view: C yes,`` (among the shapes; then, after the true shape,
  among the sizes) is the video's, split by whether the query asked that word ("asked", which
  copying the query also gets right) or another ("other", which only reading the video gets).

Prints one JSON line. Needs data/raw/annotations.jsonl (synthetic source).
"""

from __future__ import annotations

import functools
import json
import sys

import torch

from pipeline.core.events import read_event_logs
from pipeline.core.frames_cache import load_frames
from pipeline.core.io import read_jsonl
from pipeline.model.targets import look_check, look_prefix, verify_phrases
from pipeline.model.video_inputs import batch_inputs, load_policy, prompt_text
from pipeline.model.vision_pretrain import _video_batch
from pipeline.riq.schema import RiqRecord
from pipeline.riq.synthetic import COLORS, SHAPES, SIZES, parse_query


def auc(pos: list[float], neg: list[float]) -> float:
    n = torch.tensor(neg)
    return round(sum(float((p > n).sum() + 0.5 * (p == n).sum()) for p in pos) / (len(pos) * len(neg)), 3)


def main(model_dir: str, riq: str) -> dict:
    torch.set_num_threads(1)
    model, processor = load_policy(model_dir)
    model.eval()
    tok = processor.tokenizer
    logs = read_event_logs("data/raw/annotations.jsonl")
    records = [RiqRecord.model_validate(o) for _, o in read_jsonl(riq)]
    load = functools.lru_cache(maxsize=256)(load_frames)
    word = lambda w: tok(" " + w, add_special_tokens=False)["input_ids"][-1]  # noqa: E731
    groups = {"colour": list(COLORS), "shape": [s.split()[0] for s in SHAPES], "size": list(SIZES)}
    scores = {g: ([], []) for g in groups}
    videos = sorted({r.video: r.frames_path for r in records}.items())
    embed = model.get_input_embeddings().weight
    with torch.no_grad():
        for video, path in videos:
            out = model.model.visual(*_video_batch(processor, load(path)))
            feats = out.pooler_output if hasattr(out, "pooler_output") else out
            have = {"colour": {o.color for o in logs[video].objects}, "shape": {o.shape.split()[0] for o in logs[video].objects},
                    "size": {o.size for o in logs[video].objects}}
            for g, words in groups.items():
                for w, s in zip(words, (feats @ embed[[word(w) for w in words]].T).amax(0).tolist()):
                    scores[g][0 if w in have[g] else 1].append(s)
    phrases = verify_phrases(records)
    asked = [r for r in records if r.task_type == "answerable" and r.id in phrases and look_check(r, logs[r.video])][:100]
    yes, no = tok(" yes", add_special_tokens=False)["input_ids"], tok(" no", add_special_tokens=False)["input_ids"]
    k = next(i for i, (a, b) in enumerate(zip(yes, no)) if a != b)  # the first token that differs
    lead = tok.decode(yes[:k])
    pos, neg = [], []
    # The shape and size checks, teacher-forced after a "yes" for the colour, on the videos that
    # have the colour: yes-minus-no against "the object of that colour has the asked shape / size".
    attr = {"shape": ([], []), "size": ([], [])}
    named = {(n, m): [0, 0] for n in ("shape", "size") for m in ("asked", "other")}
    first = {n: {w: tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ws}
             for n, ws in (("shape", list(SHAPES)), ("size", list(SIZES)))}
    with torch.no_grad():
        for r in asked:
            colour = look_check(r, logs[r.video])[0]
            subject = parse_query(" ".join(r.problem.split())).subject
            for video, path in [*videos[:6], (r.video, r.frames_path)]:
                text = prompt_text(processor, r.problem) + "<think>" + look_prefix(phrases[r.id][0], colour) + lead
                logits = model(**batch_inputs(processor, [text], [load(path)])).logits[0, -1]
                s = float(logits[yes[k]] - logits[no[k]])
                obj = next((o for o in logs[video].objects if o.color == colour), None)
                (pos if obj else neg).append(s)
                if obj is None:
                    continue
                said = look_prefix(phrases[r.id][0], colour) + " yes"
                for name in ("shape", "size"):
                    logits = model(**batch_inputs(processor, [prompt_text(processor, r.problem) + "<think>" + said + ","],
                                                  [load(path)])).logits[0, -1]
                    best = max(first[name], key=lambda w: float(logits[first[name][w]]))
                    hit = named[name, "asked" if getattr(obj, name) == getattr(subject, name) else "other"]
                    hit[0] += best == getattr(obj, name)
                    hit[1] += 1
                    said += f", {getattr(obj, name)}"
                said = look_prefix(phrases[r.id][0], colour) + " yes"
                for name in ("shape", "size"):
                    said += f", {getattr(subject, name)}"
                    text = prompt_text(processor, r.problem) + "<think>" + said + lead
                    logits = model(**batch_inputs(processor, [text], [load(path)])).logits[0, -1]
                    ok = getattr(obj, name) == getattr(subject, name)
                    attr[name][0 if ok else 1].append(float(logits[yes[k]] - logits[no[k]]))
                    said += " yes"
    return {"model": model_dir, "videos": len(videos),
            "tower_auc": {g: auc(*scores[g]) for g in groups},
            "look_auc": auc(pos, neg),
            "shape_look_auc": auc(*attr["shape"]) if all(attr["shape"]) else None,
            "size_look_auc": auc(*attr["size"]) if all(attr["size"]) else None,
            "named": {f"{n}_{m}": round(a / b, 3) if b else None for (n, m), (a, b) in named.items()},
            "named_pairs": {f"{n}_{m}": b for (n, m), (_, b) in named.items()},
            "attr_pairs": {n: [len(a), len(b)] for n, (a, b) in attr.items()}, "yes_rate_in_view": round(sum(p > 0 for p in pos) / len(pos), 3),
            "yes_rate_not_in_view": round(sum(x > 0 for x in neg) / len(neg), 3), "pairs": [len(pos), len(neg)]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "data/riq/eval/synthetic.jsonl")))
