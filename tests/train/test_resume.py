"""Long runs survive crashes: checkpoints in a scratch folder, automatic resume, corrupt ones skipped.

The train stage runs as a real subprocess on the real tiny Qwen2.5-VL and is killed with
SIGKILL once a checkpoint exists; the rerun must continue (not restart) and end with
exactly the weights and curves of a run that was never interrupted.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_chain import (
    ROOT,
    build_chain,
    curve,
    env,
    run_stage,
    stage_cmd,
    write_params,
)

from pipeline.core.params import Params
from pipeline.train.checkpoints import (
    MARKER,
    checkpoints,
    incomplete_reason,
    latest_checkpoint,
    run_key,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    return build_chain(tmp_path_factory.mktemp("resume"))


def _plant_corrupt(good: Path, step: int) -> Path:
    """A newer checkpoint that looks finished but whose weights were cut short."""
    bad = good.parent / f"checkpoint-{step}"
    shutil.copytree(good, bad)
    for name in ("trainer_state.json", MARKER):
        data = json.loads((bad / name).read_text())
        data["global_step"] = step
        (bad / name).write_text(json.dumps(data))
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return bad


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_and_matches_uninterrupted(chain, tmp_path):
    params = write_params(tmp_path / "p.yaml", max_steps=10, checkpoint_steps=2, checkpoint_keep=2)
    full, _ = run_stage(stage_cmd(chain, params, "full"))
    assert full["steps"] == 10 and full["resumed_from"] is None

    cmd = stage_cmd(chain, params, "crash")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    # 5 steps per epoch (10 rows, 2 prompts per step): wait for a checkpoint past the epoch boundary, where
    # resuming must also restore the sampler's order for epoch 2, not replay epoch 1's.
    while not list((chain / "crash_ckpt").glob(f"*/checkpoint-6/{MARKER}")):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    (run_dir,) = (chain / "crash_ckpt").iterdir()
    good = latest_checkpoint(run_dir)
    assert good is not None and int(good.name.split("-")[1]) in (6, 8)
    bad = _plant_corrupt(good, 98)

    resumed, stderr = run_stage(cmd)
    assert resumed["resumed_from"] == str(good)  # the corrupt newer one was skipped...
    assert f"{bad}: skipped, not resumable: model.safetensors: unreadable" in " ".join(stderr.split())  # ...with a warning
    assert resumed["steps"] == 10
    # Same data order, RNG and optimizer state: the resumed run is the uninterrupted run.
    a, b = load_file(chain / "full_out" / "model.safetensors"), load_file(chain / "crash_out" / "model.safetensors")
    base = load_file(chain / "base" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], base[k]) for k in a)  # and training moved the weights
    # The curves continue across the crash (DVC empties reports/train; the checkpoint restores it).
    for key in ("reward", "kl", "loss"):
        assert curve(chain / "crash_live", key) == curve(chain / "full_live", key), key
    assert [s for s, _ in curve(chain / "crash_live", "reward")] == list(range(1, 11))
    assert not run_dir.exists()  # checkpoints are dropped once the model is saved


def test_checkpoint_completeness_rules(tmp_path):
    run = tmp_path / "run"
    ckpt = run / "checkpoint-3"
    ckpt.mkdir(parents=True)
    assert "interrupted while saving" in incomplete_reason(ckpt)
    (ckpt / MARKER).write_text(json.dumps({"global_step": 3}))
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    assert "step 2" in incomplete_reason(ckpt)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert incomplete_reason(ckpt) == "no *.safetensors weights"
    from safetensors.torch import save_file

    save_file({"w": torch.ones(4)}, ckpt / "model.safetensors")
    assert "optimizer" in incomplete_reason(ckpt)
    (ckpt / "optimizer.pt").write_bytes(b"x")
    assert incomplete_reason(ckpt) is None and checkpoints(run) == [ckpt]
    later = run / "checkpoint-10"
    shutil.copytree(ckpt, later)
    assert "says step 3" in incomplete_reason(later)
    with pytest.warns(UserWarning, match="checkpoint-10: skipped"):
        assert latest_checkpoint(run) == ckpt


def test_run_key_changes_with_what_is_trained(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    riq = tmp_path / "t.jsonl"
    riq.write_text("a\n")
    p = Params()
    key = run_key(p, tmp_path / "m", riq)
    assert key == run_key(p, tmp_path / "m", riq)
    cheap = p.train.model_copy(update={"checkpoint_steps": 7, "logging_steps": 3})
    assert run_key(p.model_copy(update={"train": cheap}), tmp_path / "m", riq) == key
    lr = p.train.model_copy(update={"learning_rate": 1e-3})
    assert run_key(p.model_copy(update={"train": lr}), tmp_path / "m", riq) != key
    riq.write_text("b\n")
    assert run_key(p, tmp_path / "m", riq) != key
