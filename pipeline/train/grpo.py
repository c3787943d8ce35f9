"""TRL's GRPOTrainer, taught to feed real video to Qwen2.5-VL.

TRL 1.16 builds multimodal inputs only from ``image``/``images`` columns. This
subclass keeps all of TRL's GRPO logic (sampling, rewards, advantages, loss,
KL, logging) and changes only where the inputs come from:

* each dataset row carries ``prompt`` (chat text from
  :func:`pipeline.model.video_inputs.prompt_text`) and ``frames_path`` (a cached
  frames file); the frames are loaded through a small LRU cache and encoded once
  per generation batch by :func:`pipeline.model.video_inputs.batch_inputs`, the one
  place that passes the true sampling fps (``second_per_grid_ts``) and the
  multimodal token-type ids;
* those video fields then go into generation, the old/reference log-prob
  forwards and the loss forward, one per-sample entry in the batch dict
  (``video_inputs``) so TRL's shuffle/split of a generation batch keeps every
  completion with its own video.

The overrides below are in the order one batch meets them (Step 1: the sampler's
row order ... Step 6: the loss forward; Step 7, resume, runs once per run).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from trl import GRPOTrainer

from pipeline.model.video_inputs import batch_inputs

VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def _default_loader(path: str):
    from pipeline.core.frames_cache import load_frames

    return load_frames(path)


def split_video_batch(batch, device) -> list[dict]:
    """One dict per sample from a ``batch_inputs`` batch (one video per prompt).

    ``prompt_ids``/``mm_token_type_ids`` lose their padding (TRL re-pads them);
    ``pixel_values_videos`` rows are cut per video by ``video_grid_thw``.
    """
    rows = batch["video_grid_thw"].prod(-1).tolist()
    pixels = torch.split(batch["pixel_values_videos"], rows, dim=0)
    out = []
    for i, keep in enumerate(batch["attention_mask"].bool()):
        out.append(
            {
                "prompt_ids": batch["input_ids"][i][keep].tolist(),
                "mm_token_type_ids": batch["mm_token_type_ids"][i][keep].to(device),
                "pixel_values_videos": pixels[i].to(device),
                "video_grid_thw": batch["video_grid_thw"][i : i + 1].to(device),
                "second_per_grid_ts": batch["second_per_grid_ts"][i : i + 1].to(device),
            }
        )
    return out


def merge_video_fields(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([s[k] for s in samples], dim=0) for k in VIDEO_KEYS}


def align_mm_token_type_ids(samples: list[dict], input_ids: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
    """Token-type ids laid out like TRL's ``[pad.. prompt | completion ..pad]`` rows (completion = text = 0)."""
    prompt_len = input_ids.size(1) - logits_to_keep
    mm = torch.zeros_like(input_ids)
    for i, s in enumerate(samples):
        row = s["mm_token_type_ids"]
        mm[i, prompt_len - row.numel() : prompt_len] = row
    return mm


