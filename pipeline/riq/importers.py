"""Importers of public video-grounding annotation sets into RIQ records.

Formats (``IMPORTERS``): ``seed`` (the RIQ record of the seed README, which
``rarft export --format seed`` writes back), ``hi-vtg`` (the RA-RFT release: HI-VTG,
SS-VTG and the human-annotated set), ``charades-sta``, ``activitynet-captions`` and
``qvhighlights``. Every record goes through :class:`pipeline.riq.schema.RiqRecord`;
whatever cannot become a valid record lands in the quarantine with its reason, so
``written + quarantined == queries_read``. Quirks of the released files are fixed
where the fix is unambiguous and counted in the report (docs/IMPORT.md).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.frames_cache import frames_path, load_frames
from pipeline.core.io import InputError, read_jsonl
from pipeline.core.prompt import NO_SEGMENT, format_span, parse_span
from pipeline.riq.schema import CATEGORIES, is_safe_id
from pipeline.riq.validate import frames_error, record_errors

QUARANTINE_REASONS = (
    "bad_item", "no_duration", "span_outside_video", "answerable_without_span", "duplicate", "invalid_record", "no_frames",
)
# Category labels, matched case-insensitively on the full label or on its part after '/'.
_LABELS = {c.casefold(): c for c in CATEGORIES} | {c.split("/")[1].casefold(): c for c in CATEGORIES}
_TAG = re.compile(r"</?(?:answer|correction|correct|think)>", re.IGNORECASE)
_CORRECT = re.compile(r"<(correction|correct)>(.*?)(?:</(?:correction|correct)>|$)", re.IGNORECASE | re.DOTALL)
_CAPTION = re.compile(r"<timestep>\s*([^<]*?)\s*</timestep>\s*([^<\n]+)")


# --------------------------------------------------------------------------- shared
@dataclass
class Draft:
    """One query of one item, before validation: what every importer produces."""

    id: str
    video: str
    video_path: str
    duration: float | None
    problem: str
    span: tuple[float, float] | None  # answerable; None for refusable
    refusable: bool = False
    kind: str = "answerable"
    target: tuple[str, tuple[float, float]] | None = None  # correction target of a refusable query
    explanation: str | None = None
    categories: list[str] = field(default_factory=list)
    difficulty: str | None = None
    item: int = 0
    reject: tuple[str, str] | None = None  # (reason key, message) decided while parsing
    raw: object = None  # the input item, kept in the quarantine when it could not be parsed
    # The seed format: every span of an answerable query, every alternative of a refusal (first = span / target).
    spans: list[tuple[float, float]] | None = None
    alternatives: list[tuple[str, list[tuple[float, float]]]] | None = None


@dataclass
class ImportResult:
    records: list[dict]
    quarantine: list[dict]
    report: dict
    captions: dict[str, list[str]]  # video -> every caption known for it (for the generators)
    # video -> normalized texts of every query read for it, written or quarantined (the leakage guard compares files, not frames)
    queries_by_video: dict[str, set[str]] = field(default_factory=dict)


def video_id(path: str) -> str:
    """The id of a video given as a path from another machine: its file stem."""
    name = re.split(r"[\\/]", str(path).strip())[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def norm(text: str) -> str:
    """Casefolded words only: 'Person runs.' == 'person runs'."""
    return " ".join(re.findall(r"\w+(?:'\w+)?", text.casefold()))


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _span(value) -> tuple[float, float] | None:
    try:
        s, e = (float(x) for x in value)
    except (TypeError, ValueError):
        return None
    return (s, e)


# --------------------------------------------------------------------------- hi-vtg
def answer_text(a: str | None) -> str:
    """The text inside <answer>, tolerating a missing closing tag or a trailing <correct>."""
    if not a:
        return ""
    text = re.split(r"<(?:correction|correct)>|</(?:correction|correct)>", a, maxsplit=1, flags=re.IGNORECASE)[0]
    return " ".join(_TAG.sub(" ", text).split())


def correction_text(a: str | None) -> str | None:
    m = _CORRECT.search(a or "")
    return " ".join(_TAG.sub(" ", m.group(2)).split()) or None if m else None


def strip_appended_query(explanation: str, queries: Iterable[str]) -> tuple[str, bool]:
    """Drop a copy of a query that some released refusals carry at their end."""
    for q in sorted({q for q in queries if q and q.strip()}, key=len, reverse=True):
        q = q.strip()
        for tail in (q, q.rstrip(".")):
            if len(explanation) > len(tail) and explanation.casefold().endswith(tail.casefold()):
                return explanation[: -len(tail)].rstrip(" :-\u2014\"'").rstrip(), True
    return explanation, False


def map_categories(labels, quirks: Counter) -> list[str]:
    out = []
    for label in labels or []:
        key = str(label).strip().casefold()
        c = _LABELS.get(key) or _LABELS.get(key.rsplit("/", 1)[-1])
        if c is None:
            quirks[f"unknown_category:{label}"] += 1
        elif c not in out:
            if c != label:
                quirks["renamed_category"] += 1
            out.append(c)
    return sorted(out)


def think_captions(think: str | None) -> list[str]:
    """Captions of the video listed in a released <think> timeline."""
    return [c.strip() for _, c in _CAPTION.findall(think or "") if c.strip()]


def is_ss_vtg(path: Path) -> bool:
    """An SS-VTG file of the release (``ss_vtg_*``, ``ss-vtg*``): every refusal in it is simply shuffled."""
    return path.name.casefold().replace("-", "_").startswith("ss_vtg")


def hi_vtg_drafts(path: Path, quirks: Counter, captions: dict[str, list[str]]) -> tuple[int, list[Draft]]:
    """Drafts of the RA-RFT annotation format (a JSON list of items with a GRPO list)."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of items")
    drafts: list[Draft] = []
    ss_set = is_ss_vtg(path)
    for n, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("video"), str) or not isinstance(item.get("query_text"), str):
            drafts.append(Draft(f"item{n}", "", "", None, "", None, item=n, raw=item, reject=("bad_item", f"{path}: record item{n}: video/query_text: missing")))
            continue
        vid, truth = video_id(item["video"]), item["query_text"].strip()
        span = _span(item.get("timestamp"))
        duration = item.get("duration")
        base = dict(video=vid, video_path=item["video"], duration=float(duration) if duration else None, item=n)
        captions[vid].extend([truth, *think_captions(item.get("think"))])
        grpo = item.get("GRPO")
        if not isinstance(grpo, list) or not grpo:
            # An item without a GRPO list is still one answerable query.
            quirks["item_without_grpo"] += 1
            grpo = [{"q": truth, "r": True}]
        item_drafts: list[Draft] = []
        for j, g in enumerate(grpo):
            rid = f"{vid}-i{n}-q{j}"
            if not isinstance(g, dict) or not isinstance(g.get("q"), str) or not isinstance(g.get("r"), bool):
                item_drafts.append(Draft(rid, **base, problem="", span=None, raw=g, reject=("bad_item", f"{path}: record {rid}: GRPO[{j}]: needs q (text) and r (true/false)")))
                continue
            q, origin = g["q"].strip(), (g.get("q_origin") or "").strip()
            # Some queries were cut at an apostrophe ("as they" for "as they're leaving."); q_origin keeps the whole text.
            if origin and origin != q and origin.startswith(q) and origin[len(q): len(q) + 1] in ("'", "\u2019"):
                q = origin
                quirks["repaired_truncated_query"] += 1
            if g["r"]:
                if not answer_text(g.get("a")):
                    quirks["empty_answer_text"] += 1
                if norm(q) == norm(truth) and span is not None:
                    own = span
                else:
                    # The item's timestamp is the span of query_text only: another answerable query
                    # keeps a span only when its own answer states one.
                    own = parse_span(answer_text(g.get("a")))
                    quirks["answerable_other_than_query_text"] += 1
                if own is None:
                    item_drafts.append(Draft(rid, **base, problem=q, span=None, reject=("answerable_without_span", f"{path}: record {rid}: timestamp: answerable query differs from query_text and its answer states no span")))
                    continue
                item_drafts.append(Draft(rid, **base, problem=q, span=own))
                continue
            explanation = answer_text(g.get("a"))
            explanation, stripped = strip_appended_query(explanation, [truth, q, origin])
            if stripped:
                quirks["stripped_appended_query"] += 1
            if not explanation:
                quirks["empty_explanation"] += 1
                explanation = f'{NO_SEGMENT}: the video shows "{truth}", not "{q}".'
            corr = correction_text(g.get("a"))
            if corr and norm(corr) != norm(truth):
                quirks["correction_differs_from_query_text"] += 1
            if g.get("a") and "<correct>" in g["a"]:
                quirks["correct_tag_instead_of_correction"] += 1
            categories = map_categories(g.get("c"), quirks)
            difficulty = g.get("difficulty") if g.get("difficulty") in ("hard", "medium", "easy") else None
            if difficulty is None and item.get("difficulty") in ("hard", "medium", "easy"):
                difficulty = item["difficulty"]
            # Shuffled (SS-VTG): the file is an ss_vtg_* set, the entry says so, or it lists no categories.
            # Not by difficulty: SS-VTG entries carry difficulty "easy" (and SS-QVHighlights class "id").
            shuffled = ss_set or "shuffl" in str(g.get("class", "")).casefold() or not g.get("c")
            item_drafts.append(Draft(
                rid, **base, problem=q, span=None, refusable=True, kind="shuffled" if shuffled else "hard_irrelevant",
                # Without the item's span (SS-VTG's all-refusable items, `timestamp: []`) there is no correction
                # target: the refusal is still evaluable and is written for evaluation only.
                target=(truth, span) if span else None, explanation=explanation, categories=[] if shuffled else categories,
                difficulty=None if shuffled else difficulty,
            ))
        if sum(d.span is not None for d in item_drafts) > 1:
            quirks["items_with_two_answerable"] += 1
        drafts.extend(item_drafts)
    return len(data), drafts


