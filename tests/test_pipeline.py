"""The real DVC pipeline, end to end, in a temporary git repo with small params.

This is the test the README's promise rests on: `dvc repro` runs every stage,
a second `dvc repro` runs nothing, and a param change reruns exactly the stages
downstream of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ["pipeline", "stages", "configs", "data/import", "dvc.yaml", "params.yaml", "pyproject.toml"]

# Each value shrunk from the default so the whole method runs in a few minutes on 2 cores.
SMALL = {
    "download": {"synthetic": {"n_videos": 10, "min_duration": 8.0, "max_duration": 12.0}},  # 10 short videos
    "riq": {"test_fraction": 0.3},  # enough test videos for both classes
    "model": {"warm_start": {"epochs": 1.0},  # format only needs a short warm start
              "vision_pretrain": {"steps": 10}},  # proves the wiring; learning is shown by the default run
    "train": {"max_steps": 2, "max_completion_length": 48,  # two GRPO steps prove the loop
              "per_device_train_batch_size": 8},  # 2 prompts a step are enough to prove it
    "evaluate": {"max_new_tokens": 48},
}


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _run(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{out[-6000:]}"
    return out


def _ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def copy_project(d: Path) -> None:
    """What a fresh clone has that the pipeline reads (data/import: a build_riq dep)."""
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, d / name)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("repo")
    copy_project(d)
    params = yaml.safe_load((d / "params.yaml").read_text())
    (d / "params.yaml").write_text(yaml.safe_dump(_merge(params, SMALL), sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    _run(["git", "init", "-q"], d)
    _run(["git", "config", "user.email", "t@example.com"], d)
    _run(["git", "config", "user.name", "t"], d)
    _run([dvc, "init", "-q"], d)
    _run([dvc, "config", "core.analytics", "false"], d)
    _run(["git", "add", "-A"], d)
    _run(["git", "commit", "-qm", "init"], d)
    return d


@pytest.mark.slow
def test_repro_end_to_end(repo: Path):
    dvc = str(Path(sys.executable).parent / "dvc")
    out = _run([dvc, "repro"], repo)
    assert _ran(out) == {"download", "extract_frames", "build_riq", "make_model", "train", "evaluate@synthetic"}

    metrics = json.loads((repo / "reports" / "metrics" / "synthetic.json").read_text())
    for model in ("base", "trained"):
        block = metrics[model]
        for key in ("format_rate", "n_items"):
            assert key in block, f"{model}.{key} missing"
        for group, keys in {
            "reward": ["total", "format", "refuse_iou", "explain", "correction"],
            "relevance": ["accuracy", "f1_relevant", "f1_irrelevant", "f1_macro"],
            "ra_iou": ["mean", "r@0.3", "r@0.5", "r@0.7"],
            "grounding": ["miou", "r@0.3", "r@0.5", "r@0.7"],
        }.items():
            for k in keys:
                assert k in block[group], f"{model}.{group}.{k} missing"
    # Keys are sorted so diffs of metrics.json stay readable.
    text = (repo / "reports" / "metrics" / "synthetic.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"

    # Nothing changed: nothing runs.
    assert _ran(_run([dvc, "repro"], repo)) == set()

    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "repro"], repo)

    # A reward weight only touches train and evaluate.
    out = _run([dvc, "exp", "run", "-S", "train.reward_weights.format=0.5"], repo)
    assert _ran(out) == {"train", "evaluate@synthetic"}
    # The new weight reached evaluate: reward.total is the weighted sum of the reward means.
    after = json.loads((repo / "reports" / "metrics" / "synthetic.json").read_text())
    for model in ("base", "trained"):
        r = after[model]["reward"]
        expected = 0.5 * r["format"] + r["refuse_iou"] + r["explain"] + r["correction"]
        assert r["total"] == pytest.approx(expected, abs=1e-6)
    diff = json.loads(_run([dvc, "metrics", "diff", "--all", "--json"], repo))
    assert "base.reward.total" in diff["reports/metrics/synthetic.json"]

    # A frame parameter reruns frame extraction and everything downstream, not the download.
    out = _run([dvc, "exp", "run", "-S", "frames.fps=1.0"], repo)
    ran = _ran(out)
    assert {"extract_frames", "build_riq"} <= ran
    assert "download" not in ran
