"""How the train stage starts: in this process, or re-run under ``accelerate launch``.

``python -m stages.train ...`` is the one command in dvc.yaml. With one process and
no DeepSpeed it trains in-process. Otherwise it renders
``accelerate launch --config_file configs/accelerate/<ddp|deepspeed>.yaml
--num_processes N ... -m stages.train <same arguments>`` from ``train.launch`` and
replaces itself with it (``os.execvpe``: DVC keeps waiting on the same process id);
the children see ``RARFT_LAUNCHED=1`` and train. Distribution itself is accelerate's
and DeepSpeed's; nothing here spawns or coordinates processes.

Per-machine values come from the environment so that all nodes share one params.yaml:
``RARFT_MACHINE_RANK`` (default 0), ``RARFT_MAIN_PROCESS_IP`` (required on several
machines), ``RARFT_MAIN_PROCESS_PORT`` (default 29500; on one machine only passed when set).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.core.io import InputError
from pipeline.core.params import LaunchParams, TrainParams

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
ACCELERATE_CONFIGS = {"ddp": CONFIGS / "accelerate" / "ddp.yaml", "deepspeed": CONFIGS / "accelerate" / "deepspeed.yaml"}
LAUNCHED = "RARFT_LAUNCHED"


def deepspeed_config(lp: LaunchParams) -> Path | None:
    """The DeepSpeed JSON for ``train.launch.deepspeed`` (None for 'none')."""
    return None if lp.deepspeed == "none" else CONFIGS / "deepspeed" / f"{lp.deepspeed}.json"


def needs_launcher(lp: LaunchParams) -> bool:
    return lp.num_processes > 1 or lp.num_machines > 1 or lp.deepspeed != "none"


def under_launcher(env: Mapping[str, str] = os.environ) -> bool:
    """True inside a process started by accelerate/torchrun (or by this module)."""
    return env.get(LAUNCHED) == "1" or "LOCAL_RANK" in env


def _rel(path: Path) -> str:
    # Relative paths keep the rendered command readable and identical on every node's checkout.
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def launch_command(tp: TrainParams, module: str, argv: Sequence[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """The ``accelerate launch`` command line that runs ``python -m module argv`` as ``train.launch`` says."""
    lp = tp.launch
    if lp.num_processes % lp.num_machines:
        raise InputError(f"params.yaml: train.launch.num_processes: {lp.num_processes} is not a multiple of train.launch.num_machines ({lp.num_machines})")
    world = lp.num_processes * tp.per_device_train_batch_size
    if world % tp.num_generations:
        raise InputError(
            f"params.yaml: train.per_device_train_batch_size: {tp.per_device_train_batch_size} x "
            f"train.launch.num_processes {lp.num_processes} = {world} completions per step is not a multiple of train.num_generations ({tp.num_generations})"
        )
    rank = int(env.get("RARFT_MACHINE_RANK", "0"))
    if not 0 <= rank < lp.num_machines:
        raise InputError(f"RARFT_MACHINE_RANK: {rank} is not in [0, train.launch.num_machines={lp.num_machines})")
    ds = deepspeed_config(lp)
    cmd = [
        "accelerate", "launch",
        "--config_file", _rel(ACCELERATE_CONFIGS["deepspeed" if ds else "ddp"]),
        "--num_processes", str(lp.num_processes),
        "--num_machines", str(lp.num_machines),
        "--machine_rank", str(rank),
        "--mixed_precision", "bf16" if tp.bf16 else "no",
        "--dynamo_backend", "no",
    ]
    if ds:
        cmd += ["--deepspeed_config_file", _rel(ds)]
    elif lp.num_processes == 1:
        # One process without DeepSpeed never needs a launcher; only a 1-process multi-node mistake gets here.
        raise InputError("params.yaml: train.launch: one process without DeepSpeed runs in-process; set num_processes > 1 or deepspeed")
    if lp.num_machines > 1:
        ip = env.get("RARFT_MAIN_PROCESS_IP", "")
        if not ip:
            raise InputError("RARFT_MAIN_PROCESS_IP: not set; a multi-node run needs the address of machine 0 on every machine")
        cmd += ["--main_process_ip", ip, "--main_process_port", env.get("RARFT_MAIN_PROCESS_PORT", "29500")]
    elif env.get("RARFT_MAIN_PROCESS_PORT"):
        # Two single-node runs on one machine (CI, a shared box) would both take accelerate's default 29500.
        cmd += ["--main_process_port", env["RARFT_MAIN_PROCESS_PORT"]]
    return [*cmd, "-m", module, *argv]


def launch_env(lp: LaunchParams, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment of the launched processes."""
    out = dict(env)
    out[LAUNCHED] = "1"
    if lp.deepspeed != "none" and not _has_cuda():
        # DeepSpeed picks its accelerator at import; on a machine without CUDA say CPU explicitly.
        out.setdefault("DS_ACCELERATOR", "cpu")
    return out


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def relaunch(tp: TrainParams, module: str, argv: Sequence[str], *, dry_run: bool = False) -> str | None:
    """Replace this process with the launcher when ``train.launch`` needs one.

    Returns None when the caller should train in-process. With ``dry_run`` it returns the
    command (shell-quoted) it would run, or the in-process command, without running anything.
    """
    if not needs_launcher(tp.launch) or under_launcher():
        return shlex.join([sys.executable, "-m", module, *argv]) if dry_run else None
    cmd = launch_command(tp, module, argv)
    if dry_run:
        return shlex.join(cmd)
    exe = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if exe is None:
        raise InputError("accelerate: command not found next to this Python; install accelerate")
    print(f"[train] launching: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execvpe(exe, [exe, *cmd[1:]], launch_env(tp.launch))
    return None  # not reached
