"""Stage make_model: the base policy in ``models/base`` (a ``save_pretrained`` folder).

Two sources (``model.source``):

- ``hub``: snapshot a Hugging Face repo (pinned ``revision``) or copy a local
  directory, so training never needs the network.
- ``tiny``: build a small Qwen2.5-VL (:mod:`pipeline.model.tiny`) with a tokenizer
  trained on the RIQ train text, then give it a short supervised warm start on
  reference completions. A random model never writes the output format, so GRPO
  would see no reward variance; the warm start stands in for the instruction
  tuning a hub model already has. It is deliberately short (see docs/MODEL.md):
  the base must write the format but leave answer-vs-refuse and spans to GRPO.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.frames_cache import frames_file
from pipeline.core.io import InputError, atomic_dir, write_json
from pipeline.core.params import FramesParams, ModelParams, WarmStartParams
from pipeline.core.prompt import parse_completion
from pipeline.model.video_inputs import IGNORE_INDEX
from pipeline.model.targets import (
    reference_completion,
    tokenizer_corpus,
    verify_phrases,
)
from pipeline.riq.schema import RiqRecord

SUMMARY_FILE = "make_model.json"


# --------------------------------------------------------------------------- hub
def snapshot_hub(hub_id: str, revision: str | None, out_dir: str | Path) -> Path:
    """Copy a local model directory, or download a hub snapshot, into ``out_dir``."""
    out_dir = Path(out_dir)
    src = Path(hub_id)
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise InputError(f"{src}: model.hub_id: not a save_pretrained folder (no config.json)")
        shutil.copytree(src, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", ".cache"))
        return out_dir
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=hub_id, revision=revision, local_dir=str(out_dir))
    shutil.rmtree(out_dir / ".cache", ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------- warm start
class SFTCollator:
    """Feature dicts ``{"problem", "frames", "completion"}`` -> a Qwen2.5-VL batch with completion-only labels."""

    def __init__(self, processor, cache_size: int = 64, look_weight: float = 1.0):
        from pipeline.core.frames_cache import load_frames

        self.processor = processor
        self.look_weight = look_weight
        self._load = functools.lru_cache(maxsize=cache_size)(load_frames)

    def __call__(self, features: list[dict]) -> dict:
        from pipeline.model.video_inputs import batch_inputs, prompt_text

        batch = batch_inputs(
            self.processor,
            [prompt_text(self.processor, f["problem"]) for f in features],
            [self._load(f["frames"]) for f in features],
            [f["completion"] for f in features],
        )
        batch.pop("completion_mask")
        if self.look_weight != 1.0 and any(f.get("look_at") is not None for f in features):
            batch["loss_weights"] = self._weights(features, batch)
        return dict(batch)

    def _weights(self, features: list[dict], batch):
        """1 on every label, ``look_weight`` on the look think's yes/no token (its char offset ``look_at``)."""
        weights = (batch["labels"] != IGNORE_INDEX).float()
        tok = self.processor.tokenizer
        for row, f in enumerate(features):
            if f.get("look_at") is None:
                continue
            first = int((batch["labels"][row] != IGNORE_INDEX).nonzero()[0])
            for at in f["look_at"]:
                # Qwen's pre-tokenizer splits before the space of " yes", so the prefix's tokens are the completion's first k.
                k = len(tok(f["completion"][:at], add_special_tokens=False)["input_ids"])
                weights[row, first + k] = self.look_weight
        return weights


def weighted_trainer():
    """transformers' Trainer whose loss honours a batch's ``loss_weights`` (per-token weights on the
    labels, normalised by their sum); batches without them get the model's own loss."""
    import torch.nn.functional as F
    from transformers import Trainer

    class _Trainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("loss_weights", None)
            if weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            out = model(**inputs)
            logits, target, w = out.logits[:, :-1].float(), labels[:, 1:], weights[:, 1:]
            ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
            loss = (ce * w).sum() / w.sum().clamp(min=1.0)
            return (loss, out) if return_outputs else loss

    return _Trainer


def _features(records: Sequence[RiqRecord], frames_dir, think: str, context: Sequence[RiqRecord] | None = None,
              logs: dict | None = None, look_attributes: Sequence[str] = ("color",), look_names: bool = False) -> list[dict]:
    """Warm-start examples of ``records``. The verify phrases are read from ``context`` (default
    ``records``): all train records of the same videos, because an answerable record's phrase
    comes from a refusal of its video, which the taught subset may not hold."""
    phrases = verify_phrases(records if context is None else context) if think in ("verify", "look") else {}
    from pipeline.model.targets import look_checks, look_text
    out = []
    for r in records:
        path = frames_file(r, frames_dir)
        if not path.is_file():
            raise InputError(f"{path}: record {r.id}: frames_path: frames file not found")
        look = look_checks(r, (logs or {}).get(r.video), look_attributes, look_names) if think == "look" else None
        completion = reference_completion(r, phrases.get(r.id), look)
        # Where the yes/no words of the look think start (the SFT loss can weight those tokens).
        look_at = None
        if look and r.id in phrases:
            think_text, offsets = look_text(phrases[r.id][0], look)
            look_at = [completion.index(think_text) + k for k in offsets]
        out.append({"id": r.id, "problem": r.problem, "frames": str(path), "completion": completion, "look_at": look_at})
    return out


