"""The per-set table of a build (riq_stats.json): what each annotation file gave, and its overlap with the train RIQ.

``rarft riq-table data/reports/riq_stats.json`` prints it as Markdown; docs/DATA.md holds the
table of the real files (benchmarks/real_sets.py).
"""

from __future__ import annotations


def _reasons(st: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(st.get("quarantined_by_reason", {}).items()) if v) or "-"


def sets_table(stats: dict) -> str:
    """One row per train set and per evaluation set: items, queries, generated, written, quarantined
    (by reason), videos (written / in the file), and the videos and queries shared with the train RIQ."""
    head = ("| set | role | format | items | queries | generated | written | quarantined (by reason) | videos written / in file | overlap with train RIQ |\n"
            "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |\n")
    rows = []
    for name, st in stats.get("source", {}).get("train_sets", {}).items():
        rows.append(f"| {name} | train | {st['format']} | {st['items']:,} | {st['queries']:,} | {st['generated']:,} | {st['written']:,} | "
                    f"{st['quarantined']:,} ({_reasons(st)}) | {st['videos']:,} / {st['videos_in_file']:,} | - |")
    for name, st in stats.get("sets", {}).items():
        leak = st.get("leakage", {})
        overlap = f"{leak.get('videos', 0):,} videos, {leak.get('queries', 0):,} queries"
        if leak.get("videos"):
            overlap += f" ({leak['policy']}: {leak.get('excluded_train_videos', 0):,} train videos, {leak.get('excluded_train_records', 0):,} train records dropped)" \
                if leak["policy"] == "exclude_from_train" else f" ({leak['policy']})"
        if st.get("present") is False:
            rows.append(f"| {name} | eval | {st['format']} | file absent | | | | | | |")
            continue
        if st["format"] == "split":
            rows.append(f"| {name} | eval | split | - | - | - | {st['written']:,} | - | {st['videos']:,} | {overlap} |")
            continue
        rows.append(f"| {name} | eval | {st['format']} | {st['items']:,} | {st['queries']:,} | - | {st['written']:,} | "
                    f"{st['quarantined']:,} ({_reasons(st)}) | {st['videos']:,} / {st['videos_in_file']:,} | {overlap} |")
    return head + "\n".join(rows) + "\n"
