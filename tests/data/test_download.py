"""Stage download with the synthetic source: real ffmpeg renders of a few tiny videos.

The central check is that the event log is true: frames decoded from the mp4
show each logged change inside [start, end] and no change of that object
outside its events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.events import VideoLog
from pipeline.core.io import InputError
from pipeline.core.params import DownloadParams, SyntheticParams, parse_params
from pipeline.data.download import SOURCES, run_download, with_overrides
from pipeline.data.ffmpeg import ffmpeg_exe, ffprobe_exe
from pipeline.data.synthetic import MIN_MOVE, PALETTE, encode, plan_video

ROOT = Path(__file__).resolve().parents[2]
TINY = {"n_videos": 3, "min_duration": 5.0, "max_duration": 7.0, "width": 64, "height": 48, "fps": 10}


def tiny(**kw) -> DownloadParams:
    return DownloadParams(workers=2, synthetic=SyntheticParams(**{**TINY, **kw}))


def read_logs(out: Path) -> list[VideoLog]:
    return [VideoLog.model_validate_json(line) for line in (out / "annotations.jsonl").read_text().splitlines()]


def decode(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def probe(path: Path) -> dict:
    if ffprobe_exe() is None:
        pytest.skip("no ffprobe")
    out = subprocess.run(
        [ffprobe_exe(), "-v", "error", "-count_frames", "-show_entries", "format=duration:stream=nb_read_frames,width,height,pix_fmt",
         "-of", "json", str(path)], capture_output=True, check=True, text=True,
    ).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    summary = run_download(tiny(), out)
    assert summary["written"] == 3 and summary["failed"] == 0
    return out


def test_layout_manifest_and_logs_within_params(rendered):
    logs = read_logs(rendered)
    assert [log.video_id for log in logs] == ["syn_0000", "syn_0001", "syn_0002"]
    assert sorted(p.name for p in (rendered / "videos").iterdir()) == [f"{log.video_id}.mp4" for log in logs]
    manifest = json.loads((rendered / "manifest.json").read_text())
    assert manifest["written"] == 3 and manifest["failed"] == 0 and manifest["failures"] == []
    assert manifest["bytes"] == sum(p.stat().st_size for p in (rendered / "videos").iterdir())
    assert manifest["params"]["synthetic"]["n_videos"] == 3
    p = tiny().synthetic
    for log in logs:
        assert p.min_duration <= log.duration <= p.max_duration
        assert p.min_events <= len(log.events) <= p.max_events
        assert len({o.color for o in log.objects}) == len(log.objects)
        for e in log.events:
            assert p.min_event_duration - 1e-9 <= e.end - e.start <= p.max_event_duration + 1e-9
        for o in log.objects:
            mine = [e for e in log.events if e.object_id == o.id]
            assert mine, f"{log.video_id}: object {o.id} has no event"
            for a, b in zip(mine, mine[1:]):
                assert b.start >= a.end + 0.5 - 1e-9, f"{log.video_id}: events of {o.id} overlap"
        info = probe(rendered / log.video)
        stream = info["streams"][0]
        assert (stream["width"], stream["height"], stream["pix_fmt"]) == (64, 48, "yuv420p")
        assert int(stream["nb_read_frames"]) == round(log.duration * log.fps)
        assert abs(float(info["format"]["duration"]) - log.duration) < 1 / log.fps + 1e-6


def test_same_seed_is_byte_identical_different_seed_differs(rendered, tmp_path):
    again = tmp_path / "again"
    run_download(tiny().model_copy(update={"workers": 1}), again)  # worker count must not matter
    assert (again / "annotations.jsonl").read_bytes() == (rendered / "annotations.jsonl").read_bytes()
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (again, rendered)]
    assert [m["params"].pop("workers") for m in manifests] == [1, 2] and manifests[0] == manifests[1]
    for video in (rendered / "videos").iterdir():
        assert (again / "videos" / video.name).read_bytes() == video.read_bytes(), video.name

    other = tmp_path / "other"
    run_download(tiny(seed=1), other)
    assert (other / "annotations.jsonl").read_bytes() != (rendered / "annotations.jsonl").read_bytes()
    assert (other / "videos/syn_0000.mp4").read_bytes() != (rendered / "videos/syn_0000.mp4").read_bytes()


def test_rerun_with_fewer_videos_leaves_no_stale_file(rendered, tmp_path):
    out = tmp_path / "raw"
    run_download(tiny(), out)
    (out / "videos" / ".syn_0009.mp4.abc.part").write_bytes(b"half")  # as a killed run leaves it
    run_download(tiny(n_videos=1), out)
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["syn_0000.mp4"]
    assert [log.video_id for log in read_logs(out)] == ["syn_0000"]


# ----------------------------------------------------------------------------- the log is true
TRUTH = SyntheticParams(n_videos=1000, min_duration=6.0, max_duration=9.0, width=160, height=120, fps=10)
ACTIONS = {"appears", "disappears", "moves left", "moves right", "moves up", "moves down", "grows", "shrinks", "blinks"}


def covering_plans():
    """A few videos that together contain every action (planning is cheap, rendering is not)."""
    plans, seen = [], set()
    for i in range(TRUTH.n_videos):
        plan = plan_video(TRUTH, i)
        new = {e.action for e in plan.log.events} - seen
        if new:
            plans.append(plan)
            seen |= new
        if seen == ACTIONS:
            return plans
    raise AssertionError(f"no video has {ACTIONS - seen}")


def measure(frames: np.ndarray, color: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: pixel count of the colour, and its centroid x, y (nan when absent)."""
    dist = np.linalg.norm(frames.astype(np.float32) - np.array(PALETTE[color], np.float32), axis=-1)
    mask = dist < 50
    count = mask.sum(axis=(1, 2)).astype(float)
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    with np.errstate(invalid="ignore"):
        cx = (mask * xs).sum(axis=(1, 2)) / count
        cy = (mask * ys).sum(axis=(1, 2)) / count
    return count, cx, cy


