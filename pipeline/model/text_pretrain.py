"""Text-only copy-and-compare pretraining of the tiny decoder (before the warm start).

The `verify` think (pipeline.model.make.reference_completion) asks the decoder to restate
the query as a plain phrase ("Asked: A."), name what the video shows ("Seen: T,") and
decide whether the two agree (" from" … or " not that."). Measured on the warm-started
tiny model (docs/MODEL.md), the text-only parts fail first: it restated the query
exactly in 24/77 held-out records and its decision followed its own Asked-vs-Seen text
in only 46/77. Both parts need no video, and without video tokens a step is several
times cheaper, so they are taught here on their own, from the train records' text:

* the prompt is the real chat prompt with the video placeholder taken out;
* the completion is ``<think>Asked: A. Seen: T, D`` where T is A itself (D = " from")
  or another phrase of the same video (D = " not"), preferring the one-edit neighbour
  (a hard-irrelevant query's truth, or the asked phrase of a refusal of this event);
* the loss covers "<think>Asked: A." and D only: T cannot be known without the video,
  and the warm start teaches it from the frames.

The hub model needs none of this (it reads and compares text already).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence

from pipeline.model.targets import verify_phrases
from pipeline.riq.schema import RiqRecord

VISION_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"


def examples(records: Sequence[RiqRecord], seed: int) -> list[tuple[str, str, str, bool]]:
    """(query, asked phrase, seen phrase, agree) pairs: one agreeing and one not per record with phrases."""

    phrases = verify_phrases(records)
    by_video: dict[str, set[str]] = {}
    neighbours: dict[tuple[str, str], set[str]] = {}
    for r in records:
        if r.id not in phrases:
            continue
        asked, seen = phrases[r.id]
        by_video.setdefault(r.video, set()).update((asked, seen))
        if asked != seen:  # a refusal one edit (or a few) away from a true event: both directions
            neighbours.setdefault((r.video, asked), set()).add(seen)
            neighbours.setdefault((r.video, seen), set()).add(asked)
    rng = random.Random(f"{seed}:text_pretrain")
    out = []
    for r in records:
        if r.id not in phrases:
            continue
        asked = phrases[r.id][0]
        out.append((r.problem, asked, asked, True))
        near = sorted(neighbours.get((r.video, asked), set()) - {asked})
        other = near or sorted(by_video[r.video] - {asked})
        if other:
            out.append((r.problem, asked, rng.choice(other), False))
    return out


class TextCollator:
    """(query, asked, seen, agree) -> a text-only batch whose labels cover the restatement and the decision."""

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer

    def _prompt_ids(self, query: str) -> list[int]:
        from pipeline.model.video_inputs import prompt_text

        text = prompt_text(self.processor, query).replace(VISION_PLACEHOLDER, "")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, features: list[dict]) -> dict:
        import torch

        tok = self.tokenizer
        rows = []
        for f in features:
            # Split at spaces, where Qwen's pre-tokenizer splits anyway, so the pieces tokenize as the whole does.
            pieces = [(self._prompt_ids(f["query"]), False),
                      (tok(f"<think>Asked: {f['asked']}.", add_special_tokens=False)["input_ids"], True),
                      (tok(f" Seen: {f['seen']},", add_special_tokens=False)["input_ids"], False),
                      (tok(" from" if f["agree"] else " not", add_special_tokens=False)["input_ids"], True)]
            ids = [i for p, _ in pieces for i in p]
            labels = [i if keep else -100 for p, keep in pieces for i in p]
            rows.append((ids, labels))
        width = max(len(ids) for ids, _ in rows)
        pad = tok.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def pretrain_text(model, processor, records: Sequence[RiqRecord], *, epochs: float, learning_rate: float,
                  batch_size: int, seed: int) -> dict:
    """Train the decoder on :func:`examples` with transformers' Trainer; return a summary."""
    import torch
    from transformers import Trainer, TrainingArguments

    data = [{"query": q, "asked": a, "seen": s, "agree": ok} for q, a, s, ok in examples(records, seed)]
    if not data:
        return {"examples": 0, "steps": 0}
    with tempfile.TemporaryDirectory(prefix="text_pretrain_") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
            learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
            max_grad_norm=1.0, logging_steps=50, save_strategy="no", report_to="none", seed=seed, data_seed=seed,
            bf16=False, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
            remove_unused_columns=False, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=TextCollator(processor))
        out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "examples": len(data),
        "steps": trainer.state.global_step,
        "train_loss": round(float(out.training_loss), 4),
        "last_logged_loss": round(float(losses[-1]), 4) if losses else None,
    }
