"""The four RA-RFT rewards on hand-written completions, with hand-computed values.

SBERT-based expectations are computed here straight from sentence-transformers
(a separate model instance, one text per encode call), independent of
pipeline.core.sbert's batching and cache.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import sbert
from pipeline.core.prompt import format_span, parse_completion
from pipeline.riq.schema import RiqRecord
from pipeline.train import rewards

D = 20.0
GT = (2.0, 6.0)
EXPLANATION = "No segment is relevant: the circle in the video is red, not blue."
TARGET = "a red circle moves to the left"


def answerable(span=GT, rid="a0") -> RiqRecord:
    return RiqRecord(
        id=rid, video="v1", video_path="v1.mp4", duration=D, problem="a red circle moves to the left",
        task_type="answerable", kind="answerable", gt_answers=[{"answer": span}],
        reference_answer=format_span(*span), contrast_answer=EXPLANATION, difficulty="original", source="synthetic",
    )


def refusable(rid="r0") -> RiqRecord:
    return RiqRecord(
        id=rid, video="v1", video_path="v1.mp4", duration=D, problem="a blue circle moves to the left",
        task_type="refusable", kind="hard_irrelevant", gt_answers=[{"answer": [-1, -1]}],
        refusable_queries=[{"problem": TARGET, "gt_answers": [{"answer": list(GT)}]}],
        explanation=EXPLANATION, reference_answer=EXPLANATION, contrast_answer=format_span(*GT),
        categories=["Attribute/AttributeValue"], difficulty="hard", source="synthetic",
    )


def full(answer: str, correction: str = "NIL", think: str = "I look at the video.") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>\n<correction>{correction}</correction>"


def cols(records):
    return rewards.columns_of(records)


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(sbert.model_path(), device="cpu")


def s_direct(model, x: str, y: str) -> float:
    """(cos + 1) / 2 from two separate encode calls."""
    ex = model.encode([x], convert_to_numpy=True)[0]
    ey = model.encode([y], convert_to_numpy=True)[0]
    cos = float(np.dot(ex, ey) / (np.linalg.norm(ex) * np.linalg.norm(ey)))
    return (cos + 1) / 2


def test_registry_order_and_trl_signature():
    assert list(rewards.REWARDS) == ["format", "refuse_iou", "explain", "correction"]
    recs = [answerable(), refusable()]
    comps = [full("2 to 6"), full("No segment is relevant.", TARGET)]
    # TRL passes every dataset column plus its own extras; the rewards must ignore extras.
    extras = dict(prompts=["p", "p"], completion_ids=[[1], [2]], trainer_state=None, log_extra=None, log_metric=None, id=["a0", "r0"])
    for name, fn in rewards.REWARDS.items():
        out = fn(comps, **cols(recs), **extras)
        assert isinstance(out, list) and len(out) == 2 and all(isinstance(x, float) for x in out), name


# --------------------------------------------------------------------------- format
@pytest.mark.parametrize(
    "text, expected",
    [
        (full("2 to 6"), 1.0),
        ("  \n<think>a</think><answer>b</answer><correction>c</correction>\n\n", 1.0),  # outer whitespace stripped
        ("<think>\nmulti\nline\n</think>   <answer>x</answer>\t<correction>NIL</correction>", 1.0),
        (full("2 to 6") + " thanks", 0.0),  # text after </correction>
        ("Sure! " + full("2 to 6"), 0.0),  # text before <think>
        ("<think>a <answer>1 to 2</answer></think><answer>2 to 6</answer><correction>NIL</correction>", 0.0),  # nested
        ("<think>a</think><answer><answer>2 to 6</answer></answer><correction>NIL</correction>", 0.0),  # nested same tag
        ("<think>a</think><answer>2 to 6</answer>", 0.0),  # missing correction
        ("<answer>2 to 6</answer><think>a</think><correction>NIL</correction>", 0.0),  # wrong order
        (full("2 to 6") + "<correction>NIL</correction>", 0.0),  # duplicated tag
        ("<think>a</think> and <answer>2 to 6</answer><correction>NIL</correction>", 0.0),  # text between tags
        ("2 to 6", 0.0),
        ("", 0.0),
        (full("2 to 6", think="Le cercle rouge apparaît à 2 s — 红色圆圈"), 1.0),  # non-ASCII inside tags
    ],
)
def test_format(text, expected):
    assert rewards.format_reward([text]) == [expected]


def test_format_conversational():
    text = full("2 to 6")
    as_str = [{"role": "assistant", "content": text}]
    as_parts = [{"role": "assistant", "content": [{"type": "text", "text": text[:20]}, {"type": "text", "text": text[20:]}]}]
    assert rewards.format_reward([as_str, as_parts, [{"role": "assistant", "content": "no tags"}]]) == [1.0, 1.0, 0.0]


# --------------------------------------------------------------------------- refuse_iou
@pytest.mark.parametrize(
    "answer, expected",
    [
        # gt [2, 6], D = 20: IoU x (1 - |gs-ps|/D) x (1 - |ge-pe|/D)
        ("2 to 6", 1.0),  # 1 x 1 x 1
        ("3 to 6", 0.75 * 0.95 * 1.0),  # IoU 3/4; 1 - 1/20 = 0.95 -> 0.7125
        ("0 to 10", 0.4 * 0.9 * 0.8),  # IoU 4/10; 1 - 2/20; 1 - 4/20 -> 0.288
        ("The event is from 3.5s to 7s.", 0.5 * 0.925 * 0.95),  # IoU 2.5/5; 1 - 1.5/20; 1 - 1/20 -> 0.439375
        ("6 to 3", 0.0),  # reversed: start must be < end
        ("4 to 4", 0.0),  # empty span
        ("-5 to 4", (2 / 6) * 0.9 * 0.9),  # clipped to [0, 4]: IoU 2/6; 1 - 2/20; 1 - 2/20 -> 0.27
        ("25 to 30", 0.0),  # clipped to [20, 20]: empty
        ("18 to 30", 0.0),  # clipped to [18, 20]: no overlap
        ("2 to 6 or maybe 10 to 12", 1.0),  # the first pair counts
        ("No segment is relevant.", 0.0),  # answerable but refused
        ("from ٢ to ٦", 0.0),  # non-ASCII digits are not numbers
        ("", 0.0),
    ],
)
def test_refuse_iou_answerable(answer, expected):
    assert rewards.refuse_iou_reward([full(answer)], **cols([answerable()])) == pytest.approx([expected], abs=1e-12)


def test_refuse_iou_cases():
    recs = [answerable(), answerable(), refusable(), refusable(), refusable(), refusable(), answerable()]
    comps = [
        "<think>x</think> 2 to 6",  # no <answer>: 0
        "<answer>0 to 1</answer> then <answer>2 to 6</answer>",  # the last <answer> counts, format irrelevant: 1
        full("No segment of this video is relevant."),  # refusable, no span: 1
        full("It happens 2 to 6."),  # refusable with a span: 0
        "no tags at all",  # refusable without <answer>: 0
        full(""),  # refusable, empty answer holds no span: 1
        [{"role": "assistant", "content": [{"type": "text", "text": full("2.00 to 6.00")}]}],  # conversational: 1
    ]
    assert rewards.refuse_iou_reward(comps, **cols(recs)) == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_refuse_iou_uses_duration_per_row():
    recs = [answerable(span=(2.0, 6.0)), answerable(span=(2.0, 6.0))]
    c = cols(recs)
    c["duration"] = [20.0, 40.0]
    # "3 to 6": IoU 0.75; D=20: 0.75 x 0.95; D=40: 0.75 x (1 - 1/40) = 0.75 x 0.975
    assert rewards.refuse_iou_reward([full("3 to 6")] * 2, **c) == pytest.approx([0.7125, 0.73125])


# --------------------------------------------------------------------------- explain
def test_explain_matches_direct_sbert(st_model):
    recs = [answerable(), refusable(), refusable(), answerable()]
    answers = ["2.10 to 5.90", "The circle is red, so no blue circle is in the video.", "Die Kugel ist rot — 没有蓝色", None]
    comps = [full(answers[0]), full(answers[1], TARGET), full(answers[2], TARGET), "<think>x</think>"]
    got = rewards.explain_reward(comps, **cols(recs))
    expected = [
        s_direct(st_model, a, r.reference_answer) - s_direct(st_model, a, r.contrast_answer) if a is not None else 0.0
        for a, r in zip(answers, recs)
    ]
    assert got[3] == 0.0
    assert got == pytest.approx(expected, abs=1e-5)
    # A correct refusal explanation is closer to the reference than to the contrast span.
    assert got[1] > 0


def test_explain_answer_equal_to_reference_scores_one_minus_contrast(st_model):
    rec = refusable()
    got = rewards.explain_reward([full(EXPLANATION)], **cols([rec]))[0]
    # s(x, x) = (1 + 1) / 2 = 1
    assert got == pytest.approx(1.0 - s_direct(st_model, EXPLANATION, rec.contrast_answer), abs=1e-5)


# --------------------------------------------------------------------------- correction
@pytest.mark.parametrize(
    "completion, expected",
    [
        (full("2 to 6", "NIL"), 1.0),
        (full("2 to 6", "  nil \n"), 1.0),  # case and whitespace do not matter
        (full("2 to 6", "N I L"), 1.0),
        (full("2 to 6", "NIL."), 0.0),
        (full("2 to 6", "a red circle moves left"), 0.0),
        (full("2 to 6", ""), 0.0),
        ("<think>x</think><answer>2 to 6</answer>", 0.0),  # missing correction
    ],
)
def test_correction_answerable(completion, expected):
    assert rewards.correction_reward([completion], **cols([answerable()])) == [expected]


def test_correction_refusable(st_model):
    recs = [refusable()] * 5
    corrections = ["a red circle moves left", "un cercle rouge se déplace vers la gauche", "NIL", " nil ", ""]
    comps = [full("No segment is relevant.", c) for c in corrections] + ["<answer>none</answer>"]
    recs = recs + [refusable()]
    got = rewards.correction_reward(comps, **cols(recs))
    assert got[2:] == [0.0, 0.0, 0.0, 0.0]  # NIL, nil, empty, missing
    assert got[:2] == pytest.approx([s_direct(st_model, c, TARGET) for c in corrections[:2]], abs=1e-5)
    assert got[0] > 0.9  # near-verbatim correction


# --------------------------------------------------------------------------- sbert
def test_similarity_matches_direct_and_paraphrase_beats_unrelated(st_model):
    a = ["A man is playing a guitar.", "A man is playing a guitar.", "x"]
    b = ["Someone plays an acoustic guitar.", "The stock market fell sharply today.", "x"]
    got = sbert.similarity(a, b)
    assert got == pytest.approx([s_direct(st_model, x, y) for x, y in zip(a, b)], abs=1e-5)
    assert got[0] > got[1]
    assert got[2] == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= g <= 1.0 for g in got)


def test_similarity_cache_holds_references_only():
    sbert.clear_cache()
    first = sbert.similarity(["cand one", "cand two", "cand three"], ["ref A", "ref B", "ref A"])
    assert sbert.cache_info()["size"] == 2  # the two unique references, no candidates
    again = sbert.similarity(["cand one", "cand two", "cand three"], ["ref A", "ref B", "ref A"])
    assert again == pytest.approx(first, abs=1e-6)  # cached and fresh embeddings agree
    assert sbert.similarity([], []) == []
    with pytest.raises(ValueError):
        sbert.similarity(["a"], [])


def test_warm_makes_scores_independent_of_what_was_cached_before():
    refs = ["No segment is relevant: the video shows a red square.", "1.00 to 2.50", "a red square"]
    cands = ["No segment matches the query.", "2.00 to 3.00", "a red box"]
    sbert.clear_cache()
    sbert.similarity(["something else"], [refs[1]])  # a reference cached in another batch first
    assert sbert.warm(refs + [""]) == 2  # only the two uncached, non-empty texts are encoded
    resumed_like = sbert.similarity(cands, refs)
    sbert.clear_cache()
    assert sbert.warm(refs) == 3 and sbert.warm(refs) == 0
    fresh = sbert.similarity(cands, refs)
    # Within float rounding either way; the resume test (tests/train/test_resume.py) needs them bit-equal
    # when every reference was warmed in the same call, which is what train does.
    assert resumed_like == pytest.approx(fresh, abs=1e-6)
    assert rewards.reference_texts([answerable(), refusable()]).count(TARGET) == 1


# --------------------------------------------------------------------------- columns, score, total
def test_reward_columns_uniform_through_datasets():
    from datasets import Dataset

    recs = [answerable(), refusable()]
    rows = [rewards.reward_columns(r) for r in recs]
    assert rows[0]["gt_span"] == [2.0, 6.0] and rows[1]["gt_span"] == [-1.0, -1.0]
    assert rows[0]["correction_target"] == "" and rows[1]["correction_target"] == TARGET
    ds = Dataset.from_list(rows)
    comps = [full("3 to 6"), full("No segment is relevant.", "NIL")]
    from_ds = {name: fn(comps, **{k: ds[k] for k in ds.column_names}) for name, fn in rewards.REWARDS.items()}
    direct = rewards.score(recs, comps)
    for name in rewards.REWARDS:
        assert from_ds[name] == pytest.approx([d[name] for d in direct], abs=1e-6)
    assert direct[0]["refuse_iou"] == pytest.approx(0.7125)
    assert direct[1]["correction"] == 0.0  # refusable with NIL


def test_total():
    s = {"format": 1.0, "refuse_iou": 0.5, "explain": 0.25, "correction": 0.0}
    # 1 x 1 + 2 x 0.5 + 0.5 x 0.25 = 2.125 (correction has no weight)
    assert rewards.total(s, {"format": 1, "refuse_iou": 2, "explain": 0.5}) == pytest.approx(2.125)
    assert rewards.total([s, s], {"format": 1.0}) == [1.0, 1.0]
    with pytest.raises(ValueError, match="unknown reward"):
        rewards.total(s, {"accuracy": 1.0})


def test_parse_completion_last_answer_and_units():
    p = parse_completion("<answer>1 to 2</answer><answer>3.5 SECONDS TO 7 seconds</answer>")
    assert p.span == (3.5, 7.0) and p.relevant and not p.well_formed


def test_prompt_template_round_trip():
    from pipeline.core.prompt import INSTRUCTION, build_messages

    msgs = build_messages("  a red circle moves left \n")
    assert msgs[0]["content"][0] == {"type": "video"}
    assert msgs[0]["content"][1]["text"] == INSTRUCTION.format(query="a red circle moves left")
    # The example format in the instruction parses to the span it shows.
    assert parse_completion(full(format_span(12.544, 17.826))).span == (12.54, 17.83)
