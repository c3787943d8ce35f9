"""Generators of refusable queries for imported (answerable-only) annotation sets.

- ``perturb`` (hard-irrelevant, offline, rule-based): edit 1/2/3 content words of a true
  query (verb -> action, noun -> object, adjective -> attribute, number -> count,
  before/after -> order) with substitutes mined from the dataset's own vocabulary,
  inflected to the original word's form with lemminflect.
- ``shuffle`` (SS-VTG style): a query of another video.
- ``llm`` (optional): an OpenAI-compatible chat endpoint (pipeline.riq.llm_client).

Every candidate is rejected when it (nearly) matches a caption of its video: the same
words, all its content lemmas inside one caption, or SBERT similarity (pipeline.core.sbert)
at or above ``max_similarity``. Each query draws from a generator seeded by
(seed, record id, generator), so outputs are deterministic. See docs/IMPORT.md.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from lemminflect import getAllLemmas, getInflection

from pipeline.core.io import InputError
from pipeline.core.prompt import NO_SEGMENT, format_span
from pipeline.riq.llm_client import SYSTEM, LLMClient, LLMError, parse_refusal
from pipeline.riq.schema import DIFFICULTY_EDITS, EDIT_CATEGORY

Similar = Callable[[Sequence[str], Sequence[str]], list[float]]

# Small closed-class seeds: lemminflect knows which parts of speech a word can take,
# these few words decide which reading a short caption uses.
DETERMINERS = frozenset("a an the his her their its my your our some another this that these those each every".split())
FUNCTION = DETERMINERS | frozenset(
    "to of on in at into onto from with by for off out up down over under through while and or but as is are was were be "
    "been being then it they he she them him who which what when where there here".split()
)
SUBJECTS = frozenset("person persons people someone somebody man woman men women he she they".split())
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ORDER_SWAP = {"before": "after", "after": "before", "first": "last", "last": "first"}
VERB_TAGS = ("VBZ", "VBG", "VBD", "VBN", "VBP")
EDIT_OF = {"verb": "action", "noun": "object", "adj": "attribute", "number": "count", "order": "order"}
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*|\d+")


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int
    cls: str | None  # verb, noun, adj, number, order, or None (not editable)
    lemma: str
    tag: str | None  # Penn tag to inflect a substitute to
    frame: str = ""  # verbs: the word after it ('to', 'on', 'the', '_'), so a substitute fits the same slot


@lru_cache(maxsize=65536)
def _lemmas(word: str) -> dict:
    return getAllLemmas(word)


def _verb_tag(word: str, lemma: str) -> str | None:
    for tag in VERB_TAGS:
        if word in getInflection(lemma, tag=tag):
            return tag
    return None


def tag(text: str) -> list[Token]:
    """Word tokens of a caption with the class of each editable word."""
    words = [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]
    low = [w.casefold() for w, _, _ in words]
    out: list[Token] = []
    for i, (word, s, e) in enumerate(words):
        w, prev = low[i], (low[i - 1] if i else None)
        nxt = low[i + 1] if i + 1 < len(low) else None
        after_det = prev is not None and (prev in DETERMINERS or prev.endswith(("'s", "\u2019s")) or prev in NUMBERS or prev.isdigit())
        # "one" is skipped: a new count would not agree with its singular noun ("three girl").
        if (w in NUMBERS and w != "one") or (w.isdigit() and w != "1"):
            out.append(Token(word, s, e, "number", w, None))
            continue
        if w in ORDER_SWAP:
            out.append(Token(word, s, e, "order", w, None))
            continue
        if w in FUNCTION or "'" in w or "\u2019" in w or len(w) < 3:
            out.append(Token(word, s, e, None, w, None))
            continue
        poses = _lemmas(w)
        prev_cls = out[-1].cls if out else None
        if "VERB" in poses and not after_det and prev_cls not in ("adj", "verb"):
            lemma = poses["VERB"][0]
            vtag = "VB" if prev == "to" and w == lemma else _verb_tag(w, lemma)
            # Base and plural forms are nouns as often as verbs ("bathroom floor"): only after a subject or 'to'.
            allowed = {
                "VBZ": True, "VBG": True, "VBD": prev is not None,
                "VBN": prev in ("is", "are", "was", "were", "been", "be", "gets", "get"),
                "VBP": prev in SUBJECTS or prev in ("and", "i", "you", "we"), "VB": prev == "to",
            }
            if vtag and allowed[vtag]:
                frame = nxt if nxt in FUNCTION and nxt not in DETERMINERS else ("the" if nxt in DETERMINERS else "_")
                out.append(Token(word, s, e, "verb", lemma, vtag, frame))
                continue
        nxt_noun = nxt is not None and "NOUN" in _lemmas(nxt) and nxt not in FUNCTION
        if "ADJ" in poses and nxt_noun and (after_det or prev_cls == "adj"):
            out.append(Token(word, s, e, "adj", poses["ADJ"][0], None))
            continue
        if "NOUN" in poses and w not in SUBJECTS and (after_det or prev_cls == "adj" or prev in FUNCTION):
            lemma = poses["NOUN"][0]
            out.append(Token(word, s, e, "noun", lemma, "NN" if w == lemma else "NNS"))
            continue
        out.append(Token(word, s, e, None, poses.get("NOUN", poses.get("VERB", (w,)))[0] if poses else w, None))
    return out


def content_lemmas(text: str) -> frozenset[str]:
    return frozenset(t.lemma for t in tag(text) if t.cls is not None or (t.text.casefold() not in FUNCTION and t.text.casefold() not in SUBJECTS))


def _norm(text: str) -> str:
    return " ".join(m.group(0).casefold() for m in _WORD.finditer(text))


# --------------------------------------------------------------------------- vocabulary
@dataclass
class Vocabulary:
    """Lemmas per editable class, counted over every caption of the dataset."""

    counts: dict[str, Counter] = field(default_factory=lambda: {c: Counter() for c in EDIT_OF})
    frames: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # verb frame -> lemma counts

    @classmethod
    def from_texts(cls, texts: Sequence[str], min_count: int = 2) -> Vocabulary:
        vocab = cls()
        for text in dict.fromkeys(texts):
            for t in tag(text):
                if t.cls in ("verb", "noun", "adj"):
                    vocab.counts[t.cls][t.lemma] += 1
                if t.cls == "verb":
                    vocab.frames[t.frame][t.lemma] += 1
        # A lemma seen once is as likely a typo as a word; the seeds are always available.
        for c in ("verb", "noun", "adj"):
            vocab.counts[c] = Counter({k: v for k, v in vocab.counts[c].items() if v >= min_count})
        vocab.counts["number"] = Counter(dict.fromkeys(NUMBERS, 1))
        return vocab

    def substitute(self, rng: random.Random, token: Token, avoid: frozenset[str]) -> str | None:
        """A replacement word in the token's form, or None when the vocabulary has none."""
        if token.cls == "order":
            new = ORDER_SWAP[token.lemma]
        elif token.cls == "number":
            current = NUMBERS.index(token.lemma) if token.lemma in NUMBERS else int(token.lemma) - 1
            options = [n for i, n in enumerate(NUMBERS) if i != current and abs(i - current) <= 2]
            new = rng.choice(options) if options else None
        else:
            counts = self.counts[token.cls]
            if token.cls == "verb":
                # Prefer verbs seen in the same slot ("runs to" -> "walks to", not "holds to").
                fitting = Counter({k: v for k, v in self.frames.get(token.frame, {}).items() if k in counts})
                if len([k for k in fitting if k != token.lemma and k not in avoid]) >= 2:
                    counts = fitting
            pool = sorted((k, v) for k, v in counts.items() if k != token.lemma and k not in avoid)
            if not pool:
                return None
            lemma = rng.choices([k for k, _ in pool], weights=[v for _, v in pool])[0]
            new = (getInflection(lemma, tag=token.tag) or (lemma,))[0] if token.tag else lemma
        if new and token.text[:1].isupper():
            new = new[:1].upper() + new[1:]
        return new