@contextlib.contextmanager
def frozen(*modules):
    """No gradient for ``modules`` inside the block (restored after)."""
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m in modules:
            m.requires_grad_(True)


def split_holdout(records: Sequence[RiqRecord], n_videos: int, seed: int) -> tuple[list[RiqRecord], list[RiqRecord]]:
    """Hold out whole videos (never seen in the warm start) to measure what it taught."""
    videos = sorted({r.video for r in records})
    n = min(n_videos, max(0, len(videos) - 1))
    held = set(random.Random(seed).sample(videos, n))
    return [r for r in records if r.video not in held], [r for r in records if r.video in held]


def balance(records: Sequence[RiqRecord], answerable_fraction: float, seed: int) -> list[RiqRecord]:
    """Subsample the larger class so answerable records make up ``answerable_fraction`` (order kept)."""
    ans = [r for r in records if r.task_type == "answerable"]
    ref = [r for r in records if r.task_type != "answerable"]
    if not ans or not ref:
        return list(records)
    want_ref = max(1, int(len(ans) * (1 - answerable_fraction) / answerable_fraction + 0.5))
    rng = random.Random(seed)
    if want_ref <= len(ref):
        ref = rng.sample(ref, want_ref)
    else:
        ans = rng.sample(ans, max(1, int(len(ref) * answerable_fraction / (1 - answerable_fraction) + 0.5)))
    keep = {r.id for r in ans + ref}
    return [r for r in records if r.id in keep]


def warm_start_records(records: Sequence[RiqRecord], refusable_kinds: Sequence[str], answerable_fraction: float,
                       seed: int) -> list[RiqRecord]:
    """The warm-start set: every answerable record and the refusable kinds the base is taught, balanced."""
    taught = [r for r in records if r.task_type == "answerable" or r.kind in refusable_kinds]
    return balance(taught, answerable_fraction, seed)


def warm_start(model, processor, records: Sequence[RiqRecord], frames_dir, params: WarmStartParams, seed: int,
               context: Sequence[RiqRecord] | None = None, logs: dict | None = None) -> dict:
    """Supervised fine-tuning on reference completions (loss on completion tokens only) with transformers' Trainer.
    ``context``: the records the verify phrases are read from (see :func:`_features`)."""
    import torch
    from transformers import TrainingArguments

    with tempfile.TemporaryDirectory(prefix="warm_start_") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=params.batch_size,
            num_train_epochs=params.epochs,
            learning_rate=params.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=params.warmup_ratio,
            weight_decay=0.0,
            max_grad_norm=1.0,
            logging_steps=params.logging_steps,
            save_strategy="no",
            report_to="none",
            seed=seed,
            data_seed=seed,
            bf16=False,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
        )
        trainer = weighted_trainer()(
            model=model,
            args=args,
            train_dataset=_features(records, frames_dir, params.think, context, logs, params.look_attributes,
                                    params.look_names),
            data_collator=SFTCollator(processor, look_weight=params.look_weight),
        )
        out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "train_loss": round(float(out.training_loss), 4),
        "first_logged_loss": round(float(losses[0]), 4) if losses else None,
        "last_logged_loss": round(float(losses[-1]), 4) if losses else None,
    }


