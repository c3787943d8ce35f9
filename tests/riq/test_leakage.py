"""The leakage guard (pipeline.riq.leakage) in build_riq and evaluate: on the real files and on a planted overlap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.frames_cache import VideoFrames, save_frames
from pipeline.core.io import InputError
from pipeline.core.params import parse_params
from pipeline.riq.build import build_riq
from pipeline.train.profiles import read_profile

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "protocol"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def protocol_riq(**eval_overrides):
    """The paper-cpu profile's riq section, without generated refusals (the guard does not need them)."""
    riq = read_profile("paper-cpu")["riq"]
    for name, patch in eval_overrides.items():
        riq["eval_sets"][name] |= patch
    return parse_params({"riq": riq | {"generators": {}, "audit": False}}).riq


@pytest.fixture
def inputs(tmp_path):
    """The fixture annotations in an imports folder and a frames file (real duration) for every video."""
    imports = tmp_path / "import"
    shutil.copytree(FIXTURES / "annotations", imports)
    frames = tmp_path / "frames"
    frames.mkdir()
    for vid, duration in json.loads((FIXTURES / "videos.json").read_text()).items():
        save_frames(frames / f"{vid}.npz", VideoFrames(np.zeros((2, 28, 28, 3), np.uint8), np.array([0.0, 1.0]), {"duration": duration}))
    return imports, frames


def test_exclude_from_train_drops_the_train_records_of_evaluation_videos(inputs, tmp_path):
    imports, frames = inputs
    stats = build_riq(protocol_riq(), "unused", frames, tmp_path / "riq", tmp_path / "stats.json", imports=[imports])
    leak = stats["sets"]["human_anno"]["leakage"]
    assert (leak["videos"], leak["first"], leak["excluded_train_videos"], leak["excluded_train_records"]) == (2, ["9RKTE", "DJMZC"], 2, 2)
    assert stats["quarantined"]["leakage"] == 2 and stats["leakage"] == {"excluded_train_videos": 2, "excluded_train_records": 2, "allowed_videos": 0}
    train = [json.loads(x) for x in (tmp_path / "riq" / "train.jsonl").read_text().splitlines()]
    assert not {"9RKTE", "DJMZC"} & {r["video"] for r in train} and len(train) == stats["records"]["train"] == 8
    # The other sets share no video with the train RIQ.
    assert all(s["leakage"]["videos"] == 0 for n, s in stats["sets"].items() if n != "human_anno")


def test_planted_overlap_in_a_hi_vtg_set_fails_the_build_in_one_line(inputs, tmp_path):
    imports, frames = inputs
    items = json.loads((imports / "hi_vtg_charades.json").read_text())
    planted = dict(items[0], video="/somewhere/004QE.mp4", duration=30.6)  # 004QE: a Charades-STA train video
    (imports / "hi_vtg_charades.json").write_text(json.dumps([*items, planted]))
    with pytest.raises(InputError) as exc:
        build_riq(protocol_riq(), "unused", frames, tmp_path / "riq", tmp_path / "stats.json", imports=[imports])
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{imports / 'hi_vtg_charades.json'}: evaluation set hi_vtg_charades: 1 video ")
    assert "(first: 004QE)" in msg and "riq.eval_sets.hi_vtg_charades.leakage" in msg
    assert not (tmp_path / "riq" / "train.jsonl").exists()  # nothing written
    # 'allow' keeps the overlap and says so in the stats.
    stats = build_riq(protocol_riq(hi_vtg_charades={"leakage": "allow"}), "unused", frames, tmp_path / "riq", tmp_path / "stats.json", imports=[imports])
    assert stats["sets"]["hi_vtg_charades"]["leakage"] | {"first": None} == {"policy": "allow", "videos": 1, "queries": 0, "first": None,
                                                                           "excluded_train_videos": 0, "excluded_train_records": 0}
    assert stats["leakage"]["allowed_videos"] == 1


