"""`rarft predict --model DIR VIDEO "query"` on a real synthetic video (rendered and decoded by
ffmpeg) with a real tiny Qwen2.5-VL built here; and the records mode kept under the same command."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.frames_cache import save_frames
from pipeline.core.params import FramesParams, SyntheticParams, TinyModelParams
from pipeline.data.frames import extract_video
from pipeline.data.synthetic import render_dataset
from pipeline.evaluate import inference
from pipeline.evaluate.predict import describe, render
from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer
from pipeline.model.video_inputs import load_policy
from pipeline.riq.schema import RiqRecord

MAX_NEW = 12
QUERY = "the small red square moves left"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("predict")
    syn = SyntheticParams(n_videos=1, min_duration=4.0, max_duration=5.0, min_events=1, max_events=2, seed=5)
    logs, failures = render_dataset(syn, root / "raw", workers=1)
    assert not failures
    video = next((root / "raw" / "videos").glob("*.mp4"))
    frames = FramesParams(fps=1.0)
    npz = save_frames(root / f"{video.stem}.npz", extract_video(video, frames))
    (root / "params.yaml").write_text("frames:\n  fps: 1.0\n")

    tokenizer = train_tokenizer([QUERY, "No segment is relevant: 1.00 to 2.00 <think> </think>"] * 20, vocab_size=300)
    model = build_tiny_model(tokenizer, TinyModelParams(vocab_size=300, seed=0))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights so the greedy output depends on the input (see test_evaluate._diversify)
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
    model.save_pretrained(root / "model")
    build_processor(tokenizer).save_pretrained(root / "model")
    return {"root": root, "video": video, "npz": npz, "model": root / "model", "params": root / "params.yaml", "duration": logs[0]}


def _run(args):
    res = CliRunner().invoke(app, ["predict", *args])
    assert res.exit_code == 0, res.output
    return res.stdout


def _json(args) -> dict:
    # Loading progress bars and library warnings go to stderr; the answer is stdout's last line.
    return json.loads(_run(args).strip().splitlines()[-1])


def test_predict_raw_video_equals_frames_file_and_the_evaluation_path(setup):
    common = ["--model", str(setup["model"]), "--max-new-tokens", str(MAX_NEW), "--json"]
    raw = _json([str(setup["video"]), QUERY, "--params", str(setup["params"]), *common])
    cached = _json([str(setup["npz"]), QUERY, *common])
    assert raw == {**cached, "video": str(setup["video"])}
    assert set(raw) == {"video", "query", "relevant", "span", "explanation", "correction", "well_formed", "duration", "completion"}
    assert raw["query"] == QUERY and raw["duration"] > 0 and raw["completion"]
    # The same completion as evaluation's grouped batch path on that frames file.
    rec = RiqRecord(id="q", video=setup["video"].stem, video_path=str(setup["video"]), frames_path=str(setup["npz"]),
                    duration=raw["duration"], problem=QUERY, task_type="answerable", kind="answerable",
                    gt_answers=[{"answer": [0.5, 1.5]}], reference_answer="0.50 to 1.50", contrast_answer="x", source="t")
    model, processor = load_policy(setup["model"])
    (pred,) = inference.generate(model, processor, [rec], batch_size=1, max_new_tokens=MAX_NEW, progress=False)
    assert pred["completion"] == raw["completion"]
    # Plain output: one of the three renderings.
    text = _run([str(setup["npz"]), QUERY, "--model", str(setup["model"]), "--max-new-tokens", str(MAX_NEW)])
    assert text.strip().endswith(render(cached).strip())


def test_describe_and_render():
    span = describe("<think>t</think><answer>12.54 to 17.83</answer><correction>NIL</correction>", 30.0)
    assert (span["relevant"], span["span"], span["correction"], span["well_formed"]) == (True, [12.54, 17.83], None, True)
    assert render(span) == "12.54 to 17.83"
    refusal = describe("<think>t</think><answer>No segment is relevant: it is blue.</answer><correction>a blue square</correction>", 30.0)
    assert (refusal["relevant"], refusal["explanation"], refusal["correction"]) == (False, "No segment is relevant: it is blue.", "a blue square")
    assert render(refusal) == "refused: No segment is relevant: it is blue.\ncorrection: a blue square"
    garbage = describe("blah", None)
    assert garbage["relevant"] is None and render(garbage).startswith("no answer")


def test_predict_usage_errors(setup, tmp_path):
    res = CliRunner().invoke(app, ["predict", "--model", str(setup["model"])])
    assert res.exit_code == 2 and "either VIDEO" in res.output
    res = CliRunner().invoke(app, ["predict", str(setup["video"]), "--model", str(setup["model"])])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "none.mp4"), QUERY, "--model", str(setup["model"])])
    assert res.exit_code == 2 and "none.mp4: not found" in res.output
    res = CliRunner().invoke(app, ["predict", str(setup["npz"]), QUERY, "--model", str(tmp_path)])
    assert res.exit_code == 2 and "not a saved model" in res.output