def greedy_check(model, processor, records: Sequence[RiqRecord], frames_dir, max_new_tokens: int, batch_size: int = 16) -> dict:
    """Greedy completions on held-out records: format rate and answer-vs-refuse accuracy."""
    import torch

    from pipeline.core.frames_cache import load_frames
    from pipeline.model.video_inputs import batch_inputs, prompt_text

    model.eval()
    texts: list[str] = []
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        batch = batch_inputs(
            processor,
            [prompt_text(processor, r.problem) for r in chunk],
            [load_frames(frames_file(r, frames_dir)) for r in chunk],
        ).to(model.device)
        with torch.no_grad():
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        texts += processor.batch_decode(gen[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    parsed = [parse_completion(t) for t in texts]
    answerable = [r.task_type == "answerable" for r in records]
    correct = [p.relevant == a for p, a in zip(parsed, answerable)]
    n = max(1, len(records))
    return {
        "n": len(records),
        "format_rate": round(sum(p.well_formed for p in parsed) / n, 4),
        "decision_accuracy": round(sum(correct) / n, 4),
        "says_relevant_rate": round(sum(p.relevant for p in parsed) / n, 4),
        "answerable_share": round(sum(answerable) / n, 4),
        "examples": [{"id": r.id, "task_type": r.task_type, "completion": t} for r, t in list(zip(records, texts))[:4]],
    }


# --------------------------------------------------------------------------- stage
def build_tiny(params: ModelParams, records: Sequence[RiqRecord], frames: FramesParams | None = None):
    """(model, processor): tokenizer trained on the records' text, seeded random weights."""
    from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer

    tokenizer = train_tokenizer(tokenizer_corpus(records), params.tiny.vocab_size)
    processor = build_processor(tokenizer, frames)
    return build_tiny_model(tokenizer, params.tiny), processor


def train_event_logs(path: str | Path, records: Sequence[RiqRecord]) -> dict | None:
    """The synthetic event logs of the train records' videos (by video id), or None when the file
    has none of them (a source without event logs). Only train videos: the logs of the
    evaluation videos sit in the same file and must not reach the model."""
    from pipeline.core.events import read_event_logs

    videos = {r.video for r in records}
    logs = {v: log for v, log in read_event_logs(path).items() if v in videos}
    return logs or None


def make_model(
    params: ModelParams,
    train_records: Sequence[RiqRecord],
    frames_dir: str | Path | None,
    out_dir: str | Path,
    *,
    frames: FramesParams | None = None,
    logs: dict | None = None,
) -> dict:
    """Write the base policy to ``out_dir`` (replaced as a whole) and return a summary.
    ``logs``: synthetic event logs by video id (dense targets of the vision pretraining), or None."""
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        if params.source == "hub":
            snapshot_hub(params.hub_id, params.revision, tmp)
            summary = {"source": "hub", "hub_id": params.hub_id, "revision": params.revision}
        else:
            summary = _make_tiny(params, train_records, frames_dir, tmp, frames, logs)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        write_json(tmp / SUMMARY_FILE, summary)
    return summary


def _make_tiny(params: ModelParams, records, frames_dir, out: Path, frames: FramesParams | None, logs: dict | None = None) -> dict:
    import torch

    if not records:
        raise InputError("make_model: no train records for the tiny model's tokenizer and warm start")
    ws = params.warm_start
    torch.manual_seed(params.tiny.seed)
    model, processor = build_tiny(params, records, frames)
    fit, held = split_holdout(records, ws.holdout_videos, params.tiny.seed)
    summary = {
        "source": "tiny",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(processor.tokenizer),
        "train_records": len(fit),
        "holdout_records": len(held),
    }
    vp = params.vision_pretrain
    if vp.steps > 0:
        from pipeline.model.vision_pretrain import pretrain_vision, word_auc

        before = word_auc(model, processor, held, frames_dir, fit, vp.max_video_share) if held else None
        summary["vision_pretrain"] = pretrain_vision(
            model, processor, fit, frames_dir, steps=vp.steps, learning_rate=vp.learning_rate,
            batch_size=vp.batch_size, max_video_share=vp.max_video_share, seed=params.tiny.seed, logs=logs,
            every_token=vp.every_token, located=vp.located, logs_all_words=vp.all_log_words,
            shift=vp.shift, colour_everywhere=vp.colour_everywhere, whole_object=vp.whole_object,
            recolour_objects=vp.recolour_objects, clip_frames=vp.clip_frames)
        if held:
            summary["vision_pretrain"]["holdout_word_auc_before"] = before
            summary["vision_pretrain"]["holdout_word_auc"] = word_auc(
                model, processor, held, frames_dir, fit, vp.max_video_share)
    tp = params.text_pretrain
    if tp.epochs > 0:
        from pipeline.model.text_pretrain import pretrain_text

        with frozen(model.get_input_embeddings()):  # what the vision tower was aligned to
            summary["text_pretrain"] = pretrain_text(model, processor, fit, epochs=tp.epochs, learning_rate=tp.learning_rate,
                                                     batch_size=tp.batch_size, seed=params.tiny.seed)
    if ws.epochs > 0:
        sft = warm_start_records(fit, ws.refusable_kinds, ws.answerable_fraction, params.tiny.seed)
        keep = [m for m, on in ((model.model.visual, ws.freeze_vision), (model.get_input_embeddings(), ws.freeze_embeddings)) if on]
        with frozen(*keep):
            summary["warm_start"] = warm_start(model, processor, sft, frames_dir, ws, params.tiny.seed, context=fit, logs=logs)
        summary["warm_start"]["records"] = len(sft)
        summary["warm_start"]["answerable"] = sum(r.task_type == "answerable" for r in sft)
    if held and ws.eval_records > 0:
        sample = random.Random(params.tiny.seed).sample(held, min(ws.eval_records, len(held)))
        summary["holdout"] = greedy_check(model, processor, sample, frames_dir, ws.max_new_tokens)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return summary


def summary_line(summary: dict) -> str:
    keep = {k: summary[k] for k in ("source", "seconds", "parameters", "train_records") if k in summary}
    if "holdout" in summary:
        keep.update({k: summary["holdout"][k] for k in ("format_rate", "decision_accuracy", "says_relevant_rate")})
    return json.dumps(keep)