# --------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    problem: str
    kind: str
    explanation: str
    edits: tuple[str, ...] = ()
    difficulty: str | None = None
    categories: tuple[str, ...] = ()
    source_generator: str = "perturb"


def perturb_candidate(query: str, n_edits: int, vocab: Vocabulary, rng: random.Random, avoid: frozenset[str]) -> Candidate | None:
    """Edit ``n_edits`` distinct content words of ``query``; None when it has too few."""
    tokens = [t for t in tag(query) if t.cls is not None]
    if len(tokens) < n_edits:
        return None
    chosen = sorted(rng.sample(tokens, n_edits), key=lambda t: t.start)
    text, changes, offset = query, [], 0
    for t in chosen:
        new = vocab.substitute(rng, t, avoid)
        if not new or new.casefold() == t.text.casefold():
            return None
        text = text[: t.start + offset] + new + text[t.end + offset:]
        offset += len(new) - len(t.text)
        changes.append((t, new))
    edits = tuple(sorted(EDIT_OF[t.cls] for t, _ in changes))
    difficulty = {v: k for k, v in DIFFICULTY_EDITS.items()}[n_edits]
    detail = "; ".join(f"{t.text}, not {new}" for t, new in changes)
    explanation = f'{NO_SEGMENT}: the video shows "{query.strip()}", not "{text.strip()}": {detail}.'
    return Candidate(text, "hard_irrelevant", explanation, edits, difficulty, tuple(sorted({EDIT_CATEGORY[e] for e in edits})))


