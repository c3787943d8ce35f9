"""The paper's protocol through the real DVC graph: real annotation excerpts, stand-in videos.

tests/fixtures/protocol holds a few items of the real files (make_fixtures.py says which):
Charades-STA train (the TALL .txt layout, no durations) and ActivityNet Captions train as the
train RIQ; hi_vtg_charades, human_anno, Charades-STA test and ActivityNet val_2 as evaluation
sets. Two human_anno videos are Charades-STA train videos. ffmpeg renders a stand-in video of
each real id with its real duration; `rarft profile paper-cpu` and the local source do the rest.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_pipeline import _merge, _ran, _run, copy_project

from pipeline.data.ffmpeg import ffmpeg_exe

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "protocol"
PRESENT = {"hi_vtg_charades", "human_anno", "charades_sta_test", "activitynet_val_2"}
OVERLAP = {"9RKTE", "DJMZC"}  # human_anno videos that are Charades-STA train videos

# Each value shrunk from the CPU default so the whole graph runs in a few minutes (as test_pipeline.SMALL).
SMALL = {
    "model": {"warm_start": {"epochs": 1.0,  # format only needs a short warm start
                             "holdout_videos": 1, "eval_records": 4},  # 4 train videos: keep 3 to train on
              "vision_pretrain": {"steps": 10}},  # proves the wiring
    "train": {"max_steps": 2, "max_completion_length": 48, "per_device_train_batch_size": 8},  # two GRPO steps prove the loop
    "evaluate": {"max_new_tokens": 48, "controls": {"swapped": True, "blind": True}},
}


def render(folder: Path, durations: dict[str, float]) -> None:
    """A small moving test pattern per id, of the id's real duration (mp4, 64x48, 10 fps)."""
    folder.mkdir(parents=True)
    for vid, seconds in durations.items():
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10:duration={seconds}",
                        "-pix_fmt", "yuv420p", str(folder / f"{vid}.mp4")], check=True)


