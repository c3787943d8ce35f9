"""Resumable training: checkpoints in a scratch folder that DVC never caches.

A run's checkpoints live in ``<root>/<run key>/checkpoint-<step>`` where ``root`` is
the train stage's ``--checkpoints`` folder (``scratch/checkpoints``, git-ignored, not
a DVC output: multi-GB ZeRO-3 checkpoints must not fill the DVC cache) and the run key
hashes everything that shapes the trajectory: the train params (minus knobs that do
not change it), ``model.attn_implementation``, the RIQ train file, the base model
folder and the frames the records point to. A rerun of the same experiment after a
crash or ``kill -9`` finds its folder and resumes from the newest *complete*
checkpoint; another experiment gets another folder.

Complete means: transformers finished writing it (``on_save`` fires after model,
optimizer, scheduler, RNG and trainer state are written, and only then
:class:`CheckpointMarker` writes ``rarft_checkpoint.json``), its trainer state parses
and names the same step, and its weight files have readable headers. Anything else
is skipped with a warning. Resuming uses transformers' own ``resume_from_checkpoint``:
model, optimizer, scheduler, RNG states and the data order (the sampler is seeded and
the already-trained batches are skipped) come back as they were.

The DVCLive folder is snapshotted into each checkpoint and restored on resume, so the
curves of a resumed run are continuous although DVC empties ``reports/train`` before
the stage runs again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

from pipeline.core.io import atomic_dir, atomic_path
from pipeline.core.params import Params

MARKER = "rarft_checkpoint.json"
LIVE_SNAPSHOT = "rarft_live"
# Train params that do not change what is trained: a run may change them and still resume.
NOT_TRAJECTORY = {"checkpoint_steps", "checkpoint_keep", "logging_steps", "frames_cache_size", "gpu_memory_gib", "vllm_gpu_memory_utilization"}
_STEP = re.compile(r"^checkpoint-(\d+)$")


def _file_fingerprint(h, path: Path, edge: int = 1 << 20) -> None:
    # Size plus first and last MiB: cheap on multi-GB weights, and any re-save changes the headers.
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as f:
        h.update(f.read(edge))
        if size > 2 * edge:
            f.seek(-edge, 2)
            h.update(f.read(edge))


def run_key(params: Params, model_dir: str | Path, riq_path: str | Path, frames_paths: Iterable[str] = ()) -> str:
    """16 hex digits naming the run's checkpoint folder."""
    h = hashlib.sha256()
    train = {k: v for k, v in params.train.model_dump(mode="json").items() if k not in NOT_TRAJECTORY}
    h.update(json.dumps({"train": train, "attn": params.model.attn_implementation}, sort_keys=True).encode())
    h.update(hashlib.sha256(Path(riq_path).read_bytes()).digest())
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        _file_fingerprint(h, path)
    for name in sorted(set(frames_paths)):
        p = Path(name)
        h.update(f"{p.name}\0{p.stat().st_size if p.exists() else -1}\0".encode())
    return h.hexdigest()[:16]


def incomplete_reason(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from, or None when it is complete."""
    m = _STEP.match(ckpt.name)
    if not m:
        return "not a checkpoint-<step> folder"
    step = int(m.group(1))
    try:
        marker = json.loads((ckpt / MARKER).read_text())
    except (OSError, ValueError):
        return f"no {MARKER} (interrupted while saving)"
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as exc:
        return f"trainer_state.json unreadable ({type(exc).__name__})"
    if state.get("global_step") != step or marker.get("global_step") != step:
        return f"trainer_state.json says step {state.get('global_step')}, folder says {step}"
    weights = sorted(ckpt.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    from safetensors import safe_open

    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                keys = list(f.keys())
                if keys:
                    f.get_slice(keys[-1])  # the last tensor's bounds fall inside the file
            if w.stat().st_size != marker.get("sizes", {}).get(w.name, w.stat().st_size):
                return f"{w.name}: size changed since it was saved"
        except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
            return f"{w.name}: unreadable ({type(exc).__name__}: {str(exc)[:80]})"
    has_optimizer = (ckpt / "optimizer.pt").is_file() or any(ckpt.glob("global_step*"))
    if not has_optimizer:
        return "no optimizer state (optimizer.pt or DeepSpeed global_step*/)"
    return None


def checkpoints(run_dir: str | Path) -> list[Path]:
    """``checkpoint-<step>`` folders of a run, newest step first."""
    run = Path(run_dir)
    found = [p for p in run.glob("checkpoint-*") if p.is_dir() and _STEP.match(p.name)] if run.is_dir() else []
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)), reverse=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint; newer incomplete or corrupt ones are skipped with a warning."""
    for ckpt in checkpoints(run_dir):
        reason = incomplete_reason(ckpt)
        if reason is None:
            return ckpt
        warnings.warn(f"{ckpt}: skipped, not resumable: {reason}", stacklevel=2)
    return None


def restore_live(ckpt: Path, live_dir: str | Path) -> bool:
    """Put the DVCLive folder back as it was when ``ckpt`` was saved."""
    snap = ckpt / LIVE_SNAPSHOT
    if not snap.is_dir():
        return False
    with atomic_dir(live_dir) as tmp:
        shutil.copytree(snap, tmp, dirs_exist_ok=True)
    return True


def marker_callback(live_dir: str | Path | None):
    """TrainerCallback that marks a checkpoint complete once every process has written its part."""
    from accelerate import PartialState
    from transformers import TrainerCallback

    class CheckpointMarker(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            # transformers also checkpoints the last step; the run deletes its checkpoints right after
            # saving the model, so that write (a full ZeRO-3 checkpoint for 7B) would be wasted.
            if state.global_step >= state.max_steps and state.global_step % args.save_steps:
                control.should_save = False
            return control

        def on_save(self, args, state, control, **kwargs):
            PartialState().wait_for_everyone()  # DeepSpeed shards are written by every rank
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if live_dir is not None and Path(live_dir).is_dir():
                    shutil.rmtree(ckpt / LIVE_SNAPSHOT, ignore_errors=True)
                    shutil.copytree(live_dir, ckpt / LIVE_SNAPSHOT)
                sizes = {w.name: w.stat().st_size for w in ckpt.glob("*.safetensors")}
                with atomic_path(ckpt / MARKER) as tmp:
                    tmp.write_text(json.dumps({"global_step": state.global_step, "sizes": sizes}))
            PartialState().wait_for_everyone()
            return control

    return CheckpointMarker()