# --------------------------------------------------------------------------- seed
def _seed_spans(value) -> list[tuple[float, float]] | None:
    """``[{answer: [s, e]}, ...]`` as spans; None when it is not that shape or empty."""
    if not isinstance(value, list) or not value:
        return None
    spans = [_span(a.get("answer")) if isinstance(a, dict) else None for a in value]
    return None if None in spans else spans


def seed_drafts(path: Path, quirks: Counter, captions: dict[str, list[str]]) -> tuple[int, list[Draft]]:
    """The seed README's RIQ records (a JSON list or JSON Lines): ``{video, video_path, duration,
    problem, task_type, gt_answers: [{answer: [s, e]}], refusable_queries?: [{problem, gt_answers}]}``.

    What our schema adds is derived (docs/IMPORT.md): id ``<video>-s<index>``; kind ``answerable``,
    or for a refusal ``shuffled`` in an SS-VTG file (``ss_vtg_*``) and ``hard_irrelevant`` otherwise
    (the format has no categories); the explanation is built from the queries, as for an empty
    HI-VTG answer.
    """
    rows = [obj for _, obj in read_jsonl(path)] if path.suffix == ".jsonl" else _load_json(path)
    if not isinstance(rows, list):
        raise InputError(f"{path}: expected a JSON list of records (or JSON Lines)")
    ss_set = is_ss_vtg(path)
    drafts: list[Draft] = []
    for n, obj in enumerate(rows):
        ok = isinstance(obj, dict) and isinstance(obj.get("video"), str) and isinstance(obj.get("problem"), str)
        vid = video_id(obj["video"]) if ok else ""
        rid = f"{vid}-s{n}" if ok else f"record{n}"

        def bad(msg: str, _rid=rid, _n=n, _obj=obj) -> Draft:
            return Draft(_rid, "", "", None, "", None, item=_n, raw=_obj, reject=("bad_item", f"{path}: record {_rid}: {msg}"))

        if not ok:
            drafts.append(bad("video/problem: missing"))
            continue
        task = obj.get("task_type")
        if task not in ("answerable", "refusable"):
            drafts.append(bad(f"task_type: must be 'answerable' or 'refusable' (got {task!r})"))
            continue
        duration = obj.get("duration")
        try:
            duration = float(duration) if duration else None
        except (TypeError, ValueError):
            drafts.append(bad(f"duration: not a number (got {duration!r})"))
            continue
        base = dict(video=vid, video_path=str(obj.get("video_path") or obj["video"]), duration=duration, item=n)
        q = obj["problem"].strip()
        spans = _seed_spans(obj.get("gt_answers"))
        if task == "answerable":
            if spans is None:
                drafts.append(bad("gt_answers: expected [{answer: [start, end]}, ...]"))
                continue
            captions[vid].append(q)
            drafts.append(Draft(rid, **base, problem=q, span=spans[0], spans=spans))
            continue
        if spans is None or any(s != (-1.0, -1.0) for s in spans):
            drafts.append(bad("gt_answers: a refusable record's span must be [-1, -1]"))
            continue
        alts = obj.get("refusable_queries") or []
        parsed = [(a["problem"].strip(), _seed_spans(a.get("gt_answers"))) if isinstance(a, dict) and isinstance(a.get("problem"), str) else None
                  for a in alts] if isinstance(alts, list) else [None]
        if None in parsed or any(s is None for _, s in parsed):
            drafts.append(bad("refusable_queries: expected [{problem, gt_answers: [{answer: [start, end]}]}, ...]"))
            continue
        captions[vid].extend(p for p, _ in parsed)
        target = (parsed[0][0], parsed[0][1][0]) if parsed else None
        explanation = (f'{NO_SEGMENT}: the video shows "{target[0]}", not "{q}".' if target else f"{NO_SEGMENT}: the video does not show this.")
        drafts.append(Draft(rid, **base, problem=q, span=None, refusable=True, kind="shuffled" if ss_set else "hard_irrelevant",
                            target=target, explanation=explanation, alternatives=parsed))
    return len(rows), drafts


