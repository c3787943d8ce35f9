"""Paper-scale switches on CPU: profiles, the rendered launcher, the memory check, 2 processes, ZeRO-3.

The GPU profile cannot run here, so its launch command is rendered (--dry-run) and
checked against accelerate's own config parser; the same stage then really runs 2
processes (torch.distributed with gloo) and DeepSpeed ZeRO-3 on the tiny model.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_chain import (
    ROOT,
    build_chain,
    curve,
    env,
    run_stage,
    stage_cmd,
    write_params,
)

from pipeline.core.io import InputError
from pipeline.core.params import Params, load_params

GPU8 = ROOT / "configs" / "profiles" / "gpu8.yaml"


def _dry_run(params: Path, extra_env: dict | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "stages.train", "--model", "models/base", "--riq", "data/riq/train.jsonl",
           "--out", "models/trained", "--live", "reports/train", "--params", str(params), "--dry-run"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**env(), **(extra_env or {})}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return shlex.split(proc.stdout.strip().splitlines()[-1])


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


# --------------------------------------------------------------------------- profile + launcher
def test_gpu8_profile_renders_accelerate_launch_with_zero3():
    from accelerate.commands.config.config_args import load_config_from_file

    cmd = _dry_run(GPU8.relative_to(ROOT))
    assert cmd[:2] == ["accelerate", "launch"]
    assert _flag(cmd, "--num_processes") == "8" and _flag(cmd, "--num_machines") == "1" and _flag(cmd, "--machine_rank") == "0"
    assert _flag(cmd, "--mixed_precision") == "bf16"
    assert _flag(cmd, "--deepspeed_config_file") == "configs/deepspeed/zero3.json"
    launcher = load_config_from_file(str(ROOT / _flag(cmd, "--config_file")))
    assert launcher.distributed_type == "DEEPSPEED" and launcher.deepspeed_config["zero3_init_flag"] is True
    # The launched processes run the same stage with the same arguments.
    tail = cmd[cmd.index("-m"):]
    assert tail[:2] == ["-m", "stages.train"] and "--dry-run" not in tail and _flag(tail, "--params") == "configs/profiles/gpu8.yaml"


def test_two_nodes_take_rank_and_address_from_the_environment(tmp_path):
    data = yaml.safe_load(GPU8.read_text())
    data["train"]["launch"] |= {"num_processes": 16, "num_machines": 2, "deepspeed": "zero3_offload"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    cmd = _dry_run(tmp_path / "p.yaml", {"RARFT_MACHINE_RANK": "1", "RARFT_MAIN_PROCESS_IP": "10.0.0.7", "RARFT_MAIN_PROCESS_PORT": "29511"})
    assert (_flag(cmd, "--num_processes"), _flag(cmd, "--num_machines"), _flag(cmd, "--machine_rank")) == ("16", "2", "1")
    assert (_flag(cmd, "--main_process_ip"), _flag(cmd, "--main_process_port")) == ("10.0.0.7", "29511")
    assert _flag(cmd, "--deepspeed_config_file") == "configs/deepspeed/zero3_offload.json"

    from pipeline.train.launch import launch_command

    tp = load_params(tmp_path / "p.yaml").train
    with pytest.raises(InputError, match="^RARFT_MAIN_PROCESS_IP: not set"):
        launch_command(tp, "stages.train", [], env={})
    odd = tp.model_copy(update={"launch": tp.launch.model_copy(update={"num_processes": 6})})
    with pytest.raises(InputError, match=r"^params.yaml: train.per_device_train_batch_size: 1 x train.launch.num_processes 6 = 6"):
        launch_command(odd, "stages.train", [], env={"RARFT_MAIN_PROCESS_IP": "x"})


def test_cpu_default_trains_in_process():
    cmd = _dry_run(Path("params.yaml"))
    assert cmd[1:3] == ["-m", "stages.train"] and "accelerate" not in cmd[0]


def test_deepspeed_json_auto_values_are_filled_from_params():
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from pipeline.train.run import grpo_config

    t = load_params(GPU8).train
    assert (t.learning_rate, t.beta, t.num_generations, t.temperature, t.num_train_epochs, t.per_device_train_batch_size) == (5e-7, 0.05, 4, 1.0, 1.0, 1)
    for name in ("zero3", "zero3_offload"):
        ds = HfTrainerDeepSpeedConfig(str(ROOT / "configs" / "deepspeed" / f"{name}.json"))
        # bf16 off and 4 completions per device: this box has no GPU and runs one process.
        ds.trainer_config_process(grpo_config(t.model_copy(update={"bf16": False, "per_device_train_batch_size": 4}), "unused", [1.0] * 4))
        assert ds.is_zero3() and ds.config["bf16"]["enabled"] is False
        assert ds.config["train_micro_batch_size_per_gpu"] == 4 and ds.config["gradient_clipping"] == 1.0
        assert ds.config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
        assert ds.is_offload() == (name == "zero3_offload")


def test_profile_switch_writes_values_into_params_yaml_and_back(tmp_path):
    from pipeline.train.profiles import apply_profile

    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    original = p.read_text()
    changed = apply_profile("gpu8", p)
    gpu = load_params(p)
    assert gpu.profile == "gpu8" and gpu.model.hub_id == "Qwen/Qwen2.5-VL-7B-Instruct" and gpu.model.source == "hub"
    assert (gpu.train.learning_rate, gpu.train.launch.num_processes, gpu.train.launch.deepspeed) == (5e-7, 8, "zero3")
    assert gpu.frames.total_pixels == 3584 * 28 * 28 and gpu.train.freeze_vision_tower and gpu.train.bf16
    assert not gpu.train.freeze_vision_merger and not gpu.train.freeze_input_embeddings  # the CPU default freezes them
    assert changed["train.learning_rate"] == (Params().train.learning_rate, 5e-7)
    assert gpu.evaluate.max_new_tokens == 512  # evaluation as long as training (issue 17, bug 3)
    # keys no profile lists are kept
    assert gpu.evaluate.model_copy(update={"max_new_tokens": 128}) == load_params(ROOT / "params.yaml").evaluate
    apply_profile("cpu", p)
    assert p.read_text() == original  # every key is back to its default, in the same order
    with pytest.raises(InputError, match="profile 'gpu9'"):
        apply_profile("gpu9", p)


# --------------------------------------------------------------------------- memory
def _qwen7b_config(folder: Path) -> Path:
    from transformers import Qwen2_5_VLConfig

    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                         intermediate_size=18944, vocab_size=152064, dtype="bfloat16"),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584))
    folder.mkdir()
    cfg.save_pretrained(folder)
    return folder


def test_memory_check_fails_early_naming_the_knobs(tmp_path):
    from pipeline.train.memory import check_fits

    model = _qwen7b_config(tmp_path / "qwen7b")
    gpu = load_params(GPU8)
    est = check_fits(gpu, model, memory_gib=80)
    # ZeRO-3 over 8 GPUs: 16 bytes/param / 8 for model states, plus the gathered bf16 weights for generate.
    assert 25 < est.total < 80 and est.parts["generation (gathered weights)"] == pytest.approx(8.29e9 * 2 / 2**30, rel=0.01)
    one = gpu.model_copy(update={"train": gpu.train.model_copy(update={"launch": gpu.train.launch.model_copy(update={"num_processes": 1})})})
    with pytest.raises(InputError, match=r"^params.yaml: train: needs ~\d+ GiB per GPU, has 24 GiB \(8.3B params.*Knobs: train.launch.deepspeed"):
        check_fits(one, model, memory_gib=24)
    assert check_fits(Params(), model) is None  # no CUDA, no gpu_memory_gib: no check


# --------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    return build_chain(tmp_path_factory.mktemp("dist"))


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(chain, tmp_path):
    one, _ = run_stage(stage_cmd(chain, write_params(tmp_path / "one.yaml", max_steps=3, checkpoint_steps=0), "one"))
    two, _ = run_stage(stage_cmd(chain, write_params(tmp_path / "two.yaml", max_steps=3, checkpoint_steps=0, per_device_train_batch_size=2,
                                                     launch={"num_processes": 2}), "two"))
    assert (one["processes"], two["processes"]) == (1, 2) and one["steps"] == two["steps"] == 3
    assert one["rows"] == two["rows"]
    for key in ("reward", "loss", "kl", "completions/mean_length"):
        a, b = curve(chain / "one_live", key), curve(chain / "two_live", key)
        assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3], key
    # Same group count per step: rewards are means over 4 completions (2 groups of 2) in both runs, gathered
    # across processes in the 2-process run. The samples differ (each process draws its own), so the
    # values are compared only for being finite and for the KL starting at 0 with policy == reference.
    for key in ("reward", "loss", "kl", "grad_norm"):
        assert all(math.isfinite(v) for _, v in curve(chain / "one_live", key) + curve(chain / "two_live", key)), key
    assert curve(chain / "one_live", "kl")[0][1] == curve(chain / "two_live", "kl")[0][1] == 0.0  # step 1: policy == reference
    assert (chain / "two_out" / "model.safetensors").is_file()


@pytest.mark.slow
def test_zero3_single_process_on_cpu(chain, tmp_path):
    params = write_params(tmp_path / "ds.yaml", max_steps=2, max_completion_length=16, checkpoint_steps=1, launch={"deepspeed": "zero3"})
    summary, stderr = run_stage(stage_cmd(chain, params, "zero3"))
    assert "launching: accelerate launch --config_file configs/accelerate/deepspeed.yaml --num_processes 1" in stderr
    assert (summary["zero_stage"], summary["processes"], summary["steps"]) == (3, 1, 2)
    # save_model gathered the ZeRO-3 shards into one loadable 16-bit model.
    from pipeline.model.video_inputs import load_policy

    model, _ = load_policy(chain / "zero3_out")
    assert sum(p.numel() for p in model.parameters()) > 10_000
    assert [s for s, _ in curve(chain / "zero3_live", "reward")] == [1, 2]
    assert json.loads((chain / "zero3_live" / "metrics.json").read_text())["step"] == 2


# --------------------------------------------------------------------------- issue 17
def test_every_profile_evaluates_at_least_as_long_as_it_trains():
    # Bug 3: a completion cut at evaluate.max_new_tokens has no <answer> and is wrong for both classes.
    from pipeline.core.params import parse_params
    from pipeline.train.profiles import profile_names, read_profile

    for name in profile_names():
        p = parse_params(read_profile(name))
        assert p.evaluate.max_new_tokens >= p.train.max_completion_length, name


def test_a_profile_that_evaluates_shorter_than_it_trains_is_refused(tmp_path):
    from pipeline.train.profiles import apply_profile, read_profile

    (tmp_path / "short.yaml").write_text("train:\n  max_completion_length: 512\nevaluate:\n  max_new_tokens: 256\n")
    with pytest.raises(InputError, match=r"short.yaml: evaluate.max_new_tokens: 256 is shorter than train.max_completion_length 512"):
        read_profile("short", tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "unset.yaml").write_text("train:\n  max_completion_length: 512\n")  # evaluation left at the default 128
    with pytest.raises(InputError, match=r"unset.yaml: evaluate.max_new_tokens: 128 is shorter"):
        apply_profile("unset", tmp_path / "params.yaml", other)
    assert not (tmp_path / "params.yaml").exists()


def test_use_bias_correction_kl_is_set_from_params():
    # Bug 4: TRL 1.16 defaults use_bias_correction_kl to True (it changes the KL gradient); it is a param now.
    from pipeline.core.params import TrainParams
    from pipeline.train.run import grpo_config

    tp = TrainParams()
    assert tp.use_bias_correction_kl is True  # TRL 1.16's default: today's runs unchanged
    assert grpo_config(tp, "unused", [1.0] * 4).use_bias_correction_kl is True
    off = TrainParams(use_bias_correction_kl=False)
    assert grpo_config(off, "unused", [1.0] * 4).use_bias_correction_kl is False
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["use_bias_correction_kl"] is True


def test_gpu8_official_profile_renders_the_official_launch(tmp_path):
    # `rarft profile gpu8-official` writes the official script's values; the stage's dry run renders the launch.
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    res = CliRunner().invoke(app, ["profile", "gpu8-official", "--params", str(p)])
    assert res.exit_code == 0, res.output
    assert "train.num_generations: 4 -> 8" in res.output and "train.loss_type: 'grpo' -> 'bnpo'" in res.output
    t, params = load_params(p).train, load_params(p)
    assert (params.profile, params.model.hub_id, params.frames.min_pixels, params.evaluate.max_new_tokens) == ("gpu8-official", "Time-R1-7B", 16 * 28 * 28, 512)
    assert (t.learning_rate, t.lr_scheduler_type, t.num_generations, t.num_train_epochs, t.max_completion_length) == (1e-6, "linear", 8, 3.0, 200)
    assert (t.loss_type, t.use_bias_correction_kl, t.launch.deepspeed, t.launch.num_processes) == ("bnpo", False, "zero3_offload", 8)
    cmd = _dry_run(p)
    assert cmd[:2] == ["accelerate", "launch"] and _flag(cmd, "--num_processes") == "8"
    assert _flag(cmd, "--deepspeed_config_file") == "configs/deepspeed/zero3_offload.json"
    assert _flag(cmd[cmd.index("-m"):], "--params") == str(p)
    # The GRPO config the launched processes build carries the official loss and schedule.
    from pipeline.train.run import grpo_config

    # (one process without a GPU here: 8 completions on it, bf16 off, no DeepSpeed)
    one = {"bf16": False, "per_device_train_batch_size": 8, "launch": t.launch.model_copy(update={"deepspeed": "none"})}
    cfg = grpo_config(t.model_copy(update=one), tmp_path / "o", [1.0] * 4)
    assert (cfg.loss_type, getattr(cfg.lr_scheduler_type, "value", cfg.lr_scheduler_type), cfg.learning_rate, cfg.num_generations, cfg.use_bias_correction_kl) == ("bnpo", "linear", 1e-6, 8, False)