@pytest.fixture(scope="module")
def protocol_repo(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("protocol")
    copy_project(d)
    for f in (FIXTURES / "annotations").iterdir():
        shutil.copy2(f, d / "data" / "import" / f.name)
    videos = tmp_path_factory.mktemp("videos") / "Charades_and_ActivityNet"
    render(videos, json.loads((FIXTURES / "videos.json").read_text()))
    rarft = str(Path(sys.executable).parent / "rarft")
    _run([rarft, "profile", "paper-cpu"], d)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params = _merge(params, SMALL | {"download": {"local": {"folder": str(videos)}}})
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"], ["git", "config", "user.name", "t"],
                 [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        _run(args, d)
    return d


@pytest.mark.slow
def test_paper_protocol_runs_the_whole_graph_on_real_ids(protocol_repo: Path):
    d = protocol_repo
    out = _run([str(Path(sys.executable).parent / "dvc"), "repro"], d)
    sets = yaml.safe_load((d / "params.yaml").read_text())["riq"]["eval_sets"]
    assert _ran(out) == {"download", "extract_frames", "build_riq", "make_model", "train"} | {f"evaluate@{s}" for s in sets}

    stats = json.loads((d / "data" / "reports" / "riq_stats.json").read_text())
    for name, st in stats["sets"].items():
        # Nothing is lost, per set: every query read is written or quarantined.
        assert st["in"] == st["written"] + st["quarantined"] == sum(st.get("quarantined_by_reason", {}).values()) + st["written"], name
        metrics = json.loads((d / "reports" / "metrics" / f"{name}.json").read_text())
        assert metrics["trained"]["n_items"] == (st["written"] if name in PRESENT else 0), name
        assert (name in PRESENT) == st.get("present", True), name
    for name, st in stats["source"]["train_sets"].items():
        assert st["in"] == st["written"] + st["quarantined"] and st["written"] > st["queries"] > 0, name  # refusals were generated
    assert stats["sets"]["charades_sta_test"]["written"] == 11 and stats["sets"]["hi_vtg_charades"]["written"] == 6

    # Durations the .txt layout lacks came from the frames.
    assert stats["source"]["train_sets"]["charades_sta_train"]["videos"] == 4
    # The guard found the two human_anno videos of Charades-STA train and dropped their train records.
    leak = stats["sets"]["human_anno"]["leakage"]
    assert (leak["policy"], leak["videos"], sorted(leak["first"]), leak["excluded_train_videos"]) == ("exclude_from_train", 2, sorted(OVERLAP), 2)
    assert leak["excluded_train_records"] > 0 and stats["leakage"]["excluded_train_videos"] == 2
    train = [json.loads(x) for x in (d / "data" / "riq" / "train.jsonl").read_text().splitlines()]
    assert {r["video"] for r in train} == {"004QE", "00HFP", "v_-DaX_1bBNAo", "v_-G-sh-NhYtk"}  # both datasets, no evaluation video
    assert {r["source"] for r in train} == {"charades_sta_train", "activitynet_train"}
    quarantine = (d / "data" / "riq" / "quarantine.jsonl").read_text()
    assert quarantine.count("riq.eval_sets.human_anno.leakage: exclude_from_train") == leak["excluded_train_records"]
    human = json.loads((d / "reports" / "metrics" / "human_anno.json").read_text())
    assert human["trained"]["leakage"] == {"policy": "exclude_from_train", "videos": 0, "queries": 0, "first": []}
    # Per-difficulty/category breakdowns and the controls are in every non-empty set's metrics.
    hv = json.loads((d / "reports" / "metrics" / "hi_vtg_charades.json").read_text())["trained"]
    assert {"by_difficulty", "by_category", "control", "visual_gain"} <= set(hv)
    grounding = json.loads((d / "reports" / "metrics" / "charades_sta_test.json").read_text())["trained"]["grounding"]
    assert {"miou", "r@0.3", "r@0.5", "r@0.7"} <= set(grounding)


def test_gpu8_profile_renders_the_launch_command_and_an_evaluate_stage_per_set(tmp_path):
    """`rarft profile gpu8` in a fresh repo (no data): DVC lists evaluate@<set> for every released set, each
    reading its own RIQ file and writing its own metrics file, and train renders the 8-GPU ZeRO-3 launch."""
    copy_project(tmp_path)
    bin_dir = Path(sys.executable).parent
    _run([str(bin_dir / "rarft"), "profile", "gpu8"], tmp_path)
    for args in (["git", "init", "-q"], [str(bin_dir / "dvc"), "init", "-q"]):
        _run(args, tmp_path)
    from dvc.repo import Repo

    stages = {s.name: s for s in Repo(str(tmp_path)).index.stages}
    sets = {"hi_vtg_charades", "hi_vtg_tvgbench", "ss_vtg_charades", "ss_vtg_qvhighlight", "human_anno",
            "hi_vtg_activitynet", "ss_vtg_activitynet", "charades_sta_test", "activitynet_val_2"}
    assert set(stages) == {"download", "extract_frames", "build_riq", "make_model", "train"} | {f"evaluate@{s}" for s in sets}
    for s in sets:
        cmd = stages[f"evaluate@{s}"].cmd
        assert f"--riq data/riq/eval/{s}.jsonl" in cmd and f"--metrics reports/metrics/{s}.json" in cmd and "--train-riq data/riq/train.jsonl" in cmd
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["riq"]["source"] == "sets" and params["riq"]["train_sets"]["charades_sta_train"]["file"] == "charades_sta_train.txt"
    assert params["riq"]["eval_sets"]["human_anno"]["leakage"] == "exclude_from_train"
    launch = _run([sys.executable, "-m", *stages["train"].cmd.split()[2:], "--dry-run"], tmp_path).strip().splitlines()[-1]
    assert launch.startswith("accelerate launch ") and "--num_processes 8" in launch and "configs/deepspeed/zero3.json" in launch