def test_the_stage_exits_2_with_the_one_line_error(inputs, tmp_path, capsys):
    import stages.build_riq as stage

    imports, frames = inputs
    riq = read_profile("paper-cpu")["riq"]
    riq["eval_sets"]["human_anno"]["leakage"] = "error"
    (tmp_path / "params.yaml").write_text(json.dumps({"riq": riq | {"generators": {}, "audit": False}}))
    with pytest.raises(SystemExit) as exc:
        stage.main(["--annotations", "x", "--frames", str(frames), "--imports", str(imports), "--out", str(tmp_path / "riq"),
                    "--stats", str(tmp_path / "s.json"), "--params", str(tmp_path / "params.yaml")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluation set human_anno: 2 videos" in err[0] and "(first: 9RKTE, DJMZC)" in err[0]


def test_evaluate_checks_again_on_the_files_it_reads(inputs, tmp_path):
    """A train.jsonl edited after build_riq cannot slip a test video in: evaluate fails before loading a model."""
    from pipeline.core.params import Params
    from pipeline.evaluate.run import evaluate

    imports, frames = inputs
    build_riq(protocol_riq(), "unused", frames, tmp_path / "riq", tmp_path / "stats.json", imports=[imports])
    riq = tmp_path / "riq"
    leaked = (riq / "train.jsonl").read_text() + (riq / "eval" / "human_anno.jsonl").read_text().splitlines()[0] + "\n"
    (riq / "train.jsonl").write_text(leaked)
    params = Params().model_copy(update={"riq": protocol_riq()})
    with pytest.raises(InputError, match=r"evaluation set human_anno: 1 video \(1 with the same query text\).*still holds them"):
        evaluate("no-model", "no-model", riq / "eval" / "human_anno.jsonl", tmp_path / "out", tmp_path / "m.json", params,
                 frames_dir=frames, set_name="human_anno", train_riq=riq / "train.jsonl")


@pytest.mark.skipif(not (SHARED / "hi-vtg" / "human_anno.json").is_file(), reason="needs ../shared/data (the real annotation files)")
def test_on_the_real_files_15_human_annotated_videos_are_charades_sta_train_videos(tmp_path):
    """The real Charades-STA train file (12,408 queries) against the released sets: no frames needed, the files are compared."""
    imports = tmp_path / "import"
    imports.mkdir()
    for src, name in ((SHARED / "charades-sta" / "train.json", "charades_sta_train.txt"), (SHARED / "charades-sta" / "test.json", "charades_sta_test.txt"),
                      (SHARED / "hi-vtg" / "hi_vtg_charades.json", "hi_vtg_charades.json"), (SHARED / "hi-vtg" / "human_anno.json", "human_anno.json")):
        (imports / name).symlink_to(src)
    riq = read_profile("gpu8")["riq"]
    # The shared copy of Charades-STA is the JSON layout: same queries, other file name.
    riq["train_sets"]["charades_sta_train"]["file"] = "charades_sta_train.json"
    riq["eval_sets"]["charades_sta_test"]["file"] = "charades_sta_test.json"
    (imports / "charades_sta_train.txt").rename(imports / "charades_sta_train.json")
    (imports / "charades_sta_test.txt").rename(imports / "charades_sta_test.json")
    riq["eval_sets"] = {k: v | {"required": False} for k, v in riq["eval_sets"].items()}
    params = parse_params({"riq": riq | {"generators": {}, "audit": False}}).riq
    stats = build_riq(params, "unused", tmp_path / "no-frames", tmp_path / "riq", tmp_path / "stats.json", imports=[imports])
    sets = stats["sets"]
    assert stats["source"]["train_sets"]["charades_sta_train"]["queries"] == 12408
    assert (sets["human_anno"]["leakage"]["videos"], sets["human_anno"]["leakage"]["excluded_train_videos"]) == (15, 15)
    assert sets["hi_vtg_charades"]["leakage"]["videos"] == 0 and sets["charades_sta_test"]["leakage"]["videos"] == 0
    assert sets["hi_vtg_charades"]["videos_in_file"] == 753 and sets["human_anno"]["videos_in_file"] == 100
    # With the default policy the same files fail the build.
    riq["eval_sets"]["human_anno"]["leakage"] = "error"
    with pytest.raises(InputError, match=r"evaluation set human_anno: 15 videos"):
        build_riq(parse_params({"riq": riq | {"generators": {}, "audit": False}}).riq, "unused", tmp_path / "no-frames",
                  tmp_path / "riq2", tmp_path / "stats2.json", imports=[imports])
