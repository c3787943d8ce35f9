"""Generated vs released hard-irrelevant queries on the HI-VTG sample (numbers in docs/IMPORT.md).

    python -m benchmarks.import_quality [/path/to/hi_vtg_charades.json] [--limit N] [--out report.json]

For every item, ``perturb`` writes a query with the same number of edits as the released
one; both are compared by SBERT similarity to the true query (per difficulty), by category
distribution, and by the share our near-match check would reject. Skips (exit 0) when
the shared sample is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from pipeline.core.io import write_json
from pipeline.core.sbert import similarity
from pipeline.riq.generators import Vocabulary, generate_refusables, lexical_match
from pipeline.riq.importers import import_annotations

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/hi-vtg/hi_vtg_charades.json"


def _summary(values: list[float]) -> dict:
    return {"n": len(values), "mean": round(statistics.fmean(values), 4), "median": round(statistics.median(values), 4)} if values else {"n": 0}


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(DEFAULT))
    parser.add_argument("--limit", type=int, default=0, help="first N answerable records only (0 = all)")
    parser.add_argument("--max-similarity", type=float, default=0.9)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not Path(args.file).is_file():
        print(f"skip: {args.file} not found")
        return None
    t0 = time.perf_counter()
    result = import_annotations("hi-vtg", args.file)
    answerable = [r for r in result.records if r["task_type"] == "answerable"]
    released = {(r["video"], r["refusable_queries"][0]["problem"]): r for r in result.records if r["kind"] == "hard_irrelevant"}
    pairs = [(a, released[(a["video"], a["problem"])]) for a in answerable if (a["video"], a["problem"]) in released]
    if args.limit:
        pairs = pairs[: args.limit]
    vocab = Vocabulary.from_texts([c for cs in result.captions.values() for c in cs])
    ours, stats = [], Counter()
    for diff in ("hard", "medium", "easy"):
        group = [a for a, r in pairs if r["difficulty"] == diff]
        gen = generate_refusables(group, result.captions, {"perturb": 1.0}, difficulty_weights={diff: 1.0},
                                  max_similarity=args.max_similarity, vocab=vocab)
        ours += gen.records
        for k, v in gen.stats.items():
            stats[k] += sum(v.values())
    # Released queries under the same near-match check (captions of the video other than the true query).
    rel = [r for _, r in pairs]
    cap_pairs = [(r["problem"], c) for r in rel for c in result.captions[r["video"]] if c != r["refusable_queries"][0]["problem"]]
    cap_sims = similarity([a for a, _ in cap_pairs], [b for _, b in cap_pairs])
    best: dict[str, float] = {}
    for (a, _), s in zip(cap_pairs, cap_sims):
        best[a] = max(best.get(a, 0.0), s)
    rel_lex = sum(lexical_match(r["problem"], [c for c in result.captions[r["video"]] if c != r["refusable_queries"][0]["problem"]]) for r in rel)
    rel_close = sum(best.get(r["problem"], 0.0) >= args.max_similarity for r in rel)

    def to_true(rows):
        sims = similarity([r["problem"] for r in rows], [r["refusable_queries"][0]["problem"] for r in rows])
        out = {}
        for d in ("hard", "medium", "easy"):
            out[d] = _summary([s for r, s in zip(rows, sims) if r["difficulty"] == d])
        return out

    report = {
        "file": args.file, "items_compared": len(pairs), "max_similarity": args.max_similarity,
        "similarity_to_true_query": {"released": to_true(rel), "ours": to_true(ours)},
        "categories": {
            "released": dict(Counter(c for r in rel for c in r["categories"]).most_common()),
            "ours": dict(Counter(c for r in ours for c in r["categories"]).most_common()),
        },
        "ours_generated": len(ours), "ours_stats": dict(stats),
        "ours_candidates_rejected_share": round((stats["rejected_lexical"] + stats["rejected_similar"]) / max(1, stats["rejected_lexical"] + stats["rejected_similar"] + stats["generated"]), 4),
        "ours_gave_up_share": round(stats["gave_up"] / max(1, len(pairs)), 4),
        "released_rejected_by_our_check": {"lexical": rel_lex, "too_similar": rel_close, "share": round((rel_lex + rel_close) / max(1, len(rel)), 4)},
        "seconds": round(time.perf_counter() - t0, 1),
        "examples": [{"true": r["refusable_queries"][0]["problem"], "ours": r["problem"], "difficulty": r["difficulty"], "edits": r["edits"]} for r in ours[:8]],
    }
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    sys.exit(main() and 0)
