"""Evaluation speed: generation queries/s (grouped by video vs a named baseline) and the
cost of the metrics for 100k predictions.

    python benchmarks/eval_throughput.py                       # models/base if present, else a fresh tiny model
    python benchmarks/eval_throughput.py --model DIR --riq data/riq/eval/synthetic.jsonl --max-items 64
    python benchmarks/eval_throughput.py --videos 4 --max-new-tokens 32 --json out.json

Generation (same records, same model, same batch size, interleaved, min over repeats):

* grouped:   ``pipeline.evaluate.inference.generate`` — queries of a video adjacent, each video
  preprocessed and run through the vision tower once (what `evaluate` runs);
* baseline "ungrouped": the same batches built with ``batch_inputs`` on every query's own
  video (pixel values per query, the vision tower once per query).

Metrics: 100,000 predictions tiled from the records with a pool of completions
(spans, refusals, garbage), timed in two parts: ``item_table`` (parse, rewards, SBERT
similarities — distinct texts are encoded once — and categories) and
``metrics_from_table`` (every block and breakdown), which must stay <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.core.io import write_jsonl  # noqa: E402
from pipeline.core.prompt import format_span  # noqa: E402
from pipeline.evaluate import inference  # noqa: E402
from pipeline.evaluate import metrics as M  # noqa: E402

METRIC_BUDGET_S = 5.0


def synthetic_records(root: Path, n_videos: int) -> list:
    from pipeline.core.params import FramesParams, RiqParams, SyntheticParams
    from pipeline.data.frames import extract_dir
    from pipeline.data.synthetic import render_dataset
    from pipeline.riq.build import build_riq

    syn = SyntheticParams(n_videos=n_videos, min_duration=8.0, max_duration=12.0, seed=11)
    logs, _ = render_dataset(syn, root / "raw", workers=2)
    write_jsonl(root / "raw" / "annotations.jsonl", logs)
    extract_dir(root / "raw" / "videos", root / "frames", FramesParams(), workers=2, progress=False)
    build_riq(RiqParams(test_fraction=0.5, seed=0), root / "raw" / "annotations.jsonl", root / "frames", root / "riq", root / "stats.json")
    return M.read_riq(root / "riq" / "eval" / "synthetic.jsonl") + M.read_riq(root / "riq" / "train.jsonl")


def tiny_model(root: Path, records) -> Path:
    from pipeline.core.params import TinyModelParams
    from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer

    tok = train_tokenizer([r.problem + " " + r.reference_answer for r in records], vocab_size=400)
    build_tiny_model(tok, TinyModelParams(vocab_size=400)).save_pretrained(root / "tiny")
    build_processor(tok).save_pretrained(root / "tiny")
    return root / "tiny"


def time_generation(model_dir: Path, records, batch_size: int, max_new_tokens: int, repeats: int) -> dict:
    from pipeline.model.video_inputs import load_policy

    torch.set_num_threads(1)
    model, processor = load_policy(model_dir)
    best = {"grouped": float("inf"), "ungrouped": float("inf")}
    inference.generate(model, processor, records[:2], batch_size, 4, progress=False)  # warm-up
    for _ in range(repeats):
        for name in best:
            t0 = time.perf_counter()
            inference.generate(model, processor, records, batch_size, max_new_tokens, progress=False, grouped=name == "grouped")
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(records) / secs for name, secs in best.items()}


def completion_pool(records) -> list[str]:
    pool = ["", "I cannot tell.", "<think>x</think><answer>No segment is relevant.</answer><correction>NIL</correction>"]
    for r in records[:200]:
        if r.span:
            s, e = r.span
            pool.append(f"<think>looks</think><answer>{format_span(s, e)}</answer><correction>NIL</correction>")
            pool.append(f"<think>looks</think><answer>{format_span(max(0, s - 1), e + 2)}</answer><correction>NIL</correction>")
        else:
            pool.append(f"<think>no</think><answer>{r.explanation}</answer><correction>{r.correction_target}</correction>")
    return pool


def time_metrics(records, n: int) -> dict:
    pool = completion_pool(records)
    rng = np.random.default_rng(0)
    recs = [records[i % len(records)] for i in range(n)]
    comps = [pool[i] for i in rng.integers(0, len(pool), n)]
    M.item_table(recs[:50], comps[:50])  # load SBERT outside the timing
    t0 = time.perf_counter()
    table = M.item_table(recs, comps)
    t_table = time.perf_counter() - t0
    t0 = time.perf_counter()
    block = M.metrics_from_table(table, {"format": 1.0, "refuse_iou": 1.0, "explain": 1.0, "correction": 1.0})
    t_metrics = time.perf_counter() - t0
    return {"n": n, "distinct_completions": len(pool), "item_table_s": t_table, "metrics_s": t_metrics,
            "n_blocks": 1 + sum(len(block[k]) for k in ("by_difficulty", "by_kind", "by_category"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/base", help="model folder; a fresh tiny model when it does not exist")
    ap.add_argument("--riq", default=None, help="RIQ records with frames_path (default: render --videos synthetic videos)")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--max-items", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-metrics", type=int, default=100_000)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = M.read_riq(args.riq) if args.riq else synthetic_records(root, args.videos)
        records = [r for r in records if r.frames_path and Path(r.frames_path).is_file()][: args.max_items]
        model_dir = Path(args.model)
        model_name = str(model_dir)
        if not (model_dir / "config.json").is_file():
            model_dir, model_name = tiny_model(root, records), "fresh tiny model (pipeline.model.tiny, untrained)"
        n_videos = len({r.video for r in records})
        qps = time_generation(model_dir, records, args.batch_size, args.max_new_tokens, args.repeats)
        met = time_metrics(records, args.n_metrics)

    print(f"model: {model_name}; {len(records)} queries on {n_videos} videos; batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, 1 torch thread, CPU, min of {args.repeats}")
    print(f"  grouped (evaluate)                 {qps['grouped']:7.2f} queries/s")
    print(f"  baseline: ungrouped (per-query video) {qps['ungrouped']:7.2f} queries/s   -> x{qps['grouped'] / qps['ungrouped']:.2f}")
    ok = met["metrics_s"] <= METRIC_BUDGET_S
    print(f"metrics for {met['n']:,} predictions ({met['distinct_completions']} distinct completions): "
          f"item table (parse, rewards, SBERT, categories) {met['item_table_s']:.2f} s; "
          f"all {met['n_blocks']} blocks {met['metrics_s']:.2f} s "
          f"[{'OK' if ok else 'OVER'} <= {METRIC_BUDGET_S:g} s]")
    if args.json:
        Path(args.json).write_text(json.dumps({"queries_per_s": qps, "metrics": met, "model": model_name}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