def llm_candidate(client: LLMClient, query: str, captions: list[str], n_edits: int) -> Candidate:
    """A hard-irrelevant Candidate for ``query`` written by the LLM (raises LLMError)."""
    difficulty = {1: "hard", 2: "medium", 3: "easy"}[n_edits]
    user = (
        f'True query: "{query.strip()}"\nOther captions of the same video: '
        + json.dumps([c for c in captions if c != query][:10], ensure_ascii=False)
        + f"\nChange exactly {n_edits} fact(s) (action, object, attribute, count, order, place or scene) so that "
        "nothing in the video matches; keep the wording otherwise."
    )
    reply = parse_refusal(client.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]))
    if " ".join(reply.query.casefold().split()) == " ".join(query.casefold().split()):
        raise LLMError("invalid_reply", "query: identical to the true query")
    explanation = reply.explanation if reply.explanation.startswith("No segment") else f"No segment is relevant: {reply.explanation}"
    return Candidate(reply.query, "hard_irrelevant", explanation, (), difficulty, tuple(sorted(set(reply.categories))), "llm")


def lexical_match(candidate: str, captions: Sequence[str]) -> bool:
    """True when the candidate has a caption's exact words, or all its content lemmas sit in one caption."""
    norm, lemmas = _norm(candidate), content_lemmas(candidate)
    return any(_norm(c) == norm or (lemmas and lemmas <= content_lemmas(c)) for c in captions)


def _draw_difficulty(rng: random.Random, weights: dict[str, float]) -> str:
    names = [k for k in ("hard", "medium", "easy") if weights.get(k, 0) > 0]
    return rng.choices(names, weights=[weights[k] for k in names])[0]


def _how_many(rng: random.Random, rate: float) -> int:
    whole = math.floor(rate)
    return whole + (rng.random() < rate - whole)


def sbert_similar(a: Sequence[str], b: Sequence[str]) -> list[float]:
    from pipeline.core import sbert

    return sbert.similarity(list(a), list(b))


# --------------------------------------------------------------------------- driver
@dataclass
class GenerationResult:
    records: list[dict]
    failures: list[dict]  # {"id", "reason", "record"}: LLM replies that could not be used
    stats: dict
    info: list[dict] = field(default_factory=list)  # per record: generator, highest caption similarity


