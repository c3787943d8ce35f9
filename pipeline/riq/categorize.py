"""Deterministic hard-irrelevant categories of a refusal, for RT-IoU without a judge.

A refusal says *what* does not match: "the video shows the small red square
appearing, not the large red square appearing", or a correction that differs
from the query by the changed facts. The classifier takes the words that differ
(the symmetric difference of the two phrasings, after folding plurals and verb
forms) and maps each to a category:

1. keyword rules (colours, numbers, sizes/comparatives, order words, directions,
   spatial prepositions, parts, scenes, scene changes, known action verbs, shapes);
   a direction word only counts as ``Object/ObjectMoving`` when no action verb
   changed too (``moves right`` -> ``disappears`` is an action edit);
2. the remaining content words go, together, to the nearest of the 11 category
   prototypes (a description with examples) by SBERT cosine similarity — one
   extra label at most, so unknown vocabulary still gets a category instead of none.

Which texts are diffed, in order of preference: the two halves of "shows X, not
Y" in the explanation; the correction against the query; otherwise the words of the
explanation that are not in the query. No text that differs from the query -> no
categories.

Checked against the gold labels of the synthetic splits by classifying the *reference*
explanation and correction (mean Jaccard 1.00; the correction alone 0.88; docs/METRICS.md),
so on synthetic data RT-IoU measures the model, not the classifier's vocabulary gaps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from pipeline.core.prompt import is_nil
from pipeline.riq.schema import CATEGORIES

SOURCE = "rules+sbert-prototype"

COLOURS = {
    "red", "green", "blue", "yellow", "white", "orange", "purple", "cyan", "black", "gray", "grey", "brown",
    "pink", "golden", "silver", "dark", "light", "bright", "colored", "coloured",
}
NUMBERS = {
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "single", "once",
    "twice", "thrice", "several", "many", "few", "both", "pair", "couple", "multiple",
}
SIZES = {
    "small", "large", "big", "tiny", "huge", "little", "bigger", "smaller", "larger", "taller", "shorter",
    "longer", "faster", "slower", "more", "less", "higher", "lower", "biggest", "smallest", "largest",
}
ORDER = {"before", "after", "then", "first", "second", "third", "last", "next", "until", "while", "finally", "again", "time"}
DIRECTIONS = {"left", "right", "up", "down", "forward", "backward", "backwards", "toward", "towards", "away", "upward", "downward", "clockwise"}
SPATIAL = {"above", "below", "under", "underneath", "behind", "beside", "near", "inside", "outside", "between", "on", "onto", "top", "front", "across", "into"}
PARTS = {
    "hand", "hands", "arm", "leg", "foot", "feet", "head", "face", "finger", "wheel", "door", "handle", "lid",
    "screen", "cap", "tail", "wing", "window", "roof", "shoulder", "knee", "mouth", "eye", "eyes",
}
SCENES = {
    "room", "kitchen", "bedroom", "bathroom", "street", "beach", "park", "field", "indoors", "outdoors", "outside",
    "office", "garden", "forest", "road", "stage", "gym", "pool", "water", "snow", "background", "place",
}
TRANSITIONS = {"cut", "cuts", "transition", "transitions", "switch", "switches", "fade", "fades", "scene", "shot", "camera"}
ACTIONS = {
    "appear", "disappear", "move", "grow", "shrink", "blink", "stop", "start", "turn", "open", "close", "walk",
    "run", "sit", "stand", "hold", "take", "put", "pick", "throw", "eat", "drink", "jump", "climb", "cook", "wash",
    "pour", "play", "watch", "read", "write", "laugh", "smile", "talk", "dance", "ride", "push", "pull", "lie",
}
SHAPES = {"square", "bar", "wide_bar", "tall_bar", "circle", "triangle", "ball", "box", "cube", "rectangle", "shape"}
# Multi-word names that must not be split (a "wide bar" is a shape, not a size).
COMPOUNDS = {"wide bar": "wide_bar", "tall bar": "tall_bar", "next to": "beside", "on top of": "above", "in front of": "front"}
STOP = {
    "the", "a", "an", "of", "is", "are", "it", "its", "this", "that", "and", "or", "to", "in", "at", "by", "with",
    "for", "video", "shows", "show", "segment", "relevant", "not", "moment", "when", "where", "find", "part",
    "there", "does", "do", "nothing", "any", "which", "who", "person", "someone", "query", "instead", "but",
}
RULES: tuple[tuple[set[str], str], ...] = (
    (COLOURS, "Attribute/AttributeValue"),
    (NUMBERS, "Attribute/Counting"),
    (SIZES, "Attribute/Comparison"),
    (ORDER, "Action/ActionSequence"),
    (SPATIAL, "Object/ObjectSpatialRelation"),
    (PARTS, "Object/ObjectPartRelation"),
    (TRANSITIONS, "Scene/SceneTransition"),
    (SCENES, "Scene/SceneExistence"),
    (SHAPES, "Object/ObjectExistence"),
)
PROTOTYPES: dict[str, str] = {
    "Action/ActionSequence": "the order of events: before, after, then, first, second time",
    "Action/FineGrainedAction": "a different action or verb: opens instead of closes, runs instead of walks",
    "Object/ObjectExistence": "a different object or thing: a cup instead of a phone, a dog instead of a cat",
    "Object/ObjectPartRelation": "a part of an object or of the body: hand, arm, door handle, wheel, lid",
    "Object/ObjectSpatialRelation": "where things are relative to each other: on, under, next to, behind, inside",
    "Object/ObjectMoving": "the direction of a motion: moving left, right, up, down, toward, away",
    "Scene/SceneTransition": "a change of scene or a camera cut from one shot to another",
    "Scene/SceneExistence": "a different place or scene: kitchen, street, beach, room, outdoors",
    "Attribute/AttributeValue": "a different colour, material or property: red instead of blue, wooden, wet",
    "Attribute/Counting": "a different number of things: two instead of three, once, twice",
    "Attribute/Comparison": "a comparison of size or amount: larger, smaller, taller, faster, more",
}
assert set(PROTOTYPES) == set(CATEGORIES)

_SHOWS_NOT = re.compile(r"shows?\s+(?P<truth>.+?),?\s+(?:and\s+)?not\s+(?P<asked>.+?)\s*\.?\s*$", re.IGNORECASE | re.DOTALL)
_WORD = re.compile(r"[a-z]+(?:_[a-z]+)?|\d+")


def _fold(word: str) -> str:
    """Plural and verb forms onto one key: squares->square, moving/moves/moved->move, disappearing->disappear."""
    if word in SIZES or word in ORDER or word in NUMBERS or len(word) <= 3:
        return word
    for suffix, repl in (("ies", "y"), ("ing", ""), ("es", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)] + repl
            for cand in (stem, stem + "e"):
                if cand in ACTIONS or cand in SHAPES or cand in PARTS or cand in SCENES:
                    return cand
            return stem
    return word


def words(text: str) -> set[str]:
    text = text.casefold()
    for phrase, token in COMPOUNDS.items():
        text = text.replace(phrase, token)
    return {_fold(w) for w in _WORD.findall(text) if w not in STOP}


def changed_words(query: str, explanation: str | None, correction: str | None) -> set[str]:
    """The words in which the refusal says the video differs from the query."""
    m = _SHOWS_NOT.search(explanation or "")
    if m:
        a, b = words(m.group("truth")), words(m.group("asked"))
    elif correction and correction.strip() and not is_nil(correction):
        a, b = words(correction), words(query)
    elif explanation and explanation.strip():
        # A free-form explanation repeats only part of the query: its new words are the facts it names.
        return words(re.sub(r"^no segment is relevant\s*:?", "", explanation.strip(), flags=re.IGNORECASE)) - words(query)
    else:
        return set()
    return a ^ b


@lru_cache(maxsize=1)
def _prototype_embeddings() -> np.ndarray:
    from pipeline.core import sbert

    return sbert.embed([PROTOTYPES[c] for c in CATEGORIES])


def _rule_labels(diff: set[str]) -> tuple[set[str], set[str]]:
    labels, rest = set(), set()
    verbs = {w for w in diff if w in ACTIONS}
    for w in diff:
        if w.isdigit():
            labels.add("Attribute/Counting")
        elif w in verbs:
            labels.add("Action/FineGrainedAction")
        elif w in DIRECTIONS:
            if not verbs:
                labels.add("Object/ObjectMoving")
        elif any(w in vocab for vocab, _ in RULES):
            labels.update(cat for vocab, cat in RULES if w in vocab)
        else:
            rest.add(w)
    return labels, rest


def classify_many(queries: Sequence[str], explanations: Sequence[str | None], corrections: Sequence[str | None]) -> list[list[str]]:
    """Categories (sorted, subset of CATEGORIES) for each refusal; [] when nothing differs."""
    out: list[list[str]] = []
    pending: list[tuple[int, str]] = []
    for i, (q, e, c) in enumerate(zip(queries, explanations, corrections, strict=True)):
        labels, rest = _rule_labels(changed_words(q, e, c))
        out.append(sorted(labels))
        if rest and not labels:
            pending.append((i, " ".join(sorted(rest))))
    if pending:
        from pipeline.core import sbert

        emb = sbert.embed([text for _, text in pending])
        best = (emb @ _prototype_embeddings().T).argmax(axis=1)
        for (i, _), k in zip(pending, best):
            out[i] = [CATEGORIES[int(k)]]
    return out


def classify(query: str, explanation: str | None, correction: str | None) -> list[str]:
    return classify_many([query], [explanation], [correction])[0]


def jaccard(pred: Sequence[str], gold: Sequence[str]) -> float:
    """|P ∩ G| / |P ∪ G|; two empty sets -> 1 (nothing to find, nothing claimed)."""
    p, g = set(pred), set(gold)
    return len(p & g) / len(p | g) if p | g else 1.0
