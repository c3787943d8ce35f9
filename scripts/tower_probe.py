"""Where does the tiny vision tower lose an object's shape? A tower-only probe on held-out train videos.

    python scripts/tower_probe.py [--steps 800] [--located] [--shift 13] [--all-log-words]
                                  [--whole-object] [--recolour-objects] [--clip-frames 8] [--holdout 24]
                                  [--save-tower T.pt | --load-tower T.pt] [--look data/riq/eval/synthetic.jsonl]

Builds the tiny model of params.yaml (tokenizer, seeded weights), runs only its vision pretraining
(with the options given: each flag is the model.vision_pretrain option of that name; the rest
of params.yaml as it is) on the train videos that ``split_holdout`` keeps for fitting, and then,
on every object of the held-out train videos (never the test split), reads the object's shape (3:
square, wide bar, tall bar, told apart by their first word) and size (2) from the video tokens,
three ways:

- ``at_colour``: at the one token of the video that scores highest for the object's colour word;
- ``most_pixels``: at each time step the token that covers most of the object's pixels, logits
  averaged over the steps the object is in view;
- ``all_tokens``: averaged over every token that covers at least 3 of its pixels (the targets of
  ``located``).

Each read is split by the object's shape and size, by whether the object ever spans more than one
token, and by whether it grows or shrinks or moves. Prints one JSON object.

With ``--look RIQ.jsonl`` it also reads every object of that file's videos (the test split: the
ceiling is measured where the bar is) and scores a look that no decoder could beat on this tower:
the colour check perfect, the shape and size of the colour's object taken from each of the three
reads, refusing when one differs from the query (``look_oracle.py`` gives the same look with
perfect or noisy reads). ``--save-tower`` / ``--load-tower`` keep a pretrained tower, so a longer
schedule can be read without pretraining again. Needs a workspace where
``dvc repro build_riq`` has run (data/riq/train.jsonl, data/frames, data/raw/annotations.jsonl).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pipeline.core.frames_cache import frames_file, load_frames
from pipeline.core.params import load_params
from pipeline.model.make import build_tiny, split_holdout, train_event_logs
from pipeline.model.vision_pretrain import _video_batch, colour_map, pretrain_vision
from pipeline.riq.schema import read_train_records
from pipeline.riq.synthetic import SHAPES, SIZES

MIN_PIXELS = 3  # as located_targets: a token that covers fewer of an object's pixels does not show it


def first_id(tok, word: str) -> int:
    return tok(" " + word.split()[0], add_special_tokens=False)["input_ids"][0]


def extra_world(params, n: int, root: Path):
    """(record, log) pairs of ``n`` more synthetic videos (indices from 100,000 on), and a frames folder
    holding their frames and links to data/frames. Each record is one answerable query, only so that
    pretrain_vision takes the video; with the event logs its targets come from the log."""
    from pipeline.core.frames_cache import save_frames
    from pipeline.data.frames import extract_video
    from pipeline.data.synthetic import encode, plan_video
    from pipeline.riq.schema import RiqRecord

    frames = root / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    for f in Path("data/frames").glob("*.npz"):
        if not (frames / f.name).exists():
            (frames / f.name).symlink_to(f.resolve())
    out = []
    for i in range(100_000, 100_000 + n):
        plan = plan_video(params.download.synthetic, i)
        log = plan.log
        if not (frames / f"{log.video_id}.npz").exists():
            encode(plan, root / f"{log.video_id}.mp4")
            save_frames(frames / f"{log.video_id}.npz", extract_video(root / f"{log.video_id}.mp4", params.frames))
        o = log.objects[0]
        out.append((RiqRecord.model_validate({
            "id": f"{log.video_id}-extra", "video": log.video_id, "video_path": log.video, "frames_path": f"{log.video_id}.npz",
            "duration": log.duration, "source": "synthetic", "problem": f"the {o.color} {o.shape} is in view",
            "task_type": "answerable", "kind": "answerable", "gt_answers": [{"answer": [0.0, log.duration]}],
            "reference_answer": f"0.00 to {log.duration:.2f}", "contrast_answer": "No relevant segment.",
            "difficulty": "original"}), log))
    return out, str(frames)


def object_reads(model, processor, logs: dict, records, frames_dir: str = "data/frames") -> list[dict]:
    """One row per object in view of each video of ``records``: its shape and size read from the tower's
    video tokens three ways (module docstring), and what the log says they are."""
    tok = processor.tokenizer
    shape_ids = {s: first_id(tok, s) for s in SHAPES}
    size_ids = {s: first_id(tok, s) for s in SIZES}
    embed = model.get_input_embeddings().weight
    vc = model.config.vision_config
    cell, tps = vc.patch_size * vc.spatial_merge_size, vc.temporal_patch_size
    model.eval()
    rows = []
    with torch.no_grad():
        for video, record in sorted({r.video: r for r in records}.items()):
            frames = load_frames(frames_file(record, frames_dir))
            pixels, grid = _video_batch(processor, frames)
            out = model.model.visual(pixels, grid_thw=grid)
            feats = out.pooler_output if hasattr(out, "pooler_output") else out
            t, gh, gw = int(grid[0, 0]), int(grid[0, 1]) // vc.spatial_merge_size, int(grid[0, 2]) // vc.spatial_merge_size
            log = logs[video]
            cmap = colour_map(frames.frames, [o.color for o in log.objects])
            n = cmap.shape[0]
            if t * tps > n:
                cmap = np.concatenate([cmap, np.repeat(cmap[-1:], t * tps - n, 0)])
            cells = cmap[: t * tps, : gh * cell, : gw * cell].reshape(t, tps, gh, cell, gw, cell)
            logits = (feats @ embed.T).view(t, gh * gw, -1)
            for j, o in enumerate(log.objects):
                counts = torch.from_numpy((cells == j).sum((1, 3, 5)).reshape(t, gh * gw).astype(np.float32))
                shown = counts >= MIN_PIXELS
                if not shown.any():
                    continue
                colour = first_id(tok, o.color)
                best = int(logits[..., colour].flatten().argmax())
                at_colour = logits.view(t * gh * gw, -1)[best]
                steps = shown.any(1).nonzero()[:, 0]
                most = logits[steps, counts[steps].argmax(1)].mean(0)
                every = logits[shown].mean(0)
                acts = {e.action for e in log.events if e.object_id == o.id}
                row = {"video": video, "color": o.color, "shape": o.shape, "size": o.size,
                       "spans": "several tokens" if int(shown.sum(1).max()) > 1 else "one token",
                       "resized": bool(acts & {"grows", "shrinks"}), "moves": any(a.startswith("moves") for a in acts),
                       "pixels": float(counts[steps].max(1).values.median())}
                for name, vec in (("at_colour", at_colour), ("most_pixels", most), ("all_tokens", every)):
                    row[f"{name}_shape"] = max(shape_ids, key=lambda s: float(vec[shape_ids[s]]))
                    row[f"{name}_size"] = max(size_ids, key=lambda s: float(vec[size_ids[s]]))
                rows.append(row)
    return rows


def look_from_reads(riq: str, rows: list[dict], read: str) -> dict:
    """The look of ``look_oracle.py`` with the colour check perfect and the shape and size checks
    taken from the tower's ``read`` of the query colour's object, scored on the records of ``riq``
    (on grey frames such a look finds no colour and refuses everything: blind accuracy = refusable share)."""
    from pipeline.core.io import read_jsonl
    from pipeline.riq.schema import RiqRecord
    from pipeline.riq.synthetic import parse_query

    seen = {(r["video"], r["color"]): r for r in rows}
    records = [RiqRecord.model_validate(o) for _, o in read_jsonl(riq)]
    right = answered_ok = answerable = 0
    for rec in records:
        subject = parse_query(" ".join(rec.problem.split())).subject
        obj = seen.get((rec.video, subject.color))
        refuses = obj is None or obj[f"{read}_shape"] != subject.shape or obj[f"{read}_size"] != subject.size
        right += refuses == (rec.task_type == "refusable")
        answerable += rec.task_type == "answerable"
        answered_ok += rec.task_type == "answerable" and not refuses
    blind = 1 - answerable / len(records)
    return {"accuracy": round(right / len(records), 3), "blind_accuracy": round(blind, 3),
            "visual_gain_accuracy": round(right / len(records) - blind, 3),
            "answerable_answered": round(answered_ok / answerable, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--located", action="store_true")
    parser.add_argument("--shift", type=int, default=0)
    parser.add_argument("--all-log-words", action="store_true")
    parser.add_argument("--whole-object", action="store_true", help="model.vision_pretrain.whole_object")
    parser.add_argument("--recolour-objects", action="store_true", help="model.vision_pretrain.recolour_objects")
    parser.add_argument("--clip-frames", type=int, default=0, help="model.vision_pretrain.clip_frames")
    parser.add_argument("--holdout", type=int, default=24)
    parser.add_argument("--steps-x", type=float, default=1.0, help="(diagnostic) multiply --steps")
    parser.add_argument("--extra-videos", type=int, default=0,
                        help="(diagnostic) also pretrain on this many more videos of the synthetic world, from seeds far past "
                             "download.synthetic.n_videos (so never a video of the RIQ splits), rendered and extracted by the "
                             "pipeline's own code into --extra-dir")
    parser.add_argument("--extra-dir", default="/tmp/tower_probe_extra")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--save-tower", default="", help="save the pretrained model's state dict here (torch.save)")
    parser.add_argument("--load-tower", default="", help="skip the pretraining: load this state dict (from --save-tower)")
    parser.add_argument("--look", default="", help="also read every video of this RIQ file (e.g. data/riq/eval/synthetic.jsonl) and "
                        "score a look whose colour check is perfect and whose shape and size checks are the tower's reads")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_params(args.params)
    mp, vp = params.model, params.model.vision_pretrain
    records = read_train_records("data/riq/train.jsonl")
    logs = train_event_logs("data/raw/annotations.jsonl", records)
    torch.manual_seed(mp.tiny.seed)
    model, processor = build_tiny(mp, records, params.frames)
    fit, held = split_holdout(records, args.holdout, mp.tiny.seed)
    frames_dir = "data/frames"
    if args.extra_videos:
        extra, frames_dir = extra_world(params, args.extra_videos, Path(args.extra_dir))
        logs |= {r.video: log for r, log in extra}
        fit = fit + [r for r, _ in extra]
    if args.load_tower:
        model.load_state_dict(torch.load(args.load_tower, weights_only=True))
        summary = {"loaded": args.load_tower}
    else:
        summary = pretrain_vision(model, processor, fit, frames_dir, steps=int(args.steps * args.steps_x),
                                  learning_rate=vp.learning_rate, batch_size=vp.batch_size,
                                  max_video_share=vp.max_video_share, seed=mp.tiny.seed, logs=logs,
                                  every_token=vp.every_token, located=args.located, logs_all_words=args.all_log_words,
                                  shift=args.shift, whole_object=args.whole_object,
                                  recolour_objects=args.recolour_objects, clip_frames=args.clip_frames)
    rows = object_reads(model, processor, logs, held)
    if args.save_tower:
        torch.save(model.state_dict(), args.save_tower)

    def rate(sub, attr, read):
        return round(sum(r[f"{read}_{attr}"] == r[attr] for r in sub) / len(sub), 3) if sub else None

    reads = ("at_colour", "most_pixels", "all_tokens")
    report = {"args": vars(args), "pretrain": summary, "objects": len(rows),
              "all": {f"{rd}_{a}": rate(rows, a, rd) for rd in reads for a in ("shape", "size")}}
    for key in ("shape", "size", "spans", "resized", "moves"):
        groups = defaultdict(list)
        for r in rows:
            groups[str(r[key])].append(r)
        report[f"by_{key}"] = {g: {"n": len(sub), "median_pixels": float(np.median([r["pixels"] for r in sub])),
                                   **{f"{rd}_{a}": rate(sub, a, rd) for rd in reads for a in ("shape", "size")}}
                               for g, sub in sorted(groups.items())}
    confusion = defaultdict(int)
    for r in rows:
        confusion[f"{r['shape']} -> {r['most_pixels_shape']}"] += 1
    report["most_pixels_shape_confusion"] = dict(sorted(confusion.items()))
    if args.look:
        from pipeline.core.events import read_event_logs
        from pipeline.riq.schema import RiqRecord
        from pipeline.core.io import read_jsonl

        looked = [RiqRecord.model_validate(o) for _, o in read_jsonl(args.look)]
        test_rows = object_reads(model, processor, read_event_logs("data/raw/annotations.jsonl"), looked)
        report["look"] = {"file": args.look, "objects": len(test_rows),
                          "reads": {f"{rd}_{a}": rate(test_rows, a, rd) for rd in reads for a in ("shape", "size")},
                          "reads_by_resized": {str(k): {"n": sum(r["resized"] == k for r in test_rows),
                                                        **{f"{rd}_{a}": rate([r for r in test_rows if r["resized"] == k], a, rd)
                                                           for rd in reads for a in ("shape", "size")}}
                                               for k in (False, True)},
                          **{rd: look_from_reads(args.look, test_rows, rd) for rd in reads}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
