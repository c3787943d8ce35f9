"""Will the run fit in GPU memory? An estimate made before any weight is loaded.

The knobs that decide it (docs/TRAINING.md, "Memory"): ``train.launch.deepspeed``
(ZeRO-3 sharding, CPU offload), ``train.launch.num_processes`` (ZeRO-3 divides the
model states by it), ``train.gradient_checkpointing``, ``train.per_device_train_batch_size``
(completions per GPU, generated together), ``train.max_completion_length``, the video
pixel budget (``frames.total_pixels``, read back from the frames files), ``train.beta``
(a reference model when > 0) and ``train.use_vllm`` (its reserved share).

Bytes per parameter (mixed precision, AdamW): DeepSpeed keeps bf16 weights and grads
plus fp32 master weights and two fp32 Adam moments (2 + 2 + 12); without DeepSpeed
the weights, grads and both moments are in the weights' dtype (4 x dtype). ZeRO-3
divides model states by the world size; offload moves optimizer states and weights
to CPU RAM. Generation under ZeRO-3 gathers the full bf16 weights on every GPU
(TRL's ``ds3_gather_for_generation``). Activations use the usual per-token-per-layer
figure (~34 x hidden bytes at 16 bits without checkpointing, the layer inputs plus one
layer with it) and the completion logits in fp32 (TRL keeps only completion logits).
It is an estimate for failing early with a clear message, not a profiler: the table in
docs/TRAINING.md says how it compared with the peers' published setups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.io import InputError
from pipeline.core.params import Params

GIB = 1024**3
OVERHEAD_GIB = 3.0  # CUDA context, NCCL buffers, allocator fragmentation


@dataclass(frozen=True)
class ModelShape:
    params: int  # all parameters (language model + vision tower)
    trainable: int
    hidden: int
    layers: int
    vocab: int
    kv_dim: int  # key/value heads x head dim
    dtype_bytes: int


@dataclass
class Estimate:
    parts: dict[str, float] = field(default_factory=dict)  # GiB per GPU
    cpu_gib: float = 0.0  # offloaded states, per machine

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def table(self) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in self.parts.items())


def model_shape(config, train=None) -> ModelShape:
    """Parameter count and sizes from a Qwen2.5-VL config, on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    named = dict(model.named_parameters())
    n = sum(p.numel() for p in named.values())
    frozen = sum(p.numel() for k, p in named.items() if is_frozen(k, train)) if train is not None else 0
    text = getattr(config, "text_config", config)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    dtype = getattr(text, "dtype", None) or getattr(config, "dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return ModelShape(
        params=n,
        trainable=n - frozen,
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        vocab=text.vocab_size,
        kv_dim=text.num_key_value_heads * head_dim,
        dtype_bytes=torch.finfo(dtype).bits // 8,
    )


def is_frozen(name: str, train) -> bool:
    """Whether the ``train`` params (``TrainParams``) freeze the parameter ``name``: the vision
    blocks (``freeze_vision_tower``), the vision merger (``freeze_vision_merger``), the input word
    embeddings (``freeze_input_embeddings``; with tied embeddings that is the output head too)."""
    dotted = f".{name}"
    if ".visual." in dotted:
        return train.freeze_vision_merger if ".merger." in dotted else train.freeze_vision_tower
    return train.freeze_input_embeddings and dotted.endswith(".embed_tokens.weight")


def video_tokens(frames_path: str | Path) -> int:
    """LLM tokens of one cached video: (T / temporal patch 2) x (H / 28) x (W / 28)."""
    from pipeline.core.frames_cache import load_frames

    t, h, w, _ = load_frames(frames_path).frames.shape
    return max(1, t // 2) * (h // 28) * (w // 28)


def estimate(shape: ModelShape, params: Params, prompt_tokens: int, world_size: int | None = None) -> Estimate:
    tp, lp = params.train, params.train.launch
    world = world_size or lp.num_processes
    p, t = shape.params, shape.trainable
    est = Estimate()
    zero3 = lp.deepspeed != "none"
    offload = lp.deepspeed == "zero3_offload"
    if zero3:
        weights, grads, optim = 2 * p, 2 * t, 12 * t
        if offload:
            est.cpu_gib = (weights + optim) / GIB * (world / max(1, lp.num_machines)) / world
            weights, optim = 0, 0
        est.parts["weights+grads+optimizer"] = (weights + grads + optim) / world / GIB
        est.parts["zero3 live params"] = min(p, 10**9) * 2 / GIB
        est.parts["generation (gathered weights)"] = 2 * p / GIB
        ref = 2 * p / world / GIB
    else:
        b = shape.dtype_bytes if not tp.bf16 else 2
        est.parts["weights+grads+optimizer"] = (shape.dtype_bytes * p + b * t + 2 * shape.dtype_bytes * t) / GIB
        ref = shape.dtype_bytes * p / GIB
    if tp.beta > 0:
        est.parts["reference model"] = ref
    seq = prompt_tokens + tp.max_completion_length
    batch = tp.per_device_train_batch_size
    act_bytes = 2 if tp.bf16 else 4
    if tp.gradient_checkpointing:
        acts = batch * seq * shape.hidden * act_bytes * (shape.layers + 17)
    else:
        acts = batch * seq * shape.hidden * act_bytes * 17 * shape.layers
    est.parts["activations"] = acts / GIB
    est.parts["completion logits (fp32)"] = batch * tp.max_completion_length * shape.vocab * 4 * 3 / GIB
    est.parts["kv cache"] = batch * seq * shape.layers * 2 * shape.kv_dim * act_bytes / GIB
    if tp.use_vllm:
        est.parts["vllm reserve"] = 0.0  # filled by check_fits: a share of the device
    est.parts["overhead"] = OVERHEAD_GIB
    return est


def gpu_memory_gib(params: Params) -> float | None:
    """``train.gpu_memory_gib``, else the first CUDA device's memory, else None (CPU: no check)."""
    if params.train.gpu_memory_gib > 0:
        return params.train.gpu_memory_gib
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB
    return None


def check_fits(params: Params, model_dir: str | Path, frames_paths: Iterable[str] = (), prompt_text_tokens: int = 200,
               memory_gib: float | None = None) -> Estimate | None:
    """Raise InputError naming the knobs when the run cannot fit; return the estimate (None on CPU).

    The prompt length is the largest frames file's video tokens plus ``prompt_text_tokens``.
    """
    from transformers import AutoConfig

    mem = memory_gib or gpu_memory_gib(params)
    if mem is None:
        return None
    shape = model_shape(AutoConfig.from_pretrained(str(model_dir)), params.train)
    paths = sorted(set(frames_paths))
    largest = max(paths, key=lambda f: Path(f).stat().st_size) if paths else None
    prompt = prompt_text_tokens + (video_tokens(largest) if largest else 0)
    est = estimate(shape, params, prompt)
    if "vllm reserve" in est.parts:
        est.parts["vllm reserve"] = params.train.vllm_gpu_memory_utilization * mem
    if est.total > mem:
        lp = params.train.launch
        raise InputError(
            f"params.yaml: train: needs ~{est.total:.0f} GiB per GPU, has {mem:.0f} GiB "
            f"({shape.params / 1e9:.1f}B params, {prompt} prompt tokens, {lp.num_processes} processes, deepspeed {lp.deepspeed}; "
            f"{est.table()}). Knobs: train.launch.deepspeed zero3/zero3_offload, more train.launch.num_processes, "
            f"train.gradient_checkpointing, train.per_device_train_batch_size, train.max_completion_length, frames.total_pixels "
            f"(docs/TRAINING.md, Memory)"
        )
    return est