def same_state(count, cx, cy, i, j) -> bool:
    if count[i] == 0 or count[j] == 0:
        return count[i] == count[j]
    return abs(count[i] - count[j]) <= 0.05 * max(count[i], count[j]) and abs(cx[i] - cx[j]) < 0.6 and abs(cy[i] - cy[j]) < 0.6


def test_covering_plans_touch_every_action():
    assert {e.action for p in covering_plans() for e in p.log.events} == ACTIONS


@pytest.mark.parametrize("plan", covering_plans(), ids=lambda p: p.log.video_id)
def test_log_is_truthful(plan, tmp_path):
    log = plan.log
    encode(plan, tmp_path / "v.mp4")
    frames = decode(tmp_path / "v.mp4", log.width, log.height)
    assert len(frames) == plan.n_frames
    for obj in log.objects:
        count, cx, cy = measure(frames, obj.color)
        spans = []
        for e in (e for e in log.events if e.object_id == obj.id):
            s, t = round(e.start * log.fps), round(e.end * log.fps)
            spans.append((s, t))
            where = f"{log.video_id} {e.id} ({obj.color} {obj.shape} {e.action} {e.start}-{e.end})"
            if e.action == "appears":
                assert count[s] == 0 and count[t] > 0, where
            elif e.action == "disappears":
                assert count[s] > 0 and count[t] == 0, where
            elif e.action == "blinks":
                inside = count[s:t]
                assert count[s + 1] == 0 and (inside == 0).sum() >= 2 and (inside > 0).sum() >= 2, where
                assert same_state(count, cx, cy, s, t), where
            elif e.action in ("grows", "shrinks"):
                ratio = count[t] / count[s]
                assert (ratio > 1.8) if e.action == "grows" else (ratio < 0.55), (where, ratio)
                assert abs(cx[t] - cx[s]) < 1.5 and abs(cy[t] - cy[s]) < 1.5, where
                steps = np.diff(count[s : t + 1])
                assert (steps >= -3).all() if e.action == "grows" else (steps <= 3).all(), where
            else:
                axis, sign = {"moves left": (cx, -1), "moves right": (cx, 1), "moves up": (cy, -1), "moves down": (cy, 1)}[e.action]
                other = cy if axis is cx else cx
                extent = log.width if axis is cx else log.height
                assert sign * (axis[t] - axis[s]) > 0.8 * MIN_MOVE * extent, where
                assert (sign * np.diff(axis[s : t + 1]) > -0.6).all(), where  # monotonic
                assert abs(other[t] - other[s]) < 1.0 and abs(count[t] - count[s]) <= 0.1 * count[s], where
        # Outside its events the object does not change at all.
        for i in range(plan.n_frames - 1):
            if not any(s <= i and i + 1 <= t for s, t in spans):
                assert same_state(count, cx, cy, i, i + 1), f"{log.video_id} {obj.id} changes at frame {i} outside its events"


