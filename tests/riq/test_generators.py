"""Refusable-query generators (perturb, shuffle, llm) on small hand-written caption sets.

SBERT is the real all-MiniLM-L6-v2; the LLM endpoint is a tiny OpenAI-compatible server
on 127.0.0.1 written here (the client under test is real).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from pipeline.core.frames_cache import VideoFrames, save_frames
from pipeline.core.params import RiqParams
from pipeline.riq.build import build_riq
from pipeline.riq.generators import (
    Vocabulary,
    generate_refusables,
    lexical_match,
    llm_candidate,
    perturb_candidate,
    tag,
)
from pipeline.riq.llm_client import LLMClient, LLMError
from pipeline.riq.schema import DIFFICULTY_EDITS, EDIT_CATEGORY, RiqRecord
from pipeline.riq.validate import validate_file

# Where build_riq writes each split at default params (the held-out split is the evaluation set `synthetic`).
SPLIT_FILES = {"train": "train.jsonl", "test": "eval/synthetic.jsonl", "quarantine": "quarantine.jsonl"}

CAPTIONS = {
    "V1": ["person opens the door.", "person walks to the window."],
    "V2": ["a person sits on the sofa.", "person drinks from a cup."],
    "V3": ["person throws a pillow on the bed.", "person holds a book."],
    "V4": ["person eats a sandwich in the kitchen.", "person puts two cups on the table before sitting."],
}
# Vocabulary of the whole 'dataset': every caption, plus a few others so each class has choices.
EXTRA = ["person closes the cabinet.", "person washes a glass.", "person opens a laptop.", "person takes a towel.",
         "person runs to the door.", "person reads the book.", "a small red box.", "a small red box.", "a large blue bag.", "a large blue bag."]


def _answerable(vid: str, k: int, text: str) -> dict:
    return {
        "id": f"{vid}-q{k}", "video": vid, "video_path": f"{vid}.mp4", "frames_path": None, "duration": 20.0, "problem": text,
        "task_type": "answerable", "kind": "answerable", "gt_answers": [{"answer": [1.0 + k, 4.0 + k]}], "refusable_queries": [],
        "explanation": None, "reference_answer": f"{1 + k:.2f} to {4 + k:.2f}", "contrast_answer": "No segment is relevant.",
        "categories": [], "difficulty": "original", "edits": [], "source": "test",
    }


ANSWERABLE = [_answerable(v, k, t) for v, caps in CAPTIONS.items() for k, t in enumerate(caps)]
VOCAB = Vocabulary.from_texts([c for cs in CAPTIONS.values() for c in cs] + EXTRA, min_count=1)


@pytest.fixture(scope="module")
def generated():
    return generate_refusables(ANSWERABLE, CAPTIONS, {"perturb": 2, "shuffle": 1}, seed=3, vocab=VOCAB,
                               difficulty_weights={"hard": 1, "medium": 1, "easy": 1})


def test_tagging_finds_content_words():
    got = [(t.text, t.cls) for t in tag("Person puts two cups on the table before sitting.") if t.cls]
    assert got == [("puts", "verb"), ("two", "number"), ("cups", "noun"), ("table", "noun"), ("before", "order"), ("sitting", "verb")]
    assert [(t.text, t.cls) for t in tag("a person sits on the bathroom floor.") if t.cls] == [("sits", "verb"), ("bathroom", "noun")]


def test_deterministic_by_seed(generated):
    again = generate_refusables(ANSWERABLE, CAPTIONS, {"perturb": 2, "shuffle": 1}, seed=3, vocab=VOCAB,
                                difficulty_weights={"hard": 1, "medium": 1, "easy": 1})
    assert again.records == generated.records and again.stats == generated.stats
    other = generate_refusables(ANSWERABLE, CAPTIONS, {"perturb": 2, "shuffle": 1}, seed=4, vocab=VOCAB,
                                difficulty_weights={"hard": 1, "medium": 1, "easy": 1})
    assert [r["problem"] for r in other.records] != [r["problem"] for r in generated.records]


def test_labels_difficulty_and_edits_agree(generated):
    perturbed = [r for r in generated.records if r["kind"] == "hard_irrelevant"]
    assert len(perturbed) >= 10 and {r["difficulty"] for r in perturbed} == {"hard", "medium", "easy"}
    for r in generated.records:
        RiqRecord.model_validate(r)
        truth = r["refusable_queries"][0]["problem"]
        if r["kind"] == "shuffled":
            assert (r["difficulty"], r["edits"], r["categories"]) == (None, [], [])
            assert r["problem"] not in CAPTIONS[r["video"]]
            continue
        assert r["problem"] not in sum(CAPTIONS.values(), [])
        n = DIFFICULTY_EDITS[r["difficulty"]]
        asked, true_words = r["problem"].split(), truth.split()
        # Substitutions only: same number of words, exactly n of them changed.
        assert len(asked) == len(true_words) and sum(a != b for a, b in zip(asked, true_words)) == n, (truth, r["problem"])
        assert len(r["edits"]) == n and r["categories"] == sorted({EDIT_CATEGORY[e] for e in r["edits"]})
        assert r["explanation"].startswith(f'No segment is relevant: the video shows "{truth}", not "{r["problem"]}"')
        s_, e_ = r["refusable_queries"][0]["gt_answers"][0]["answer"]
        assert r["contrast_answer"] == f"{s_:.2f} to {e_:.2f}"


def test_edits_are_labelled_by_the_word_class():
    rng = __import__("random").Random(0)
    c = perturb_candidate("person puts two cups on the table before sitting.", 1, VOCAB, rng, frozenset())
    # The one edited word decides edit and category (hand-checked table in docs/IMPORT.md).
    changed = [(a, b) for a, b in zip("person puts two cups on the table before sitting.".split(), c.problem.split()) if a != b]
    word = changed[0][0].strip(".")
    expected = {"puts": "action", "sitting": "action", "two": "count", "cups": "object", "table": "object", "before": "order"}[word]
    assert c.edits == (expected,) and c.categories == (EDIT_CATEGORY[expected],) and c.difficulty == "hard"


def test_candidates_that_the_video_answers_are_rejected():
    # Lexical: a shuffled query that is a caption of the target video, or whose content words all sit in one.
    assert lexical_match("Person opens the door", ["person opens the door."])
    assert lexical_match("the person is opening a door", ["person opens the door."])
    assert not lexical_match("person closes the door", ["person opens the door."])
    caps = {"A": ["person opens the door."], "B": ["person opens the door.", "person sits on a chair."]}
    res = generate_refusables([_answerable("B", 1, "person sits on a chair.")], caps, {"shuffle": 1}, vocab=VOCAB)
    assert res.records == [] and res.stats["rejected_lexical"] == {"shuffle": 1} and res.stats["gave_up"] == {"shuffle": 1}
    # Perturb never swaps in a word the video's own captions use ("opens" -> "closes" when it shows closing).
    caps = {"C": ["person opens the door.", "person closes the door."]}
    only_own = Vocabulary.from_texts(caps["C"], min_count=1)
    res = generate_refusables([_answerable("C", 0, "person opens the door.")], caps, {"perturb": 1}, vocab=only_own,
                              difficulty_weights={"hard": 1})
    assert res.records == [] and res.stats["gave_up"] == {"perturb": 1}


def test_sbert_rejects_paraphrases_of_a_caption():
    # Different words, same meaning: only SBERT can tell ("is sitting" / "takes a seat"; SBERT 0.92).
    caps = {"A": ["a man takes a seat on the couch."], "B": ["a man is sitting on the couch."]}
    target = _answerable("A", 0, "a man takes a seat on the couch.")
    assert not lexical_match(caps["B"][0], caps["A"])
    res = generate_refusables([target], caps, {"shuffle": 1}, vocab=VOCAB, max_similarity=0.9)
    assert res.records == [] and res.stats["rejected_similar"] == {"shuffle": 1}
    caps["C"] = ["someone cooks dinner."]
    res = generate_refusables([target], caps, {"shuffle": 2}, vocab=VOCAB, max_similarity=0.9)
    assert [r["problem"] for r in res.records] == ["someone cooks dinner."]


def test_unicode_and_punctuation_are_kept():
    q = "Person’s café — “opens” the fridge!!! (again?) 🙂"
    vocab = Vocabulary.from_texts(EXTRA + ["person closes the fridge.", "person closes the fridge."], min_count=1)
    rng = __import__("random").Random(1)
    c = perturb_candidate(q, 1, vocab, rng, frozenset())
    assert c is not None and c.problem != q
    # Only the one edited word differs; every quote, dash, emoji and bracket is where it was.
    strip = lambda s: [ch for ch in s if not ch.isalpha()]  # noqa: E731
    assert strip(c.problem) == strip(q)
    assert len(c.problem.split()) == len(q.split()) and sum(a != b for a, b in zip(c.problem.split(), q.split())) == 1
    assert perturb_candidate("!!! ??? …", 1, vocab, rng, frozenset()) is None
    RiqRecord.model_validate(generate_refusables([_answerable("U", 0, q)], {"U": [q]}, {"perturb": 1}, vocab=vocab,
                                                 difficulty_weights={"hard": 1}).records[0])


# ----------------------------------------------------------------------------- llm
class _Fake(BaseHTTPRequestHandler):
    calls: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Fake.calls.append({"auth": self.headers.get("Authorization"), "body": body})
        true = body["messages"][1]["content"].split('"')[1]
        mode = true.split()[-1].strip(".")
        if mode == "slow":
            time.sleep(1.5)
        if mode == "http500":
            self.send_response(500)
            self.end_headers()
            return
        content = {
            "good": json.dumps({"query": "person closes the fridge.", "explanation": "the video shows the fridge opening.", "categories": ["Action/FineGrainedAction"]}),
            "fenced": "```json\n" + json.dumps({"query": "person shuts the oven.", "explanation": "No segment is relevant: it opens the fridge.", "categories": ["Object/ObjectExistence", "Action/FineGrainedAction"]}) + "\n```",
            "prose": "Sure! Here is a query: person closes the fridge.",
            "badlabel": json.dumps({"query": "person closes the fridge.", "explanation": "something else entirely", "categories": ["Object/Teleport"]}),
            "slow": json.dumps({"query": "x y z", "explanation": "too late anyway", "categories": ["Scene/SceneExistence"]}),
        }.get(mode, "")
        payload = {"choices": [{"message": {"role": "assistant", "content": content}}]} if mode != "notchat" else {"ok": 1}
        data = json.dumps(payload).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first ('slow')
            pass


@pytest.fixture()
def llm(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Fake.calls = []
    env = {"RARFT_LLM_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1", "RARFT_LLM_MODEL": "fake-1",
           "RARFT_LLM_API_KEY": "sk-test-secret", "RARFT_LLM_CACHE": str(tmp_path / "cache"), "RARFT_LLM_TIMEOUT": "0.5"}
    yield LLMClient.from_env(env)
    server.shutdown()
    server.server_close()


def test_llm_replies_are_validated_cached_and_failures_reported(llm, tmp_path):
    assert LLMClient.from_env({}) is None
    c = llm_candidate(llm, "person opens the fridge good.", [], 1)
    assert (c.problem, c.kind, c.difficulty, c.categories) == ("person closes the fridge.", "hard_irrelevant", "hard", ("Action/FineGrainedAction",))
    assert c.explanation == "No segment is relevant: the video shows the fridge opening."
    assert _Fake.calls[0]["auth"] == "Bearer sk-test-secret" and _Fake.calls[0]["body"]["model"] == "fake-1"
    # Cached by request: the second call never reaches the server, and the key is not on disk.
    assert llm_candidate(llm, "person opens the fridge good.", [], 1) == c and len(_Fake.calls) == 1
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and "sk-test-secret" not in cached[0].read_text()
    assert llm_candidate(llm, "person opens the fridge fenced.", [], 2).categories == ("Action/FineGrainedAction", "Object/ObjectExistence")
    for mode, key in [("prose", "invalid_reply"), ("badlabel", "invalid_reply"), ("http500", "http_error"), ("notchat", "bad_response"), ("slow", "timeout")]:
        with pytest.raises(LLMError) as err:
            llm_candidate(llm, f"person opens the fridge {mode}.", [], 1)
        assert err.value.key == key, (mode, str(err.value))
    # Through the generator: failures are quarantined with their reason, good replies become records.
    recs = [_answerable("L", k, f"person opens the fridge {m}.") for k, m in enumerate(["good", "prose", "slow"])]
    res = generate_refusables(recs, {"L": [r["problem"] for r in recs]}, {"llm": 1}, llm=llm, vocab=VOCAB,
                              similar=lambda a, b: [0.0] * len(a))
    assert [r["problem"] for r in res.records] == ["person closes the fridge."]
    assert res.stats["llm_failed"] == {"invalid_reply": 1, "timeout": 1}
    assert [f["id"] for f in res.failures] == ["L-q1-llm0", "L-q2-llm0"] and "llm: record L-q2: timeout" in res.failures[1]["reason"]


# ----------------------------------------------------------------------------- build_riq
def test_build_riq_generates_for_an_answerable_only_source(tmp_path):
    imports, frames = tmp_path / "import", tmp_path / "frames"
    imports.mkdir()
    frames.mkdir()
    lines = [f"{v} {1 + k}.0 {4 + k}.0##{t}" for v, caps in CAPTIONS.items() for k, t in enumerate(caps)]
    (imports / "sta.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for vid in ("V1", "V2", "V3"):  # V4 has no frames: its queries are quarantined
        save_frames(frames / f"{vid}.npz", VideoFrames(np.zeros((2, 28, 28, 3), np.uint8), np.array([0.0, 1.0]), {"duration": 20.0}))
    params = RiqParams(source="charades-sta", import_file="sta.txt", generators={"perturb": 1, "shuffle": 1}, test_fraction=0.3)
    stats = build_riq(params, "unused", frames, tmp_path / "riq", tmp_path / "s.json", imports=imports)
    # Charades-STA has no durations: without a frames file there is none, and the query is quarantined.
    assert stats["source"]["import"]["written"] == 6 and stats["quarantined"]["no_duration"] == 2
    assert stats["records"]["generated"] == sum(stats["source"]["generation"]["generated"].values()) >= 8
    n = sum(validate_file(tmp_path / "riq" / SPLIT_FILES[s], frames)["valid"] for s in ("train", "test"))
    assert n == 6 + stats["records"]["generated"]
    for s in ("train", "test"):
        assert not validate_file(tmp_path / "riq" / SPLIT_FILES[s], frames)["errors"]