# --------------------------------------------------------------------------- answerable-only sets
def charades_sta_drafts(path: Path, quirks: Counter, captions: dict[str, list[str]]) -> tuple[int, list[Draft]]:
    """Charades-STA lines: ``VID START END##sentence`` (the TALL release), or the same annotations in the
    ``{vid: {duration, timestamps, sentences}}`` JSON layout that TimeZero and others redistribute
    (read as :func:`activitynet_drafts`; that layout also gives each video's duration)."""
    if path.suffix.casefold() == ".json":
        quirks["json_layout"] += 1
        return activitynet_drafts(path, quirks, captions)
    drafts, n_items = [], 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            n_items += 1
            head, sep, sentence = line.strip().partition("##")
            parts = head.split()
            if not sep or len(parts) != 3 or _span(parts[1:]) is None or not sentence.strip():
                drafts.append(Draft(f"line{lineno}", "", "", None, "", None, item=lineno, raw=line.rstrip("\n"), reject=("bad_item", f"{path}:{lineno}: record line{lineno}: expected 'VID START END##sentence'")))
                continue
            vid = parts[0]
            captions[vid].append(sentence.strip())
            drafts.append(Draft(f"{vid}-l{lineno}", vid, vid, None, sentence.strip(), _span(parts[1:]), item=lineno))
    return n_items, drafts


