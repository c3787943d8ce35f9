"""Can the tiny decoder learn the look at all? Its warm start on an ideal tower (docs/MODEL.md, "What any
decoder could make of the tower").

    python scripts/ideal_tower.py TOWER.pt OUTDIR PHASES_JSON     # TINY='{"num_hidden_layers": 4}' to change the decoder

Every video token's feature is replaced by the sum of the word embeddings of what the synthetic event log
says it shows (``located_targets``: the colour, shape, size and action words of the objects whose pixels it
covers; nothing for a token that covers none), scaled to the mean norm of the real tower's features: a tower
that never errs, in the space the decoder reads the real one in. The rest is the tiny model of params.yaml
with TOWER.pt's weights (a state dict saved by ``tower_probe.py --save-tower``; its word embeddings stay
frozen). PHASES_JSON is a list of ``model.warm_start`` overrides, run in order, e.g.
``'[{"epochs": 15, "look_attributes": ["color", "shape", "size"], "refusable_kinds": ["shuffled", "hard_irrelevant"]}]'``.
Then the greedy held-out check of ``make_model`` and ``look_probe.py`` on the test split, with the same ideal
tower (the tower's own AUCs are then 1.0 by construction). Needs a workspace where ``dvc repro build_riq`` ran.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time

import torch

from pipeline.core.events import read_event_logs
from pipeline.core.frames_cache import frames_file, load_frames
from pipeline.core.io import read_jsonl
from pipeline.core.params import load_params
from pipeline.model.make import build_tiny, frozen, greedy_check, split_holdout, train_event_logs, warm_start, warm_start_records
from pipeline.model.vision_pretrain import _video_batch, colour_map, located_targets, object_words
from pipeline.riq.schema import RiqRecord, read_train_records


def key(pixels: torch.Tensor) -> tuple:
    """A video's processed pixels, as the tower receives them, identify it (the processing is deterministic)."""
    return pixels.shape[0], float(pixels.double().sum()), float(pixels[::97].double().abs().sum())


def ideal_features(model, processor, records, logs: dict) -> tuple[dict, dict]:
    """Per video of ``records`` (by :func:`key`), the ideal tower's merged-token features, and a summary."""
    tok = processor.tokenizer
    embed = model.get_input_embeddings().weight.detach().clone()
    vc = model.config.vision_config
    tps, cell = vc.temporal_patch_size, vc.patch_size * vc.spatial_merge_size
    words_of = {v: object_words(log, tok) for v, log in logs.items()}
    words = sorted({i for d in words_of.values() for spans in d.values() for _, _, ids in spans for i in ids})
    col = {w: j for j, w in enumerate(words)}
    out, norms = {}, []
    for video, r in sorted({r.video: r for r in records}.items()):
        frames = load_frames(frames_file(r, "data/frames"))
        pixels, grid = _video_batch(processor, frames)
        if len(norms) < 20:
            with torch.no_grad():
                norms.append(float(model.model.visual(pixels, grid_thw=grid).pooler_output.norm(dim=-1).mean()))
        cmap = colour_map(frames.frames, [o.color for o in logs[video].objects])
        where = located_targets(cmap, frames.timestamps, words_of[video], col, int(grid[0, 0]), tps, cell)
        out[key(pixels)] = where.reshape(-1, len(words)) @ embed[words]
    every = torch.cat(list(out.values()))
    shown = every.norm(dim=-1) > 0
    scale = sum(norms) / len(norms) / float(every[shown].norm(dim=-1).mean())
    for k in out:
        out[k] = out[k] * scale
    return out, {"videos": len(out), "words": len(words), "scale": round(scale, 3),
                 "empty_token_share": round(1 - float(shown.float().mean()), 3)}


def use_ideal_tower(features: dict) -> None:
    """Every Qwen2.5-VL vision tower from now on returns the ideal features of the videos it is given."""
    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as qwen

    real = qwen.Qwen2_5_VisionTransformerPretrainedModel.forward

    def forward(self, hidden_states, grid_thw=None, **kwargs):
        out = real(self, hidden_states, grid_thw=grid_thw, **kwargs)
        chunks = torch.split(hidden_states, grid_thw.prod(-1).tolist())
        out.pooler_output = torch.cat([features[key(c)] for c in chunks]).to(out.pooler_output.dtype)
        return out

    qwen.Qwen2_5_VisionTransformerPretrainedModel.forward = forward


def main(tower: str, out_dir: str, phases: list[dict]) -> None:
    torch.set_num_threads(1)
    params = load_params("params.yaml")
    mp = params.model
    if tiny := json.loads(os.environ.get("TINY", "{}")):
        mp = mp.model_copy(update={"tiny": mp.tiny.model_copy(update=tiny)})
    records = read_train_records("data/riq/train.jsonl")
    test = [RiqRecord.model_validate(o) for _, o in read_jsonl("data/riq/eval/synthetic.jsonl")]
    logs = train_event_logs("data/raw/annotations.jsonl", records)
    torch.manual_seed(mp.tiny.seed)
    model, processor = build_tiny(mp, records, params.frames)
    model.load_state_dict(torch.load(tower, weights_only=True), strict=not tiny)  # a deeper decoder starts fresh
    features, summary = ideal_features(model, processor, records + test, read_event_logs("data/raw/annotations.jsonl"))
    print(json.dumps(summary), flush=True)
    use_ideal_tower(features)
    fit, held = split_holdout(records, mp.warm_start.holdout_videos, mp.tiny.seed)
    for over in phases:
        ws = mp.warm_start.model_copy(update=over)
        sft = warm_start_records(fit, ws.refusable_kinds, ws.answerable_fraction, mp.tiny.seed)
        start = time.time()
        with frozen(model.model.visual, model.get_input_embeddings()):
            done = warm_start(model, processor, sft, "data/frames", ws, mp.tiny.seed, context=fit, logs=logs)
        print(json.dumps(done | {"seconds": round(time.time() - start), "records": len(sft)}), flush=True)
    sample = random.Random(mp.tiny.seed).sample(held, min(32, len(held)))
    print(json.dumps(greedy_check(model, processor, sample, "data/frames", 128))[:1500], flush=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    sys.path.insert(0, "scripts")
    import look_probe

    print(json.dumps(look_probe.main(out_dir, "data/riq/eval/synthetic.jsonl")), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