class VideoGRPOTrainer(GRPOTrainer):
    """GRPO on (prompt, video) rows; see the module docstring for what differs from TRL."""

    def __init__(self, *args, frames_loader: Callable | None = None, frames_cache_size: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        # Videos are decoded once per process and re-used across the num_generations copies and epochs.
        self._load_frames = functools.lru_cache(maxsize=frames_cache_size)(frames_loader or _default_loader)
        # The per-sample video fields of the batch being processed, and (prompt text, frames) per sample
        # for vLLM rollouts. TRL calls steps 3-5 with its own arguments only, so they read the batch's videos
        # here; only _batch_videos sets them, for exactly the span of one batch (step 2) or micro-batch (step 6).
        self._video: list[dict] | None = None
        self._rollout: list[tuple] | None = None
        # TRL suppresses only the image placeholder; a sampled video/vision token in a rollout would desync
        # placeholder tokens and vision features in every later forward, so none may be generated.
        config = self.accelerator.unwrap_model(self.model).config
        vision = [getattr(config, k, None) for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")]
        suppress = sorted(set(self.generation_kwargs.get("suppress_tokens") or []) | {t for t in vision if t is not None})
        self.generation_kwargs["suppress_tokens"] = suppress
        self.generation_config.suppress_tokens = suppress

    @contextlib.contextmanager
    def _batch_videos(self, samples: list[dict], rollout: list[tuple] | None = None):
        self._video, self._rollout = samples, rollout
        try:
            yield
        finally:
            self._video, self._rollout = None, None

    # Step 1 (resume): TRL's RepeatSampler draws each epoch's order from one generator stream, which a
    # resumed run restarts at epoch 0, so a run resumed after an epoch boundary would replay epoch 0's order.
    # Seeding by (seed, epoch) in set_epoch (transformers calls it before every epoch, also on resume)
    # gives every epoch the same order whether or not the run was interrupted.
    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        base_seed = sampler.seed if sampler.seed is not None else self.args.seed

        def set_epoch(epoch: int) -> None:
            sampler.generator.manual_seed(base_seed + epoch)

        sampler.set_epoch = set_epoch
        return sampler

    # Step 2: encode the batch's videos before TRL runs, and attach them to the batch it returns.
    def _generate_and_score_completions(self, inputs):
        # The batch holds num_generations copies of each prompt: encode each (prompt, video) once.
        keys = [(x["prompt"], x["frames_path"]) for x in inputs]
        unique = list(dict.fromkeys(keys))
        videos = [self._load_frames(path) for _, path in unique]
        batch = batch_inputs(self.processing_class, [prompt for prompt, _ in unique], videos)
        encoded = dict(zip(unique, split_video_batch(batch, self.accelerator.device), strict=True))
        samples = [encoded[k] for k in keys]
        frames = dict(zip(unique, videos, strict=True))
        rollout = [(prompt, frames[(prompt, path)]) for prompt, path in keys] if self.use_vllm else None
        with self._batch_videos(samples, rollout):
            output = super()._generate_and_score_completions(inputs)
        # A list, one entry per completion: TRL's shuffle_sequence_dict / split_tensor_dict move it in
        # step with prompt_ids, so each micro-batch of the loss (step 6) gets its own videos.
        output["video_inputs"] = samples
        return output

    # Step 3: TRL's tokenization handles only images; hand it the video prompt ids and fields instead.
    # Tensors go to generate() as they are; mm_token_type_ids as per-prompt lists so TRL left-pads them
    # exactly like the prompt ids.
    def _tokenize_prompts(self, prompts):
        if self._video is None:
            return super()._tokenize_prompts(prompts)
        fields = merge_video_fields(self._video)
        fields["mm_token_type_ids"] = [s["mm_token_type_ids"].tolist() for s in self._video]
        return [s["prompt_ids"] for s in self._video], None, fields

    # Step 4 (vLLM, colocate mode; needs a GPU and vLLM, not exercised by the CPU tests): TRL hands vLLM
    # images only. vLLM gets each prompt's text, whose single <|video_pad|> it expands itself, and the cached
    # frames with their true fps (do_sample_frames off: they are already sampled); the log-prob forwards keep
    # this trainer's prompt ids and video tensors, built from the same frames and fps.
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if not (self.use_vllm and self._rollout is not None):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if self.vllm_mode != "colocate":
            raise ValueError("video rollouts with vLLM are implemented for vllm_mode='colocate' only")
        from trl.generation.vllm_generation import extract_logprobs
        from vllm import SamplingParams

        from pipeline.model.video_inputs import video_metadata

        if self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()
            self._last_loaded_step = self.state.global_step
        sampling = SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or -1,
                                  min_p=self.min_p or 0.0, repetition_penalty=self.repetition_penalty,
                                  max_tokens=self.max_completion_length, logprobs=0)
        rows = [{"prompt": prompt, "multi_modal_data": {"video": (video.frames, video_metadata(video))},
                 "mm_processor_kwargs": {"do_sample_frames": False}} for prompt, video in self._rollout]
        outputs = self.vllm_generation.llm.generate(rows, sampling_params=sampling, use_tqdm=False)
        completion_ids = [list(out.token_ids) for request in outputs for out in request.outputs]
        logprobs, _ = extract_logprobs(outputs)
        return completion_ids, [[lp[0] for lp in seq] for seq in logprobs] if logprobs is not None else None

    # Step 5: every log-prob forward (old, reference, loss) gets the videos and the token-type ids
    # aligned to TRL's padded layout; without the ids Qwen2.5-VL silently falls back to 1-D positions.
    # TRL chunks by batch_size, so chunk here and hand TRL one chunk at a time with its own videos.
    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, compute_aux_loss=False, **kwargs
    ):
        if self._video is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **kwargs
            )
        kwargs.pop("mm_token_type_ids", None)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            samples = self._video[start:end]
            chunk_ids = input_ids[start:end]
            lp, ent, ax = super()._get_per_token_logps_and_entropies(
                functools.partial(model, **merge_video_fields(samples)),
                chunk_ids,
                attention_mask[start:end],
                logits_to_keep,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                mm_token_type_ids=align_mm_token_type_ids(samples, chunk_ids, logits_to_keep),
                **kwargs,
            )
            logps.append(lp)
            entropies.append(ent)
            aux.append(ax)
        return (
            torch.cat(logps, dim=0),
            torch.cat(entropies, dim=0) if compute_entropy else None,
            torch.stack(aux).mean() if compute_aux_loss else None,
        )

    # Step 6: TRL's loss forward reads image keys only; expose this micro-batch's videos to step 5.
    def _compute_loss(self, model, inputs):
        with self._batch_videos(inputs["video_inputs"]):
            return super()._compute_loss(model, inputs)

    # Step 7 (resume): transformers 5.24 saves Qwen2.5-VL checkpoints under the hub key names
    # ("model.layers.*", "visual.*") but Trainer's resume loads them with a plain load_state_dict: every key
    # misses, it only warns, and training "resumes" from the initial weights. from_pretrained maps the
    # names; strict loading makes any other mismatch fail loudly. (DeepSpeed resumes through its own
    # engine checkpoint and does not come here.)
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.model if model is None else model
        if model is not None or not hasattr(target, "config"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(target).from_pretrained(resume_from_checkpoint, dtype=next(target.parameters()).dtype)
        target.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
