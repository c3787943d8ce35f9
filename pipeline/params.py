"""The single reader of params.yaml.

One frozen pydantic model per section; unknown keys and bad values fail with a
one-line error naming the key (``params.yaml: frames.fps: ...``). Stages load
only through :func:`load_params`, and each dvc.yaml stage declares exactly the
sections it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.io import InputError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- download
class SyntheticParams(Section):
    n_videos: int = Field(240, ge=1, description="Number of synthetic 'shapes world' videos to render.")
    min_duration: float = Field(8.0, gt=0, description="Shortest video, seconds.")
    max_duration: float = Field(30.0, gt=0, description="Longest video, seconds.")
    width: int = Field(160, ge=32, description="Rendered width in pixels (even).")
    height: int = Field(120, ge=32, description="Rendered height in pixels (even).")
    fps: int = Field(10, ge=1, description="Frame rate of the rendered videos.")
    min_events: int = Field(2, ge=1, description="Fewest events per video.")
    max_events: int = Field(4, ge=1, description="Most events per video.")
    seed: int = Field(0, description="Seed of the generator: same seed, byte-identical videos and logs.")

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_duration > self.max_duration:
            raise ValueError("min_duration must be <= max_duration")
        if self.min_events > self.max_events:
            raise ValueError("min_events must be <= max_events")
        return self


class DownloadParams(Section):
    source: Literal["synthetic"] = Field("synthetic", description="Which source fills data/raw/ (later: http, youtube, local).")
    workers: int = Field(0, ge=0, description="Parallel render/download workers; 0 = one per CPU core.")
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams, description="Settings of the offline synthetic source.")


# --------------------------------------------------------------------------- frames
class FramesParams(Section):
    fps: float = Field(2.0, gt=0, description="Target sampling rate in frames per second (Qwen2.5-VL default 2.0).")
    min_frames: int = Field(4, ge=1, description="Fewest frames kept per video (rounded up to an even count).")
    max_frames: int = Field(768, ge=2, description="Most frames kept per video (rounded down to an even count).")
    min_pixels: int = Field(3136, gt=0, description="Lower bound of H*W per frame (qwen-vl-utils min_pixels).")
    max_pixels: int = Field(602112, gt=0, description="Upper bound of H*W per frame (qwen-vl-utils VIDEO_MAX_PIXELS = 768*28*28).")
    total_pixels: int = Field(200704, gt=0, description="Pixel budget for the whole clip; the per-frame cap is total_pixels / n_frames * 2 (qwen-vl-utils total_pixels).")
    workers: int = Field(0, ge=0, description="Videos decoded in parallel; 0 = one per CPU core.")


# --------------------------------------------------------------------------- riq
class RiqParams(Section):
    source: Literal["synthetic"] = Field("synthetic", description="Where queries come from (later: imported annotation sets).")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of videos held out for the test split (split is by video).")
    hard_per_event: int = Field(1, ge=0, description="Hard-irrelevant queries (1 edit from a true query) generated per event.")
    medium_per_event: int = Field(1, ge=0, description="Medium queries (2 edits) generated per event.")
    easy_per_event: int = Field(0, ge=0, description="Easy queries (3 edits) generated per event.")
    shuffled_per_video: int = Field(1, ge=0, description="Simply-shuffled refusable queries (a query from another video) per video.")
    seed: int = Field(0, description="Seed for query generation and the train/test split.")


# --------------------------------------------------------------------------- model
class TinyModelParams(Section):
    hidden_size: int = Field(64, ge=8, description="Text hidden size of the tiny Qwen2.5-VL.")
    num_hidden_layers: int = Field(2, ge=1, description="Text decoder layers.")
    num_attention_heads: int = Field(4, ge=1, description="Text attention heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Text key/value heads (grouped-query attention).")
    intermediate_size: int = Field(128, ge=8, description="Text MLP width.")
    vision_depth: int = Field(2, ge=1, description="Vision transformer blocks.")
    vision_hidden_size: int = Field(32, ge=8, description="Vision tower width.")
    vision_num_heads: int = Field(2, ge=1, description="Vision attention heads.")
    vocab_size: int = Field(1024, ge=300, description="Size of the byte-level BPE vocabulary trained on the RIQ text (before special tokens).")
    seed: int = Field(0, description="Seed of weight initialisation and the warm start.")


class WarmStartParams(Section):
    epochs: float = Field(3.0, gt=0, description="Supervised warm-start epochs over the train split (tiny source only).")
    learning_rate: float = Field(1e-3, gt=0, description="Warm-start learning rate.")
    batch_size: int = Field(8, ge=1, description="Warm-start batch size.")


class ModelParams(Section):
    source: Literal["tiny", "hub"] = Field("tiny", description="'tiny': build a small Qwen2.5-VL locally (offline default); 'hub': snapshot a Hugging Face repo or local path.")
    hub_id: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="Hugging Face repo id or local directory used when source is 'hub'.")
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch) to pin when source is 'hub'.")
    attn_implementation: str = Field("sdpa", description="Attention kernel: 'sdpa' (default) or 'flash_attention_2' when flash-attn is installed.")
    tiny: TinyModelParams = Field(default_factory=TinyModelParams, description="Architecture of the tiny model.")
    warm_start: WarmStartParams = Field(default_factory=WarmStartParams, description="Supervised warm start of the tiny model.")


# --------------------------------------------------------------------------- train
class TrainParams(Section):
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"format": 1.0, "refuse_iou": 1.0, "explain": 1.0, "correction": 1.0},
        description="Reward name -> weight; names must be in the reward registry (pipeline.rewards.REWARDS).",
    )
    learning_rate: float = Field(5e-5, gt=0, description="GRPO learning rate (paper: 5e-7 for the 7B model).")
    beta: float = Field(0.05, ge=0, description="KL coefficient against the reference model (paper: 0.05).")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (GRPO group size).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for rollouts.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs over the train split.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = run the epochs.")
    per_device_train_batch_size: int = Field(4, ge=1, description="Completions per device per step (must be a multiple of num_generations over the world size).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_completion_length: int = Field(96, ge=8, description="Most new tokens per rollout.")
    loss_type: str = Field("grpo", description="TRL loss type ('grpo', 'dapo', 'dr_grpo', 'bnpo'); set explicitly because TRL's default changed.")
    scale_rewards: str = Field("group", description="TRL reward scaling: 'group', 'batch' or 'none'.")
    bf16: bool = Field(False, description="bfloat16 training (GPU profile); False on CPU.")
    answerable_fraction: float = Field(0.5, ge=0, le=1, description="Share of answerable examples in the training mix (the rest refusable).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory in the policy forward.")
    logging_steps: int = Field(1, ge=1, description="Log every N steps to DVCLive.")
    seed: int = Field(0, description="Seed of data order and sampling.")


# --------------------------------------------------------------------------- evaluate
class EvaluateParams(Section):
    max_new_tokens: int = Field(96, ge=8, description="Most new tokens per greedy prediction.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")
    max_items: int = Field(0, ge=0, description="Evaluate at most this many test items; 0 = all.")
    iou_thresholds: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7], description="IoU thresholds for R@k metrics.")


class Params(Section):
    download: DownloadParams = Field(default_factory=DownloadParams, description="Stage download.")
    frames: FramesParams = Field(default_factory=FramesParams, description="Stage extract_frames.")
    riq: RiqParams = Field(default_factory=RiqParams, description="Stage build_riq.")
    model: ModelParams = Field(default_factory=ModelParams, description="Stage make_model.")
    train: TrainParams = Field(default_factory=TrainParams, description="Stage train.")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams, description="Stage evaluate.")


def _first_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return f"{source}: {key}: {err['msg']}{shown}{more}"


def parse_params(data: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as exc:
        raise InputError(_first_error(exc, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(data, str(path))