def activitynet_drafts(path: Path, quirks: Counter, captions: dict[str, list[str]]) -> tuple[int, list[Draft]]:
    """ActivityNet Captions: ``{vid: {duration, timestamps: [[s, e], ...], sentences: [...]}}``."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object keyed by video id")
    drafts = []
    for n, (vid, item) in enumerate(data.items()):
        stamps = item.get("timestamps") if isinstance(item, dict) else None
        sentences = item.get("sentences") if isinstance(item, dict) else None
        if not isinstance(stamps, list) or not isinstance(sentences, list) or len(stamps) != len(sentences):
            drafts.append(Draft(f"{vid}", "", "", None, "", None, item=n, raw={vid: item}, reject=("bad_item", f"{path}: record {vid}: timestamps/sentences: missing or of different lengths")))
            continue
        duration = item.get("duration")
        captions[vid].extend(s.strip() for s in sentences if isinstance(s, str))
        for k, (stamp, sentence) in enumerate(zip(stamps, sentences)):
            drafts.append(Draft(f"{vid}-s{k}", vid, vid, float(duration) if duration else None, str(sentence).strip(), _span(stamp), item=n,
                                reject=None if _span(stamp) else ("bad_item", f"{path}: record {vid}-s{k}: timestamps: not [start, end]")))
    return len(data), drafts


def qvhighlights_drafts(path: Path, quirks: Counter, captions: dict[str, list[str]]) -> tuple[int, list[Draft]]:
    """QVHighlights JSONL: ``{qid, query, vid, duration, relevant_windows: [[s, e], ...]}``; one record per query, span = its first window."""
    drafts, n_items = [], 0
    for lineno, obj in read_jsonl(path):
        n_items += 1
        qid, vid, query, windows = obj.get("qid", f"line{lineno}"), obj.get("vid"), obj.get("query"), obj.get("relevant_windows")
        rid = f"{vid}-qid{qid}"
        if not isinstance(vid, str) or not isinstance(query, str) or not windows or _span(windows[0]) is None:
            drafts.append(Draft(rid, "", "", None, "", None, item=lineno, raw=obj, reject=("bad_item", f"{path}:{lineno}: record {rid}: vid/query/relevant_windows: missing")))
            continue
        if len(windows) > 1:
            quirks["multi_window_queries"] += 1
        captions[vid].append(query.strip())
        duration = obj.get("duration")
        drafts.append(Draft(rid, vid, vid, float(duration) if duration else None, query.strip(), _span(windows[0]), item=lineno))
    return n_items, drafts


IMPORTERS: dict[str, Callable[[Path, Counter, dict], tuple[int, list[Draft]]]] = {
    "seed": seed_drafts,
    "hi-vtg": hi_vtg_drafts,
    "charades-sta": charades_sta_drafts,
    "activitynet-captions": activitynet_drafts,
    "qvhighlights": qvhighlights_drafts,
}


# --------------------------------------------------------------------------- drafts -> records
def frames_duration(vid: str, frames_dir: str | Path | None) -> float | None:
    if frames_dir is None or not is_safe_id(vid) or not frames_path(frames_dir, vid).is_file():
        return None
    return float(load_frames(frames_path(frames_dir, vid)).meta["duration"])


def _clip(span: tuple[float, float], duration: float, quirks: Counter) -> tuple[float, float] | None:
    s, e = span
    if s >= duration or s < 0 or e <= s:
        return None
    if e > duration:
        # Charades-STA ends run past the video for ~15% of queries (by ~1 s, median): the video ends the moment.
        quirks["clipped_span_end"] += 1
        e = duration
    return (round(s, 3), round(e, 3))


def _alternatives(d: Draft, clipped: list) -> list[dict]:
    """refusable_queries of a refusal: its target, or (seed) every alternative, with the clipped spans in order."""
    if d.alternatives is None:
        return [{"problem": d.target[0], "gt_answers": [{"answer": list(clipped[0])}]}]
    out, k = [], 0
    for problem, spans in d.alternatives:
        out.append({"problem": problem, "gt_answers": [{"answer": list(c)} for c in clipped[k: k + len(spans)]]})
        k += len(spans)
    return out


def import_annotations(fmt: str, path: str | Path, frames_dir: str | Path | None = None, source: str | None = None) -> ImportResult:
    """Read one annotation file into validated RIQ record dicts and quarantine entries."""
    if fmt not in IMPORTERS:
        raise InputError(f"{path}: unknown format {fmt!r} (known: {', '.join(IMPORTERS)})")
    path, source = Path(path), source or fmt
    if not path.is_file():
        raise InputError(f"{path}: not found")
    quirks: Counter = Counter()
    captions: dict[str, list[str]] = defaultdict(list)
    n_items, drafts = IMPORTERS[fmt](path, quirks, captions)
    durations: dict[str, float | None] = {}
    records, quarantine = [], []
    by_reason: Counter = Counter(dict.fromkeys(QUARANTINE_REASONS, 0))
    seen: dict[tuple, str] = {}

    def reject(d: Draft, key: str, reason: str, record=None) -> None:
        by_reason[key] += 1
        if record is None:
            record = d.raw if d.raw is not None else {"video": d.video, "video_path": d.video_path, "problem": d.problem, "item": d.item}
        quarantine.append({"id": d.id, "reason": reason, "record": record})

    # Answerable first within each item, so a refusable record can point at its item's explanation.
    by_item: dict[int, list[Draft]] = defaultdict(list)
    for d in drafts:
        by_item[d.item].append(d)
    for item_drafts in by_item.values():
        refusals = [d for d in item_drafts if d.refusable and d.reject is None]
        for d in item_drafts:
            if d.reject:
                reject(d, *d.reject)
                continue
            if d.duration is None:
                if d.video not in durations:
                    durations[d.video] = frames_duration(d.video, frames_dir)
                d.duration = durations[d.video]
                if d.duration is None:
                    reject(d, "no_duration", f"{path}: record {d.id}: duration: missing in the file and no frames file for video {d.video}")
                    continue
                quirks["duration_from_frames"] += 1
            key = (d.video, norm(d.problem), d.refusable)
            if key in seen:
                reject(d, "duplicate", f"{path}: record {d.id}: problem: duplicate of {seen[key]} (same video, same query)")
                continue
            eval_only = d.refusable and d.target is None
            if d.alternatives is not None:  # seed: every span of every alternative
                spans = [s for _, ss in d.alternatives for s in ss]
            elif eval_only:
                spans = []
            else:
                spans = d.spans or [d.target[1] if d.refusable else d.span]
            clipped = [_clip(s, d.duration, quirks) for s in spans]
            if None in clipped:
                bad_span = spans[clipped.index(None)]
                reject(d, "span_outside_video", f"{path}: record {d.id}: timestamp: span {list(bad_span)} not inside the video (duration {d.duration})")
                continue
            if eval_only:
                contrast = ""  # filled below with an answerable span of the same video, when the file has one
            elif d.refusable:
                contrast = format_span(*clipped[0])
            else:
                own = [r for r in refusals if r.target and norm(r.target[0]) == norm(d.problem)]
                contrast = (own or refusals)[0].explanation if (own or refusals) else f"{NO_SEGMENT}: the video does not show this."
            record = {
                "id": d.id, "video": d.video, "video_path": d.video_path, "frames_path": None, "duration": d.duration,
                "problem": d.problem, "task_type": "refusable" if d.refusable else "answerable", "kind": d.kind,
                "gt_answers": [{"answer": [-1.0, -1.0]}] if d.refusable else [{"answer": list(c)} for c in clipped],
                "refusable_queries": _alternatives(d, clipped) if d.refusable and not eval_only else [],
                "explanation": d.explanation if d.refusable else None,
                "reference_answer": d.explanation if d.refusable else format_span(*clipped[0]),
                "contrast_answer": contrast, "categories": d.categories,
                "difficulty": d.difficulty if d.refusable else "original", "edits": [], "source": source,
            }
            errors = record_errors(record)
            if errors:
                reject(d, "invalid_record", f"{path}: record {d.id}: {errors[0]}", record)
                continue
            if frames_dir is not None:
                missing = frames_error(d.video, frames_dir)
                if missing:
                    reject(d, "no_frames", missing, record)
                    continue
                record["frames_path"] = str(frames_path(frames_dir, d.video))
            seen[key] = d.id
            records.append(record)
    assert len(records) + len(quarantine) == len(drafts), "every query must be written or quarantined"
    if fmt == "seed":
        # A seed record is one query: an answerable query's contrast is the refusal of the same video that
        # corrects to it (another record), when the file has one.
        corrects_to = {}
        for r in records:
            if r["refusable_queries"]:
                corrects_to.setdefault((r["video"], norm(r["refusable_queries"][0]["problem"])), r["explanation"])
        for r in records:
            if r["task_type"] == "answerable":
                r["contrast_answer"] = corrects_to.get((r["video"], norm(r["problem"])), r["contrast_answer"])
    # An evaluation-only refusal's contrast (the other class's answer on the same video) is the first
    # answerable span written for that video; empty when the file has none.
    first_span = {}
    for r in records:
        if r["task_type"] == "answerable":
            first_span.setdefault(r["video"], r["reference_answer"])
    for r in records:
        if r["task_type"] == "refusable" and not r["refusable_queries"]:
            r["contrast_answer"] = first_span.get(r["video"], "")
    report = {
        "format": fmt, "file": str(path), "items_read": n_items, "queries_read": len(drafts), "written": len(records),
        "quarantined": len(quarantine), "quarantined_by_reason": dict(by_reason),
        "evaluation_only": sum(r["task_type"] == "refusable" and not r["refusable_queries"] for r in records),
        "items_fully_written": len({d.item for d in drafts} - {d.item for d in drafts if d.id in {q["id"] for q in quarantine}}),
        "task_type": dict(Counter(r["task_type"] for r in records)),
        "quirks": dict(sorted(quirks.items())),
    }
    queries_by_video: dict[str, set[str]] = defaultdict(set)
    for d in drafts:
        if d.video:
            queries_by_video[d.video].add(norm(d.problem))
    return ImportResult(records, quarantine, report, {k: list(dict.fromkeys(v)) for k, v in captions.items()}, dict(queries_by_video))
