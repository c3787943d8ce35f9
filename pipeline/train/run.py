"""Stage train: GRPO (RA-RFT) of the warm-started policy on the RIQ train split.

``train()`` reads the RIQ train records, builds the training mix (answerable
rows and refusable pools, balanced by ``train.answerable_fraction``), runs
:class:`pipeline.train.grpo.VideoGRPOTrainer` with the reward registry and the
weights from params, logs the curves with DVCLive, and saves the policy and its
processor with ``save_pretrained``.

Refusable pools: refusable records of one video that share a correction target
are interchangeable wordings of "something this video does not show" (e.g. the
1-edit and 2-edit variants of one true query). Each refusable row of the
dataset stands for one pool and draws one of its members per epoch, with a
generator seeded by (seed, row, epoch), so an epoch sees one wording per row and
later epochs see others, and a run is reproducible.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.core.io import InputError, replace_dir
from pipeline.core.params import Params, TrainParams
from pipeline.riq.schema import RiqRecord, read_train_records

# Keys of TRL's logs that make the training curves (see docs/TRAINING.md).
CURVES = ("reward", "kl", "completions/mean_length")


# --------------------------------------------------------------------------- data
def refusal_pools(records: Sequence[RiqRecord]) -> list[list[int]]:
    """Indices of refusable records grouped by (video, correction target), in first-seen order."""
    pools: dict[tuple[str, str], list[int]] = {}
    for i, rec in enumerate(records):
        if rec.task_type == "refusable":
            pools.setdefault((rec.video, rec.correction_target or ""), []).append(i)
    return list(pools.values())


def _cycle(items: list, n: int, rng: np.random.Generator) -> list:
    """``n`` items: every item once (n >= len), then a seeded random choice of repeats."""
    extra = n - len(items)
    if extra <= 0:
        return list(items)
    reps, rest = divmod(extra, len(items))
    return list(items) * (1 + reps) + [items[i] for i in rng.permutation(len(items))[:rest]]


def mix_rows(records: Sequence[RiqRecord], answerable_fraction: float, seed: int) -> list[list[int]]:
    """Candidate record indices per dataset row: one answerable record, or one refusable pool.

    Nothing is dropped: every answerable record and every pool gets at least one row,
    and the smaller side is repeated until answerable rows are ``answerable_fraction``
    of all rows (0 or 1 keep only one side).
    """
    answerable = [[i] for i, rec in enumerate(records) if rec.task_type == "answerable"]
    pools = refusal_pools(records)
    f = answerable_fraction
    if f > 0 and not answerable:
        raise InputError(f"train.answerable_fraction is {f} but the train split has no answerable records")
    if f < 1 and not pools:
        raise InputError(f"train.answerable_fraction is {f} but the train split has no refusable records")
    if f >= 1:
        return answerable
    if f <= 0:
        return pools
    total = max(len(answerable) / f, len(pools) / (1 - f))
    rng = np.random.default_rng(seed)
    return _cycle(answerable, round(total * f), rng) + _cycle(pools, round(total * (1 - f)), rng)


def pick(candidates: Sequence[int], row: int, epoch: int, seed: int) -> int:
    """The pool member a row uses in an epoch (answerable rows have one candidate)."""
    if len(candidates) == 1:
        return candidates[0]
    return candidates[int(np.random.default_rng([seed, row, epoch]).integers(len(candidates)))]


def _epoch_callback():
    from transformers import TrainerCallback

    class PoolEpoch(TrainerCallback):
        """Tells the dataset which epoch is starting, so refusable rows draw a new pool member."""

        epoch = 0

        def on_epoch_begin(self, args, state, control, **kwargs):
            # floor, not round: a run resumed mid-epoch starts with a fractional state.epoch (e.g. 0.6)
            # and must keep drawing that epoch's pool members.
            self.epoch = int((state.epoch or 0) + 1e-6)

    return PoolEpoch()


def build_dataset(records: Sequence[RiqRecord], render_prompt: Callable[[str], str], answerable_fraction: float, seed: int):
    """(datasets.Dataset, epoch callback). Rows resolve lazily to prompt, frames_path and the reward columns."""
    from datasets import Dataset

    from pipeline.train.rewards import reward_columns

    rows = mix_rows(records, answerable_fraction, seed)
    clock = _epoch_callback()
    prompts: dict[str, str] = {}

    def resolve(batch: dict) -> dict:
        out: dict[str, list] = {}
        for row, candidates in zip(batch["row"], batch["candidates"], strict=True):
            rec = records[pick(candidates, row, clock.epoch, seed)]
            if rec.problem not in prompts:
                prompts[rec.problem] = render_prompt(rec.problem)
            values = {"prompt": prompts[rec.problem], "frames_path": rec.frames_path, "record_id": rec.id, **reward_columns(rec)}
            for k, v in values.items():
                out.setdefault(k, []).append(v)
        return out

    ds = Dataset.from_dict({"row": list(range(len(rows))), "candidates": rows})
    return ds.with_transform(resolve), clock


# --------------------------------------------------------------------------- rewards
def reward_functions(weights: Mapping[str, float]) -> tuple[list[Callable], list[float]]:
    """The registry's reward functions named in ``weights`` (registry order) and their weights.

    Each function is renamed to its registry name, which TRL logs as ``rewards/<name>/mean``.
    """
    from pipeline.train.rewards import REWARDS

    for name in weights:
        if name not in REWARDS:
            raise InputError(f"params.yaml: train.reward_weights.{name}: unknown reward; known: {', '.join(REWARDS)}")
    if not weights:
        raise InputError(f"params.yaml: train.reward_weights: empty; name at least one of {', '.join(REWARDS)}")
    funcs, values = [], []
    for name, fn in REWARDS.items():
        if name in weights:
            funcs.append(_named(name, fn))
            values.append(float(weights[name]))
    return funcs, values


def _named(name: str, fn: Callable) -> Callable:
    def reward(completions, **kwargs):
        return fn(completions, **kwargs)

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = fn.__doc__
    return reward


# --------------------------------------------------------------------------- config
def grpo_config(tp: TrainParams, output_dir: str | Path, reward_weights: list[float]):
    """TRL GRPOConfig with every setting whose default changed across TRL releases set explicitly."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        loss_type=tp.loss_type,
        beta=tp.beta,
        use_bias_correction_kl=tp.use_bias_correction_kl,
        bf16=tp.bf16,
        scale_rewards=tp.scale_rewards,
        temperature=tp.temperature,
        top_p=tp.top_p,
        num_generations=tp.num_generations,
        max_completion_length=tp.max_completion_length,
        learning_rate=tp.learning_rate,
        lr_scheduler_type=tp.lr_scheduler_type,
        warmup_steps=tp.warmup_steps,
        num_train_epochs=tp.num_train_epochs,
        max_steps=tp.max_steps,
        per_device_train_batch_size=tp.per_device_train_batch_size,
        gradient_accumulation_steps=tp.gradient_accumulation_steps,
        gradient_checkpointing=tp.gradient_checkpointing,
        seed=tp.seed,
        data_seed=tp.seed,
        reward_weights=reward_weights,
        logging_steps=tp.logging_steps,
        report_to="none",  # curves go through the DVCLive callback into a declared folder
        remove_unused_columns=False,  # the rewards read the RIQ columns
        dataloader_num_workers=0,  # pool draws read the epoch set in the main process
        **distributed_settings(tp),
        **checkpoint_settings(tp),
        **rollout_settings(tp),
    )