def generate_refusables(
    answerable: Sequence[dict],
    captions: dict[str, list[str]],
    generators: dict[str, float],
    *,
    difficulty_weights: dict[str, float] | None = None,
    max_similarity: float = 0.9,
    seed: int = 0,
    candidates_per_query: int = 4,
    similar: Similar | None = None,
    llm=None,
    vocab: Vocabulary | None = None,
) -> GenerationResult:
    """Refusable RIQ record dicts for answerable record dicts (each becomes the correction target).

    ``generators`` maps perturb/shuffle/llm to queries per answerable record (a fraction is
    drawn per record). Candidates are checked lexically first, then together in one SBERT
    call; the first surviving candidate of each slot is kept, a slot with none is counted
    in ``gave_up``.
    """
    unknown = set(generators) - {"perturb", "shuffle", "llm"}
    if unknown:
        raise InputError(f"generators: unknown {sorted(unknown)}")
    similar = similar or sbert_similar
    difficulty_weights = difficulty_weights or {"hard": 0.5, "medium": 0.3, "easy": 0.2}
    vocab = vocab or Vocabulary.from_texts([c for cs in captions.values() for c in cs])
    stats = {k: Counter() for k in ("generated", "rejected_lexical", "rejected_similar", "gave_up", "llm_failed")}
    # Shuffle donors: every caption of every video (SS-VTG draws queries from other videos).
    all_queries = sorted({(r["video"], r["problem"]) for r in answerable} | {(v, c) for v, cs in captions.items() for c in cs})
    slots: list[tuple[dict, str, int, list[Candidate]]] = []
    failures: list[dict] = []
    for rec in answerable:
        vid, caps = rec["video"], captions.get(rec["video"], []) + [rec["problem"]]
        avoid = frozenset().union(*(content_lemmas(c) for c in caps))
        for gen, rate in sorted(generators.items()):
            rng = random.Random(f"{seed}:{rec['id']}:{gen}")
            for k in range(_how_many(rng, rate)):
                pool: list[Candidate] = []
                if gen == "perturb":
                    diff = _draw_difficulty(rng, difficulty_weights)
                    for _ in range(candidates_per_query * 3):
                        c = perturb_candidate(rec["problem"], DIFFICULTY_EDITS[diff], vocab, rng, avoid)
                        if c is not None and c.problem not in {p.problem for p in pool}:
                            pool.append(c)
                        if len(pool) == candidates_per_query:
                            break
                elif gen == "shuffle":
                    others = [q for v, q in all_queries if v != vid]
                    for q in rng.sample(others, min(candidates_per_query, len(others))):
                        pool.append(Candidate(q, "shuffled", f'{NO_SEGMENT}: the video shows "{rec["problem"].strip()}", not "{q.strip()}".', source_generator="shuffle"))
                elif gen == "llm":
                    if llm is None:
                        raise InputError("generators: 'llm' is on but no LLM endpoint is configured (RARFT_LLM_BASE_URL, RARFT_LLM_MODEL)")
                    diff = _draw_difficulty(rng, difficulty_weights)

                    try:
                        pool.append(llm_candidate(llm, rec["problem"], caps, DIFFICULTY_EDITS[diff]))
                    except LLMError as exc:
                        stats["llm_failed"][exc.key] += 1
                        failures.append({"id": f"{rec['id']}-llm{k}", "reason": f"llm: record {rec['id']}: {exc}", "record": {"source_record": rec["id"], "problem": rec["problem"]}})
                        continue
                kept = []
                for c in pool:
                    if lexical_match(c.problem, caps):
                        stats["rejected_lexical"][gen] += 1
                    else:
                        kept.append(c)
                slots.append((rec, gen, k, kept))
    # One SBERT pass over every (candidate, caption) pair; the source query itself is skipped
    # for perturb (an edit of it is close to it by construction; the lexical check covers it).
    pairs = [
        (c.problem, cap)
        for rec, gen, _, kept in slots for c in kept
        for cap in dict.fromkeys(captions.get(rec["video"], []) + [rec["problem"]])
        if not (gen != "shuffle" and _norm(cap) == _norm(rec["problem"]))
    ]
    # ... and each perturb/llm candidate against its true query, to keep the closest (hardest) one.
    to_source = [(c.problem, rec["problem"]) for rec, gen, _, kept in slots if gen != "shuffle" for c in kept]
    sims = similar([a for a, _ in pairs + to_source], [b for _, b in pairs + to_source]) if pairs or to_source else []
    best: dict[str, float] = {}
    for (a, _), s in zip(pairs, sims):
        best[a] = max(best.get(a, 0.0), s)
    closeness = {key: s for key, s in zip(to_source, sims[len(pairs):])}
    records: list[dict] = []
    info: list[dict] = []
    used: dict[str, set[str]] = {}
    for rec, gen, k, kept in slots:
        seen = used.setdefault(rec["video"], {_norm(rec["problem"])})
        pick = None
        if gen != "shuffle":
            kept = sorted(kept, key=lambda c: -closeness[(c.problem, rec["problem"])])
        for c in kept:
            if best.get(c.problem, 0.0) >= max_similarity:
                stats["rejected_similar"][gen] += 1
            elif _norm(c.problem) not in seen:
                pick = c
                break
        if pick is None:
            stats["gave_up"][gen] += 1
            continue
        seen.add(_norm(pick.problem))
        stats["generated"][gen] += 1
        span = rec["gt_answers"][0]["answer"]
        records.append({
            **{key: rec[key] for key in ("video", "video_path", "frames_path", "duration", "source")},
            "id": f"{rec['id']}-{gen}{k}",
            "problem": pick.problem, "task_type": "refusable", "kind": pick.kind,
            "gt_answers": [{"answer": [-1.0, -1.0]}],
            "refusable_queries": [{"problem": rec["problem"], "gt_answers": [{"answer": list(span)}]}],
            "explanation": pick.explanation, "reference_answer": pick.explanation, "contrast_answer": format_span(*span),
            "categories": list(pick.categories), "difficulty": pick.difficulty, "edits": list(pick.edits),
        })
        info.append({
            "id": records[-1]["id"], "generator": gen, "max_caption_similarity": round(best.get(pick.problem, 0.0), 4),
            "similarity_to_true": round(closeness.get((pick.problem, rec["problem"]), float("nan")), 4),
        })
    return GenerationResult(records, failures, {k: dict(sorted(v.items())) for k, v in stats.items()}, info)
