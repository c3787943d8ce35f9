"""`rarft predict --model DIR VIDEO "query"`: one answer for a video the pipeline has not seen.

VIDEO is a raw video file (frames are sampled and resized by
``pipeline.data.frames.extract_video`` with the ``frames`` params, exactly as the
extract_frames stage would) or a frames ``.npz`` file from the cache. The answer
is the model's greedy completion, parsed with the training parser: a span, or a
refusal with its explanation and corrected query.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.core.io import InputError
from pipeline.core.params import FramesParams
from pipeline.core.prompt import is_nil, parse_completion


def load_video(path: str | Path, frames: FramesParams):
    """VideoFrames from a frames ``.npz`` or, for any other file, by extracting it now."""
    from pipeline.core.frames_cache import load_frames
    from pipeline.data.frames import extract_video

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found")
    return load_frames(path) if path.suffix == ".npz" else extract_video(path, frames)


def describe(completion: str, duration: float | None) -> dict:
    """The parsed answer: ``{"relevant", "span", "explanation", "correction", "well_formed", "completion"}``."""
    p = parse_completion(completion)
    refused = p.answer is not None and p.span is None
    return {
        "relevant": p.span is not None if p.answer is not None else None,
        "span": list(p.span) if p.span else None,
        "explanation": p.answer if refused else None,
        "correction": None if p.correction is None or is_nil(p.correction) else p.correction,
        "well_formed": p.well_formed,
        "duration": duration,
        "completion": completion,
    }


def render(answer: dict) -> str:
    """Human-readable lines for the terminal."""
    if answer["relevant"]:
        s, e = answer["span"]
        return f"{s:.2f} to {e:.2f}"
    if answer["relevant"] is False:
        return f"refused: {answer['explanation']}\ncorrection: {answer['correction'] or '(none)'}"
    return f"no answer (the completion has no <answer>): {answer['completion']!r}"


def predict_video(model_dir: str | Path, video: str | Path, queries: Sequence[str], frames: FramesParams | None = None,
                  max_new_tokens: int = 128, num_threads: int = 1) -> list[dict]:
    """Greedy answers of the model in ``model_dir`` to each query on one video."""
    import torch

    from pipeline.evaluate.inference import _generation_kwargs
    from pipeline.model.video_inputs import batch_inputs, load_policy, prompt_text

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir}: not a saved model (no config.json)")
    if not queries or not all(q.strip() for q in queries):
        raise InputError("query: empty")
    vf = load_video(video, frames or FramesParams())
    model, processor = load_policy(model_dir)
    if torch.cuda.is_available():
        model = model.to("cuda")
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        model.eval()
        prompts = [prompt_text(processor, q) for q in queries]
        inputs = batch_inputs(processor, prompts, [vf] * len(prompts))
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        with torch.inference_mode():
            out = model.generate(**inputs, **_generation_kwargs(model, max_new_tokens))
        texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        torch.set_num_threads(threads)
    duration = (vf.meta or {}).get("duration")
    return [{"video": str(video), "query": q, **describe(t, duration)} for q, t in zip(queries, texts)]