def distributed_settings(tp: TrainParams) -> dict:
    """GRPOConfig keys for DeepSpeed and for processes without CUDA."""
    import torch

    from pipeline.train.launch import deepspeed_config

    ds = deepspeed_config(tp.launch)
    if ds is not None:
        # Given to the config (not only to accelerate) so transformers builds the ZeRO-3 context before
        # from_pretrained and fills the JSON's "auto" values from these params.
        return {"deepspeed": str(ds)}
    # Without CUDA, transformers only treats a torchrun/accelerate world as distributed (gloo) with use_cpu.
    return {"use_cpu": not torch.cuda.is_available()}


def checkpoint_settings(tp: TrainParams) -> dict:
    if tp.checkpoint_steps == 0:
        return {"save_strategy": "no"}  # the final model is saved once, atomically, by save_policy
    return {"save_strategy": "steps", "save_steps": tp.checkpoint_steps, "save_total_limit": tp.checkpoint_keep}


def rollout_settings(tp: TrainParams) -> dict:
    """vLLM (TRL colocate mode) when asked for and installed; HF generate otherwise."""
    if not tp.use_vllm:
        return {"use_vllm": False}
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        print("[train] train.use_vllm is true but vLLM is not installed: rollouts use HF generate", flush=True)
        return {"use_vllm": False}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": tp.vllm_gpu_memory_utilization}


