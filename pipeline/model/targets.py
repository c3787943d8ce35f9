"""What the tiny model is taught to write: the warm-start completions and the tokenizer's text.

Shared by the warm start (pipeline.model.make) and the optional text pretraining
(pipeline.model.text_pretrain), so neither imports the other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipeline.core.prompt import INSTRUCTION, NIL, format_span
from pipeline.riq.schema import RiqRecord

# "... the video shows <truth phrase>, not <asked phrase>." (pipeline.riq.build.explanation)
_SHOWS = re.compile(r"the video shows (?P<seen>.+), not (?P<asked>.+)\.$")


def verify_phrases(records: Sequence[RiqRecord]) -> dict[str, tuple[str, str]]:
    """record id -> (asked, seen): the event the query asks for and the nearest one the video shows,
    both as the plain phrases of the records' explanations ("the small red square moving left").

    A refusable record states both in its explanation. An answerable record asks for what its
    video shows; its phrase is read from a refusal of the same video that corrects back to it
    (shortest, definite article first). Records without such text (imported sets with free-form
    explanations) are left out and keep the quoting think.
    """
    out: dict[str, tuple[str, str]] = {}
    truths: dict[tuple[str, str], list[str]] = {}
    for r in records:
        m = _SHOWS.search(r.explanation or "") if r.task_type == "refusable" else None
        if m:
            out[r.id] = (m["asked"], m["seen"])
            truths.setdefault((r.video, " ".join((r.correction_target or "").split())), []).append(m["seen"])
    for r in records:
        found = truths.get((r.video, " ".join(r.problem.split()))) if r.task_type == "answerable" else None
        if found:
            phrase = min(found, key=lambda t: (not t.startswith("the "), len(t), t))
            out[r.id] = (phrase, phrase)
    return out


def look_check(record: RiqRecord, log) -> tuple[str, bool] | None:
    """(colour, in view) for the ``look`` think: the colour of the query's subject, and whether the
    synthetic video ``log`` has an object of that colour at all. None when the query is not a
    synthetic one or there is no log."""
    checks = look_checks(record, log)
    return checks[0] if checks else None


def look_checks(record: RiqRecord, log, attributes: Sequence[str] = ("color", "shape", "size"),
                names: bool = False) -> list[tuple] | None:
    """The checks of the ``look`` think, in order, as (word, true): whether the video ``log`` has an
    object of the query subject's colour; then, of that object (colours are unique within a
    synthetic video), whether it has the asked shape, then the asked size. The checks stop at the
    first false one, which settles the refusal. With ``names`` the shape and size checks are
    (asked word, true, the video's word): the think names what the video shows. None when the query
    is not a synthetic one or there is no log."""
    from pipeline.riq.synthetic import parse_query

    query = parse_query(" ".join(record.problem.split())) if log is not None else None
    if query is None:
        return None
    subject = query.subject
    obj = next((o for o in log.objects if o.color == subject.color), None)
    out = []
    for name in attributes:
        asked = getattr(subject, name)
        out.append((asked, obj is not None and getattr(obj, name) == asked))
        if names and name != "color":
            out[-1] += (getattr(obj, name),)
        if not out[-1][1]:
            break
    return out


def look_prefix(asked: str, colour: str) -> str:
    """The `look` think up to its first yes/no: the restated query, then the colour looked for. The
    yes/no comes right after the colour word, so the decoder reads the video at that token."""
    return f"Asked: {asked}. In view: {colour}"


def look_text(asked: str, checks: Sequence[tuple]) -> tuple[str, list[int]]:
    """The look think's text ("Asked: A. In view: red yes, tall bar no.") and the character offsets
    of its yes/no words (the tokens the video alone decides; the warm start weights them). A check
    that carries the video's word (``look_checks(..., names=True)``) names it instead ("In view: red
    yes, wide bar."), and its offset is that word's."""
    text, at = f"Asked: {asked}. In view:", []
    for n, (word, ok, *seen) in enumerate(checks):
        text += "," if n else ""
        if seen:
            at.append(len(text))
            text += f" {seen[0]}"
            continue
        text += f" {word}"
        at.append(len(text))
        text += " yes" if ok else " no"
    return text + ".", at


def reference_completion(record: RiqRecord, phrases: tuple[str, str] | None = None,
                         look: Sequence[tuple[str, bool]] | tuple[str, bool] | None = None) -> str:
    """The ideal completion for a record: the warm-start target.

    With ``phrases`` (asked, seen) the think verifies: it restates the asked event, then
    names the nearest event the video shows, word by word, and decides on whether the two
    agree. A tiny decoder cannot judge a whole query against the video in one token (it
    learns the wording's prior instead, docs/MODEL.md); naming what is seen checks each
    attribute where it is written, and the decision is then a comparison of two texts.
    With ``look`` (the checks of :func:`look_checks`, or one (colour, in view) pair) the think
    first checks the video attribute by attribute. Without phrases the think opens by quoting
    the query, and the decision follows it.
    """
    query = " ".join(record.problem.split())
    if look and isinstance(look[0], str):
        look = [look]
    asked = look_text(phrases[0], look)[0] if (look and phrases) else (f"Asked: {phrases[0]}." if phrases else None)
    if record.task_type == "answerable":
        span = format_span(*record.span)
        think = (f"{asked} Seen: {phrases[1]}, from {span} seconds." if phrases
                 else f"\"{query}\": it happens from {span} seconds.")
        return f"<think>{think}</think> <answer>{span}</answer> <correction>{NIL}</correction>"
    target = record.correction_target or ""
    if look and phrases and not look[-1][1]:
        # The video lacks what was asked: that settles it, so the decision follows the look token
        # at once. With a "Seen:" phrase after it, the decoder decided on that phrase instead,
        # which it mostly copies from the query (the look said no, the answer gave a segment).
        return f"<think>{asked}</think> <answer>{record.explanation or ''}</answer> <correction>{target}</correction>"
    think = (f"{asked} Seen: {phrases[1]}, not that." if phrases
             else f"\"{query}\": no moment matches; the video shows \"{target}\".")
    return f"<think>{think}</think> <answer>{record.explanation or ''}</answer> <correction>{target}</correction>"


def tokenizer_corpus(records: Sequence[RiqRecord]) -> list[str]:
    """The text the tiny tokenizer is trained on: everything the policy reads or writes."""
    texts = ["system\nYou are a helpful assistant.", "user\n", "assistant\n", "0123456789. to " * 4, " In view: yes. no." * 4]
    phrases = verify_phrases(records)
    for r in records:
        texts += [INSTRUCTION.format(query=r.problem), reference_completion(r), reference_completion(r, phrases.get(r.id)),
                  r.reference_answer, r.contrast_answer]
    return texts
