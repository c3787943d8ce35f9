"""Queries of the synthetic shapes world, written from its event logs.

For every video: one answerable query per distinct event description (its
span(s) are the events it describes), hard-irrelevant queries made by editing
1/2/3 facts of a true query (hard/medium/easy), and simply-shuffled queries
borrowed from another video of the same split. Every refusable candidate is
checked against the log with :func:`matching_events` and redrawn when some
event matches it. pipeline.riq.build validates the records and splits them. See docs/RIQ.md.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import get_args

from pipeline.core.events import Action, Color, Event, Shape, Size, VideoLog
from pipeline.core.params import RiqParams
from pipeline.core.prompt import NO_SEGMENT, format_span
from pipeline.riq.schema import DIFFICULTY_EDITS, EDIT_CATEGORY

COLORS: tuple[str, ...] = get_args(Color)
SHAPES: tuple[str, ...] = get_args(Shape)
SIZES: tuple[str, ...] = get_args(Size)
ACTIONS: tuple[str, ...] = get_args(Action)
MOVES: tuple[str, ...] = tuple(a for a in ACTIONS if a.startswith("moves "))
STILL_ACTIONS: tuple[str, ...] = tuple(a for a in ACTIONS if a not in MOVES)
RESIZING = ("grows", "shrinks")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ORDINALS = ("zeroth", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
COUNT_EDITS = (2, 3)

# Phrasings shared by both classes: templates, order clauses (riq.order_clause_rate) and the
# edited facts (riq.edits) are drawn alike for answerable and refusable queries, so the
# wording alone does not give the label away (measured: pipeline.riq.audit, docs/RIQ.md).
# {np}: noun phrase, {vf}: finite verb, {vg}: gerund.
TEMPLATES = (
    "{np} {vf}",
    "when {np} {vf}",
    "the moment {np} {vf}",
    "{np} {vg}",
    "find the part where {np} {vf}",
)


# --------------------------------------------------------------------------- query model
@dataclass(frozen=True)
class Description:
    """One object (by its look) doing one action."""

    color: str
    size: str
    shape: str
    action: str


@dataclass(frozen=True)
class Query:
    """A structured query: the text is rendered from it, the log is checked against it."""

    subject: Description
    count: int = 0  # 0: "the ..." (count not stated); n >= 1: "n ..." stated explicitly
    order: tuple[str, Description] | None = None  # ("after" | "before", reference description)
    occurrence: int = 0  # k >= 1: "... for the k-th time" (the same thing happens more than once)
    template: int = 0


def describe(log: VideoLog, event: Event) -> Description:
    obj = log.object(event.object_id)
    return Description(obj.color, obj.size, obj.shape, event.action)


def _possible_sizes(log: VideoLog, object_id: str) -> set[str]:
    # An object that grows or shrinks is both sizes at some point, so a size edit
    # must not count as a mismatch for it.
    obj = log.object(object_id)
    if any(e.object_id == object_id and e.action in RESIZING for e in log.events):
        return set(SIZES)
    return {obj.size}


def _fits(log: VideoLog, d: Description, e: Event) -> bool:
    obj = log.object(e.object_id)
    return (
        e.action == d.action
        and obj.color == d.color
        and obj.shape == d.shape
        and d.size in _possible_sizes(log, e.object_id)
    )


def matching_events(query: Query, log: VideoLog) -> list[Event]:
    """Events of the log that the query could describe (lenient: when in doubt, it matches).

    'after P, Q' holds if some P starts before some other Q ends; 'before P, Q' if
    some Q starts before some other P ends; 'n Qs' needs n distinct objects doing Q.
    """
    found = [e for e in log.events if _fits(log, query.subject, e)]
    if query.order is not None:
        relation, ref = query.order
        refs = [p for p in log.events if _fits(log, ref, p)]
        if relation == "after":
            found = [q for q in found if any(p.id != q.id and p.start < q.end for p in refs)]
        else:
            found = [q for q in found if any(p.id != q.id and q.start < p.end for p in refs)]
    if query.count >= 2 and len({e.object_id for e in found}) < query.count:
        return []
    if query.occurrence:
        found = sorted(found, key=lambda e: (e.start, e.end))
        return found[query.occurrence - 1 : query.occurrence]
    return found


# --------------------------------------------------------------------------- rendering
def _verb(action: str, form: str) -> str:
    verb, *rest = action.split()
    word = {"finite": verb, "plural": verb[:-1], "gerund": verb[:-1].removesuffix("e") + "ing"}[form]
    return " ".join([word, *rest])


def _number(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def _ordinal(k: int) -> str:
    return ORDINALS[k] if k < len(ORDINALS) else f"{k}th"


def _noun_phrase(d: Description, count: int) -> str:
    look = f"{d.size} {d.color} {d.shape}"
    if count == 0:
        return f"the {look}"
    return f"{_number(count)} {look}{'s' if count > 1 else ''}"


def _clause(d: Description, count: int = 0, occurrence: int = 0) -> tuple[str, str, str]:
    """(noun phrase, finite verb, gerund)."""
    plural = count > 1
    when = f" for the {_ordinal(occurrence)} time" if occurrence else ""
    vf, vg = _verb(d.action, "plural" if plural else "finite"), _verb(d.action, "gerund")
    return _noun_phrase(d, count), vf + when, vg + when


def query_text(q: Query) -> str:
    np, vf, vg = _clause(q.subject, q.count, q.occurrence)
    text = TEMPLATES[q.template].format(np=np, vf=vf, vg=vg)
    if q.order is None:
        return text
    relation, ref = q.order
    rnp, rvf, _ = _clause(ref)
    if q.template == 0:
        return f"{relation} {rnp} {rvf}, {text}"
    return f"{text} {relation} {rnp} {rvf}"


def _phrase(q: Query) -> str:
    """Gerund phrase for explanations: 'the small red square moving left after the blue bar appears'."""
    np, _, vg = _clause(q.subject, q.count, q.occurrence)
    text = f"{np} {vg}"
    if q.order is not None:
        relation, ref = q.order
        rnp, rvf, _ = _clause(ref)
        text += f" {relation} {rnp} {rvf}"
    return text


def explanation(truth: Query, asked: Query) -> str:
    return f"{NO_SEGMENT}: the video shows {_phrase(truth)}, not {_phrase(asked)}."


# --------------------------------------------------------------------------- parsing
_LOOK = rf"({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)})"
_NP = re.compile(rf"(the|[a-z0-9]+) {_LOOK}(s?)")
_OCCURRENCE = re.compile(r"(.+) for the ([a-z0-9]+) time")
_ORDER_FIRST = re.compile(rf"(after|before) (the {_LOOK}) (.+?), (.+)")
_ORDER_LAST = re.compile(rf"(.+) (after|before) (the {_LOOK}) (.+)")
_MAIN = [re.compile(p) for p in (r"(.+)", r"when (.+)", r"the moment (.+)", r"(.+)", r"find the part where (.+)")]


def _index(word: str, words: tuple[str, ...], suffix: str = "") -> int | None:
    if word in words:
        return words.index(word)
    digits = word.removesuffix(suffix)
    return int(digits) if digits.isdigit() else None


def _clauses(text: str) -> list[tuple[Description, int, int]]:
    """Every (description, count, occurrence) whose clause could read ``text`` ("np verb"); the round trip picks."""
    out = []
    for m in _NP.finditer(text):
        if m.start() != 0 or text[m.end() : m.end() + 1] != " ":
            continue
        count = 0 if m.group(1) == "the" else _index(m.group(1), NUMBERS)
        if count is None:
            continue
        verb, occurrence = text[m.end() + 1 :], 0
        if (o := _OCCURRENCE.fullmatch(verb)) is not None:
            k = _index(o.group(2), ORDINALS, "th")
            if k is not None:
                verb, occurrence = o.group(1), k
        for action in ACTIONS:
            if verb in {_verb(action, form) for form in ("finite", "plural", "gerund")}:
                out.append((Description(m.group(3), m.group(2), m.group(4), action), count, occurrence))
    return out


def parse_query(text: str) -> Query | None:
    """The :class:`Query` whose :func:`query_text` is exactly ``text``, or None (not a synthetic query).

    Inverse of the rendering: every reading of the text is tried and kept only when
    rendering it gives the text back, so a returned query is never a guess.
    """
    text = text.strip()
    # (main clause, (relation, reference clause) or None, templates that render this layout)
    readings: list[tuple[str, tuple[str, str] | None, range]] = [(text, None, range(len(TEMPLATES)))]
    if (m := _ORDER_FIRST.fullmatch(text)) is not None:
        readings.append((m.group(7), (m.group(1), f"{m.group(2)} {m.group(6)}"), range(1)))
    if (m := _ORDER_LAST.fullmatch(text)) is not None:
        readings.append((m.group(1), (m.group(2), f"{m.group(3)} {m.group(7)}"), range(1, len(TEMPLATES))))
    for main, order_text, templates in readings:
        orders: list[tuple[str, Description] | None] = [None]
        if order_text is not None:
            orders = [(order_text[0], d) for d, count, occ in _clauses(order_text[1]) if count == 0 and occ == 0]
        for order in orders:
            for t in templates:
                if (m := _MAIN[t].fullmatch(main)) is None:
                    continue
                for subject, count, occurrence in _clauses(m.group(1)):
                    q = Query(subject, count, order, occurrence, t)
                    if query_text(q) == text:
                        return q
    return None


def query_matches(text: str, log: VideoLog) -> bool | None:
    """Whether the synthetic query ``text`` describes some event of ``log`` (:func:`matching_events`); None when ``text`` is not one."""
    query = parse_query(text)
    return None if query is None else bool(matching_events(query, log))


# --------------------------------------------------------------------------- edits
def _order_refs(log: VideoLog, event: Event) -> list[tuple[str, Event]]:
    """(relation that is false, reference event): events wholly after or before this one."""
    d = describe(log, event)
    others = [p for p in log.events if p.id != event.id and describe(log, p) != d]
    return [("after", p) for p in others if p.start >= event.end] + [("before", p) for p in others if p.end <= event.start]


def _true_order_refs(log: VideoLog, event: Event) -> list[tuple[str, Event]]:
    """(relation that is true, reference event): the clauses an answerable query may carry."""
    return [("before" if relation == "after" else "after", p) for relation, p in _order_refs(log, event)]


def _applicable_edits(log: VideoLog, event: Event, allowed: tuple[str, ...], clause: bool) -> list[str]:
    # "order" flips the query's own order clause, so only a query that carries one can have it edited.
    edits = [e for e in ("colour", "size", "shape", "action", "count") if e in allowed]
    if event.action in MOVES and "direction" in allowed:
        edits.append("direction")
    if clause and "order" in allowed:
        edits.append("order")
    return edits


def draw_clause(rng: random.Random, log: VideoLog, event: Event, rate: float) -> tuple[str, Description] | None:
    """A true order clause for a query about ``event`` with probability ``rate`` (when one exists).

    Drawn for every answerable query; its hard-irrelevant queries keep the clause (false only
    where "order" is the edit), so the presence of an order clause, and its words, say
    nothing about the label: only whether it holds does.
    """
    refs = _true_order_refs(log, event)
    if not refs or rng.random() >= rate:
        return None
    relation, p = rng.choice(refs)
    return relation, describe(log, p)


def _draw_edits(rng: random.Random, applicable: list[str], k: int) -> list[str] | None:
    pool = list(applicable)
    chosen: list[str] = []
    while len(chosen) < k and pool:
        edit = rng.choice(pool)
        chosen.append(edit)
        pool.remove(edit)
        if edit in ("action", "direction"):  # both rewrite the action: one edit at most
            pool = [e for e in pool if e not in ("action", "direction")]
    return sorted(chosen) if len(chosen) == k else None


def _other(rng: random.Random, values: tuple[str, ...], current: str) -> str:
    return rng.choice([v for v in values if v != current])


def draw_values(rng: random.Random, log: VideoLog, event: Event, edits: list[str]) -> dict[str, object]:
    """The new value of each edited fact."""
    d = describe(log, event)
    values: dict[str, object] = {}
    for edit in edits:
        if edit == "colour":
            values[edit] = _other(rng, COLORS, d.color)
        elif edit == "size":
            values[edit] = _other(rng, SIZES, d.size)
        elif edit == "shape":
            values[edit] = _other(rng, SHAPES, d.shape)
        elif edit == "direction":
            values[edit] = _other(rng, MOVES, d.action)
        elif edit == "action":
            values[edit] = _other(rng, STILL_ACTIONS if d.action in MOVES else ACTIONS, d.action)
        elif edit == "count":
            values[edit] = rng.choice(COUNT_EDITS)
        elif edit == "order":
            # The false relation to a reference event: drawn among the events wholly before or after.
            relation, p = rng.choice(_order_refs(log, event))
            values[edit] = (relation, describe(log, p))
    return values


def compose(log: VideoLog, event: Event, values: dict[str, object], template: int = 0,
            clause: tuple[str, Description] | None = None) -> tuple[Query, Query]:
    """(edited query, the truth phrased with the same slots, for the explanation).

    ``clause``: the query's true order clause (:func:`draw_clause`); kept as it is unless
    "order" is among the edits, which replaces it with a false one.
    """
    d = describe(log, event)
    subject = replace(
        d,
        color=values.get("colour", d.color),
        size=values.get("size", d.size),
        shape=values.get("shape", d.shape),
        action=values.get("direction", values.get("action", d.action)),
    )
    count, truth_count = values.get("count", 0), 0
    if count:
        truth_count = len({e.object_id for e in matching_events(Query(d), log)})
    order = truth_order = values.get("order", clause)
    if "order" in values:
        relation, ref = order
        truth_order = ("before" if relation == "after" else "after", ref)
    return Query(subject, count, order, template=template), Query(d, truth_count, truth_order)


# --------------------------------------------------------------------------- per video
@dataclass
class Draft:
    """A record before ids, contrast answers and validation."""

    query: Query
    problem: str
    kind: str
    difficulty: str | None
    spans: list[tuple[float, float]]
    target: Draft | None = None
    explanation: str | None = None
    edits: tuple[str, ...] = ()
    event_id: str | None = None


def _spans(events: list[Event]) -> list[tuple[float, float]]:
    return sorted({(e.start, e.end) for e in events})


def answerable_drafts(rng: random.Random, log: VideoLog, stats: dict, clause_rate: float = 0.0) -> tuple[list[Draft], dict[str, Draft]]:
    """One query per event whose only match is that event (so its span is the event)."""
    drafts: list[Draft] = []
    by_event: dict[str, Draft] = {}
    for event in log.events:
        clause = draw_clause(rng, log, event, clause_rate)
        q = Query(describe(log, event), order=clause, template=rng.randrange(len(TEMPLATES)))
        found = matching_events(q, log)
        if found != [event]:
            # The same thing happens more than once: name the occurrence.
            ranked = sorted(found, key=lambda e: (e.start, e.end))
            q = replace(q, occurrence=ranked.index(event) + 1)
            stats["records"]["ordinal_answerable"] += 1
        if matching_events(q, log) != [event]:  # e.g. two identical events at the same time
            stats["records"]["unnameable_events"] += 1
            continue
        draft = Draft(q, query_text(q), "answerable", "original", _spans([event]), event_id=event.id)
        drafts.append(draft)
        by_event[event.id] = draft
    return drafts, by_event


def hard_irrelevant_drafts(
    rng: random.Random, log: VideoLog, by_event: dict[str, Draft], params: RiqParams, seen: set[str], stats: dict
) -> list[Draft]:
    drafts = []
    per_event = {"hard": params.hard_per_event, "medium": params.medium_per_event, "easy": params.easy_per_event}
    for event in log.events:
        if event.id not in by_event:
            continue
        for difficulty, n in per_event.items():
            for _ in range(n):
                for _ in range(params.max_redraws):
                    # The refusal keeps its correction target's order clause (or lack of one), so the
                    # correction is the query with the edits undone, and clauses are as common in both classes.
                    clause = by_event[event.id].query.order
                    applicable = _applicable_edits(log, event, tuple(params.edits), clause is not None)
                    edits = _draw_edits(rng, applicable, DIFFICULTY_EDITS[difficulty])
                    if edits is None:  # fewer applicable facts than the difficulty asks for
                        stats["gave_up"][difficulty] += 1
                        break
                    values = draw_values(rng, log, event, edits)
                    asked, truth = compose(log, event, values, rng.randrange(len(TEMPLATES)), clause)
                    text = query_text(asked)
                    # Each edit must be a mismatch on its own, so the explanation names only real ones.
                    if text in seen or any(
                        matching_events(q, log)
                        for q in [asked, *(compose(log, event, {k: v}, clause=clause)[0] for k, v in values.items())]
                    ):
                        stats["rejected"][difficulty] += 1
                        continue
                    seen.add(text)
                    drafts.append(
                        Draft(asked, text, "hard_irrelevant", difficulty, [], by_event[event.id],
                               explanation(truth, asked), tuple(edits), event.id)
                    )
                    break
                else:
                    stats["gave_up"][difficulty] += 1
    return drafts


def shuffled_drafts(
    rng: random.Random, log: VideoLog, answerable: list[Draft], donors: list[list[Draft]], n: int, seen: set[str],
    max_redraws: int, stats: dict,
) -> list[Draft]:
    drafts = []
    pool = [d for drafts_ in donors for d in drafts_]
    if not answerable or not pool:
        return drafts
    for _ in range(n):
        for _ in range(max_redraws):
            donor = rng.choice(pool)
            if donor.problem in seen or matching_events(donor.query, log):
                stats["rejected"]["shuffled"] += 1
                continue
            seen.add(donor.problem)
            target = rng.choice(answerable)
            drafts.append(
                Draft(donor.query, donor.problem, "shuffled", None, [], target, explanation(target.query, donor.query))
            )
            break
        else:
            stats["gave_up"]["shuffled"] += 1
    return drafts


def to_record(vid: str, idx: int, draft: Draft, video_path: str, duration: float, contrast: str, source: str) -> dict:
    refusable = draft.kind != "answerable"
    return {
        "id": f"{vid}-q{idx}",
        "video": vid,
        "video_path": video_path,
        "frames_path": None,
        "duration": duration,
        "problem": draft.problem,
        "task_type": "refusable" if refusable else "answerable",
        "kind": draft.kind,
        "gt_answers": [{"answer": [-1.0, -1.0]}] if refusable else [{"answer": list(s)} for s in draft.spans],
        "refusable_queries": (
            [{"problem": draft.target.problem, "gt_answers": [{"answer": list(s)} for s in draft.target.spans]}]
            if refusable else []
        ),
        "explanation": draft.explanation,
        "reference_answer": draft.explanation if refusable else format_span(*draft.spans[0]),
        "contrast_answer": contrast,
        "categories": sorted({EDIT_CATEGORY[e] for e in draft.edits}),
        "difficulty": draft.difficulty,
        "edits": list(draft.edits),
        "source": source,
    }


def contrast_answer(draft: Draft, refusable: list[Draft]) -> str:
    if draft.kind != "answerable":
        return format_span(*draft.target.spans[0])
    # Prefer the refusal that corrects back to this very query: the closest wrong answer.
    own = [r for r in refusable if r.target is draft]
    pick = (own or refusable or [None])[0]
    return pick.explanation if pick else f"{NO_SEGMENT}: the video does not show this."