def resolve_attention(requested: str) -> str:
    """``model.attn_implementation``, with flash_attention_2 falling back to sdpa (logged) when it cannot run."""
    import importlib.util

    import torch

    if requested == "flash_attention_2" and (importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available()):
        why = "flash-attn is not installed" if importlib.util.find_spec("flash_attn") is None else "no CUDA device"
        print(f"[train] attention: sdpa (model.attn_implementation is flash_attention_2 but {why})", flush=True)
        return "sdpa"
    print(f"[train] attention: {requested}", flush=True)
    return requested


def freeze(model, train) -> int:
    """Freeze what the ``train`` params say (pipeline.train.memory.is_frozen); return the frozen parameter count."""
    from pipeline.train.memory import is_frozen

    frozen = 0
    for name, param in model.named_parameters():
        if is_frozen(name, train):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def live_callback(live_dir: str | Path, resume: bool = False):
    """DVCLive logger of TRL's logs; only the main process writes, and never dvc.yaml or an experiment."""
    from accelerate import PartialState
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class StepAligned(DVCLiveCallback):
        # DVCLive counts one step per log call; use the optimizer step instead, so the curves' x axis
        # is the trainer's global step whatever logging_steps is.
        def on_log(self, args, state, control, **kwargs):
            if self.live is not None:
                self.live.step = state.global_step
            super().on_log(args, state, control, **kwargs)

    live = Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=resume) if PartialState().is_main_process else None
    return StepAligned(live=live, log_model=False)


# --------------------------------------------------------------------------- save
def save_policy(trainer, out_dir: str | Path) -> None:
    """Model + processor via save_pretrained into a temp folder, renamed onto ``out_dir``."""
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp"
    if trainer.accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # gathers ZeRO-3 shards; the main process writes model and processor
    if trainer.accelerator.is_main_process:
        replace_dir(tmp, out)
    trainer.accelerator.wait_for_everyone()


