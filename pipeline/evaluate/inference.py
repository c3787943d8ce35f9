"""Batched greedy generation for RIQ records: what `evaluate` and `rarft predict` run.

Queries are grouped by video, so each frames file is read once, its video is
preprocessed once (the video tensors of one single-prompt ``batch_inputs`` call
serve every query on that video; only the prompt text is tokenized per query)
and, given the model, run through the vision tower once: the video embeddings
reach ``generate`` as ``mm_encoder_outputs``, transformers' input for pre-encoded
media, instead of ``pixel_values_videos``. Tests check the grouped inputs equal
``batch_inputs`` on the full batch and the completions equal one-by-one
generation. Prompts are left-padded so every row continues from its own prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from pipeline.core.frames_cache import VideoFrames
from pipeline.core.io import InputError
from pipeline.riq.schema import RiqRecord

log = logging.getLogger(__name__)

# A control's change of a video as read from the cache (pipeline.evaluate.controls.blind_frames).
FramesFn = Callable[[VideoFrames], VideoFrames]

# batch_inputs keys that belong to the text side (one row per prompt); every other
# tensor it returns is video-side and is concatenated per video in batch order.
TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def plan_batches(records: Sequence[RiqRecord], batch_size: int) -> list[list[int]]:
    """Record indices in batches, queries of one video adjacent (first-seen video order)."""
    order: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        order.setdefault(rec.frames_path or rec.video, []).append(i)
    flat = [i for idxs in order.values() for i in idxs]
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]


def _load_video(rec: RiqRecord, frames_fn: FramesFn | None = None):
    from pipeline.core.frames_cache import load_frames

    if not rec.frames_path:
        raise InputError(f"record {rec.id}: frames_path: missing (join the records with the frame cache first)")
    path = Path(rec.frames_path)
    try:
        vf = load_frames(path)
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: record {rec.id}: frames_path: cannot read frames ({exc})") from None
    return vf if frames_fn is None else frames_fn(vf)


class VideoCache:
    """Per video: the video-side tensors of one single-prompt ``batch_inputs`` call, its
    number of ``<|video_pad|>`` tokens and, when a model is given, its vision-tower output.
    ``frames_fn`` (a control) transforms each video once, when it is read."""

    def __init__(self, processor, model=None, frames_fn: FramesFn | None = None):
        self.processor = processor
        self.model = model
        self.frames_fn = frames_fn
        self._parts: dict[str, tuple[dict[str, torch.Tensor], int]] = {}

    def get(self, rec: RiqRecord, prompt: str) -> tuple[dict[str, torch.Tensor], int]:
        key = rec.frames_path or rec.video
        if key not in self._parts:
            from pipeline.model.video_inputs import batch_inputs

            enc = batch_inputs(self.processor, [prompt], [_load_video(rec, self.frames_fn)])
            n_tokens = int((enc["input_ids"] == self.processor.video_token_id).sum())
            video = {k: v for k, v in enc.items() if k not in TEXT_KEYS and isinstance(v, torch.Tensor)}
            if self.model is not None:
                device = next(self.model.parameters()).device
                out = self.model.get_video_features(
                    video.pop("pixel_values_videos").to(device), video["video_grid_thw"].to(device), return_dict=True
                )
                video["video_embeds"] = out.pooler_output[0]
            self._parts[key] = (video, n_tokens)
        return self._parts[key]

    def keep_only(self, keys: set[str]) -> None:
        for key in list(self._parts):
            if key not in keys:
                del self._parts[key]


def grouped_inputs(processor, prompts: Sequence[str], recs: Sequence[RiqRecord], cache: VideoCache) -> dict:
    """Model inputs for a batch, preprocessing each distinct video once (via ``cache``)."""
    token = processor.video_token
    texts, video_parts = [], []
    for prompt, rec in zip(prompts, recs):
        video, n_tokens = cache.get(rec, prompt)
        if prompt.count(token) != 1:
            raise InputError(f"record {rec.id}: prompt: expected one {token} placeholder, found {prompt.count(token)}")
        texts.append(prompt.replace(token, token * n_tokens))
        video_parts.append(video)
    enc = processor.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    out["mm_token_type_ids"] = torch.tensor(processor.create_mm_token_type_ids(enc["input_ids"]), dtype=torch.long)
    for key in video_parts[0]:
        if key != "video_embeds":
            out[key] = torch.cat([part[key] for part in video_parts], dim=0)
    if "video_embeds" in video_parts[0]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        embeds = tuple(part["video_embeds"] for part in video_parts)
        out["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=embeds)}
    return out


def _generation_kwargs(model, max_new_tokens: int) -> dict:
    gen = model.generation_config
    pad = gen.pad_token_id if gen.pad_token_id is not None else gen.eos_token_id
    # Hub checkpoints ship sampling defaults (temperature, top_p, ...): clear them so greedy is greedy.
    return dict(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        temperature=None, top_p=None, top_k=None, pad_token_id=pad,
    )


@torch.inference_mode()
def generate(model, processor, records: Sequence[RiqRecord], batch_size: int, max_new_tokens: int,
             progress: bool = True, grouped: bool = True, frames_fn: FramesFn | None = None) -> list[dict]:
    """Greedy completions for ``records`` with a loaded policy, in input order.

    ``frames_fn`` maps each video as read from the cache (a control, e.g. grey frames); the
    grouped path applies it once per video. ``grouped=False`` builds every batch with
    ``batch_inputs`` directly (one video preprocessing per query); it exists to check the
    grouped path against.
    """
    from tqdm.auto import tqdm

    from pipeline.model.video_inputs import batch_inputs, prompt_text

    processor.tokenizer.padding_side = "left"
    model.eval()
    device = next(model.parameters()).device
    gen_kwargs = _generation_kwargs(model, max_new_tokens)
    batches = plan_batches(records, batch_size)
    completions: list[str | None] = [None] * len(records)
    cache = VideoCache(processor, model, frames_fn)
    bar = tqdm(total=len(records), desc="generate", unit="query", disable=not progress)
    for b, idxs in enumerate(batches):
        recs = [records[i] for i in idxs]
        prompts = [prompt_text(processor, r.problem) for r in recs]
        if grouped:
            inputs = grouped_inputs(processor, prompts, recs, cache)
            upcoming = batches[b + 1] if b + 1 < len(batches) else []
            cache.keep_only({records[i].frames_path or records[i].video for i in upcoming})
        else:
            inputs = batch_inputs(processor, prompts, [_load_video(r, frames_fn) for r in recs])
            inputs = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        out = model.generate(**inputs, **gen_kwargs)
        texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(idxs, texts):
            completions[i] = text
        bar.update(len(idxs))
    bar.close()
    return [{"id": rec.id, "completion": c} for rec, c in zip(records, completions)]


def predict_runs(model_dir: str | Path, runs: Mapping[str, tuple[Sequence[RiqRecord], FramesFn | None]], batch_size: int = 16,
                 max_new_tokens: int = 96, progress: bool = True, num_threads: int = 0) -> dict[str, list[dict]]:
    """Load the policy in ``model_dir`` once and generate every run: name -> (records, frames_fn).

    Returns name -> ``[{"id", "completion"}]`` in record order. Each run is grouped on its
    own (one read and one vision pass per video of the run). ``num_threads`` > 0 caps
    torch's CPU threads for the call (0 keeps torch's setting).
    """
    from pipeline.model.video_inputs import load_policy

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir}: not a saved model (no config.json)")
    model, processor = load_policy(model_dir)
    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        out = {}
        for name, (recs, fn) in runs.items():
            t0 = time.perf_counter()
            out[name] = generate(model, processor, recs, batch_size, max_new_tokens, progress=progress, frames_fn=fn)
            if name:
                log.info("%s: %s: %d queries in %.1f s", model_dir, name, len(recs), time.perf_counter() - t0)
        return out
    finally:
        torch.set_num_threads(threads)


def predict(model_dir: str | Path, records: Sequence[RiqRecord], batch_size: int = 16, max_new_tokens: int = 96,
            progress: bool = True, num_threads: int = 0) -> list[dict]:
    """Load the policy in ``model_dir`` and return ``[{"id", "completion"}]`` in record order.

    ``num_threads`` > 0 caps torch's CPU threads for the call (0 keeps torch's setting).
    """
    return predict_runs(model_dir, {"": (records, None)}, batch_size, max_new_tokens, progress, num_threads)[""]