# ----------------------------------------------------------------------------- params, CLI, stage
@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"max_duration": 4.0}, "download.synthetic.max_duration"),
        ({"width": 65}, "download.synthetic.width"),
        ({"max_events": 9}, "download.synthetic.max_events"),
        ({"min_event_duration": 3.0}, "download.synthetic.min_event_duration"),
        ({"max_event_duration": 1.0}, "download.synthetic.max_event_duration"),
        ({"colour": "red"}, "download.synthetic.colour"),
    ],
)
def test_bad_params_name_the_key(patch, key):
    with pytest.raises(InputError) as err:
        parse_params({"download": {"synthetic": {**TINY, **patch}}}, "params.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith(f"params.yaml: {key}:"), str(err.value)


def test_overrides_are_validated():
    assert with_overrides(tiny(), n_videos=7, seed=None).synthetic.n_videos == 7
    with pytest.raises(InputError, match=r"^command line: download.synthetic.n_videos:"):
        with_overrides(tiny(), n_videos=0)
    assert set(SOURCES) == {"synthetic", "http", "youtube", "local"}


def test_cli_download(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"download": {"workers": 1, "synthetic": TINY}}))  # JSON is YAML
    result = CliRunner().invoke(app, ["download", "--out", str(tmp_path / "raw"), "--params", str(params), "--n-videos", "1", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "written" in result.output
    logs = read_logs(tmp_path / "raw")
    assert len(logs) == 1 and logs[0] == plan_video(SyntheticParams(**{**TINY, "n_videos": 1, "seed": 5}), 0).log
    bad = CliRunner().invoke(app, ["download", "--out", str(tmp_path / "raw"), "--source", "ftp"])
    assert bad.exit_code == 2 and "download.source" in bad.output


def test_stage_killed_mid_run_leaves_only_complete_videos(tmp_path):
    N = 16
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"download": {"workers": 1, "synthetic": {**TINY, "n_videos": N}}}))
    out = tmp_path / "raw"
    cmd = [sys.executable, "-m", "stages.download", "--out", str(out), "--params", str(params)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / "videos").glob("*.mp4"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # ffmpeg too, mid-file
    proc.wait()
    assert not (out / "annotations.jsonl").exists()
    videos = sorted((out / "videos").glob("*.mp4"))
    assert 2 <= len(videos) < N
    for video in videos:
        frames = decode(video, 64, 48)
        assert len(frames) == plan_video(SyntheticParams(**{**TINY, "n_videos": N}), int(video.stem[4:])).n_frames

    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    assert len(read_logs(out)) == N and not list((out / "videos").glob(".*"))


def test_stage_records_failures_and_fails_in_one_line_when_nothing_is_written(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"download": {"workers": 1, "synthetic": {**TINY, "n_videos": 2}}}))
    env = {**os.environ, "RARFT_FFMPEG": "/bin/false"}  # an encoder that always fails
    cmd = [sys.executable, "-m", "stages.download", "--out", str(tmp_path / "raw"), "--params", str(params)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no video written" in proc.stderr and "syn_0000" in proc.stderr
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["written"] == 0 and [f["id"] for f in manifest["failures"]] == ["syn_0000", "syn_0001"]
    assert not list((tmp_path / "raw" / "videos").iterdir())