# --------------------------------------------------------------------------- main
def build_trainer(params: Params, model_dir: str | Path, riq_path: str | Path, live_dir: str | Path, work_dir: str | Path,
                  resume: bool = False):
    """The VideoGRPOTrainer for a run: policy from ``model_dir``, data from ``riq_path``.

    ``work_dir`` is the Trainer's output_dir (where checkpoints go); ``resume`` appends to ``live_dir``.
    """
    from pipeline.model.video_inputs import load_policy, prompt_text
    from pipeline.train.checkpoints import marker_callback
    from pipeline.train.grpo import VideoGRPOTrainer
    from pipeline.train.memory import check_fits

    tp = params.train
    funcs, weights = reward_functions(tp.reward_weights)
    records = read_train_records(riq_path)
    if not (Path(model_dir) / "config.json").is_file():
        raise InputError(f"{model_dir}: not a saved model (no config.json); run make_model first")
    # Fail before loading multi-GB weights when the config cannot fit (no check without CUDA).
    estimate = check_fits(params, model_dir, [r.frames_path for r in records])
    if estimate is not None:
        print(f"[train] memory estimate per GPU: {estimate.total:.1f} GiB ({estimate.table()})", flush=True)
    if {"explain", "correction"} & set(tp.reward_weights):
        import sys

        from pipeline.core import sbert
        from pipeline.train.rewards import reference_texts

        # Same reference embeddings whether the run is fresh or resumed (see sbert.warm). Before the
        # config: under ZeRO-3 the config makes every from_pretrained, SBERT's too, load partitioned.
        # stderr: stdout carries the run's JSON summary, which other ranks' prints must not split.
        print(f"[train] reference embeddings: {sbert.warm(reference_texts(records)):,} texts", file=sys.stderr, flush=True)
    # The config comes first: under ZeRO-3 it makes from_pretrained load the weights already partitioned.
    args = grpo_config(tp, work_dir, weights)
    model, processor = load_policy(model_dir, attn_implementation=resolve_attention(params.model.attn_implementation))
    if tp.freeze_vision_tower or tp.freeze_vision_merger or tp.freeze_input_embeddings:
        print(f"[train] frozen: {freeze(model, tp):,} parameters", flush=True)
    dataset, clock = build_dataset(records, lambda q: prompt_text(processor, q), tp.answerable_fraction, tp.seed)
    return VideoGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[clock, live_callback(live_dir, resume=resume), marker_callback(live_dir)],
        frames_cache_size=tp.frames_cache_size,
    )


def run(trainer, out_dir: str | Path, resume_from: str | Path | None = None) -> dict:
    """Train (from a checkpoint when given), save the policy to ``out_dir``, return a summary."""
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    save_policy(trainer, out_dir)
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {
        "steps": trainer.state.global_step,
        "rows": len(trainer.train_dataset),
        "resumed_from": str(resume_from) if resume_from else None,
        "processes": trainer.accelerator.num_processes,
        "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage if trainer.is_deepspeed_enabled else 0,
        "seconds": round(time.perf_counter() - start, 1),
        "first": {k: logs[0].get(k) for k in CURVES} if logs else {},
        "last": {k: logs[-1].get(k) for k in CURVES} if logs else {},
    }


def train(params: Params, model_dir: str | Path, riq_path: str | Path, out_dir: str | Path, live_dir: str | Path,
          checkpoints_dir: str | Path | None = None) -> dict:
    """Run GRPO; write ``out_dir`` (save_pretrained) and the DVCLive folder ``live_dir``; return a summary.

    With ``checkpoints_dir`` and ``train.checkpoint_steps`` > 0 the run checkpoints into
    ``checkpoints_dir/<run key>`` and resumes from its newest complete checkpoint
    (pipeline.train.checkpoints); the folder is deleted once the model is saved.
    """
    from accelerate import PartialState

    from pipeline.train.checkpoints import latest_checkpoint, restore_live, run_key

    out = Path(out_dir)
    resume_from = None
    if checkpoints_dir is not None and params.train.checkpoint_steps > 0:
        records = read_train_records(riq_path)
        work = Path(checkpoints_dir) / run_key(params, model_dir, riq_path, (r.frames_path for r in records))
        resume_from = latest_checkpoint(work)
        if resume_from is not None:
            print(f"[train] resuming from {resume_from}", flush=True)
            if PartialState().is_main_process:
                restore_live(resume_from, live_dir)
            PartialState().wait_for_everyone()
        else:
            print(f"[train] checkpoints: {work}", flush=True)
    else:
        work = out.parent / f".{out.name}.work"  # Trainer's output_dir; nothing is checkpointed there
    trainer = build_trainer(params, model_dir, riq_path, live_dir, work, resume=resume_from is not None)
    try:
        summary = run(trainer, out, resume_from)
    except BaseException:
        if work.name.startswith("."):
            shutil.rmtree(work, ignore_errors=True)
        raise  # checkpoints stay for the next run to resume from
    if trainer.accelerator.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
    return summary
