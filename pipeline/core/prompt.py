"""The one prompt template (training, evaluation and prediction use it alike)
and the parser of completions that rewards and metrics share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NIL = "NIL"
# How every generated refusal explanation opens (RIQ builder, importers, generators, warm start).
NO_SEGMENT = "No segment is relevant"

# The query comes last, right before the model's turn: a small decoder copies and
# compares it far more easily from there than from the head of a long instruction
# (the tiny default quoted the wrong query at the head, see docs/MODEL.md); for a
# 7B model the order is immaterial.
INSTRUCTION = (
    "Watch the video and decide whether the query below describes something that happens in it. "
    "First reason inside <think></think>, citing time ranges in seconds. "
    "If the video shows it, write the moment as <answer>START to END</answer> in seconds "
    "(for example <answer>12.54 to 17.83</answer>) and then <correction>NIL</correction>. "
    "If nothing in the video matches, say in <answer></answer> that no segment is relevant and why, "
    "and write in <correction></correction> a corrected query that the video does answer.\n"
    "Query: \"{query}\""
)


def build_messages(query: str) -> list[dict]:
    """Chat messages for one query; the video is attached by the processor."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {"type": "text", "text": INSTRUCTION.format(query=query.strip())},
            ],
        }
    ]


def format_span(start: float, end: float) -> str:
    return f"{start:.2f} to {end:.2f}"


_TAGS = ("think", "answer", "correction")
_FORMAT = re.compile(
    r"<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*<correction>(?P<correction>.*?)</correction>",
    re.DOTALL,
)
_NUM = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # ASCII decimals only
# A unit after each number ("3.5s to 7s", "3.5 seconds to 7 seconds") is tolerated:
# the prompt asks for seconds, and a unit is no reason to read a span as a refusal.
_UNIT = r"(?:\s*(?:s|sec|secs|second|seconds)\b)?"
_SPAN = re.compile(rf"({_NUM}){_UNIT}\s*to\s*({_NUM})", re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    well_formed: bool
    answer: str | None
    correction: str | None
    span: tuple[float, float] | None

    @property
    def relevant(self) -> bool:
        """A prediction says 'relevant' iff its answer holds a span."""
        return self.span is not None


def _last(tag: str, text: str) -> str | None:
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return found[-1].strip() if found else None


def is_well_formed(text: str) -> bool:
    """Exactly think, answer, correction (whitespace between), nothing else, no nesting."""
    m = _FORMAT.fullmatch(text.strip())
    if not m:
        return False
    inner = "".join(m.group(t) for t in _TAGS)
    return not re.search(r"</?(?:think|answer|correction)>", inner)


def parse_span(answer: str | None) -> tuple[float, float] | None:
    if answer is None:
        return None
    m = _SPAN.search(answer)
    return (float(m.group(1)), float(m.group(2))) if m else None


def is_nil(text: str | None) -> bool:
    """True iff the text says NIL, ignoring case and whitespace."""
    return text is not None and "".join(text.split()).casefold() == NIL.casefold()


def completion_text(completion) -> str:
    """The generated text of a plain-string or conversational (TRL) completion.

    Conversational completions are a list of messages whose content is a string or a
    list of parts; the text of every assistant message is joined in order.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif content is not None:
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return "".join(parts)


def parse_completion(text) -> Parsed:
    """Parse a completion (plain string or conversational messages)."""
    text = completion_text(text)
    answer = _last("answer", text)
    return Parsed(
        well_formed=is_well_formed(text),
        answer=answer,
        correction=_last("correction", text),
        span=parse_span(answer),
    )


# --------------------------------------------------------------------------- the official evaluator's parsing
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def _first(tag: str, text: str) -> str | None:
    m = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return m.group(1).strip() if m else None


def think_text(text) -> str:
    """The first ``<think>`` block's text ('' without one)."""
    return _first("think", completion_text(text)) or ""


def parse_completion_official(text) -> Parsed:
    """Parse as the official evaluator does (``evaluate.protocol: official``, docs/METRICS.md): every
    ``<think>...</think>`` block is removed first, then the FIRST ``<answer>`` (and first ``<correction>``)
    is taken. :func:`parse_completion`, the default, takes the LAST tag of the whole text, think included."""
    text = completion_text(text)
    body = _THINK_BLOCK.sub("", text)
    answer = _first("answer", body)
    return Parsed(well_formed=is_well_formed(text), answer=answer, correction=_first("correction", body), span=parse_span(answer))
