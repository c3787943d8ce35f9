"""Frame extraction: same frames, indices and sizes as qwen-vl-utils, on real videos made with ffmpeg."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core import frames_cache as C
from pipeline.core.io import InputError
from pipeline.core.params import FramesParams, load_params
from pipeline.data import decode as D
from pipeline.data import frames as F
from pipeline.data import sizing as S
from pipeline.data.ffmpeg import ffmpeg_exe, ffprobe_exe
from rotated_video import write_rotated

ROOT = Path(__file__).resolve().parents[2]

# name -> (ffmpeg lavfi source, extra output args). Different durations, rates
# (integer, NTSC, variable), aspect ratios (4:3, 16:9, portrait) and a rotated stream.
VIDEOS = {
    "synthetic_like": ("testsrc2=size=160x120:rate=10:duration=12", []),
    "portrait_30fps": ("testsrc2=size=120x214:rate=30:duration=7.3", []),
    "wide_ntsc": ("testsrc2=size=320x180:rate=30000/1001:duration=9", []),
    "short_clip": ("testsrc2=size=160x120:rate=10:duration=1.2", []),
    "vfr": ("testsrc2=size=240x180:rate=30:duration=6", ["-vf", "select='not(mod(n,3))+gt(n,90)'", "-fps_mode", "vfr"]),
    "mandelbrot_24": ("mandelbrot=size=192x144:rate=24", ["-t", "5"]),
}


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], check=True)


def _make(path: Path, source: str, extra: list[str]) -> Path:
    _ffmpeg("-f", "lavfi", "-i", source, *extra, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    out = {name: _make(root / f"{name}.mp4", src, extra) for name, (src, extra) in VIDEOS.items()}
    # Display-matrix rotation: decoders must hand out 120x160 portrait frames.
    out["rotated"] = write_rotated(ffmpeg_exe(), out["synthetic_like"], root / "rotated.mp4", 90)
    return out


@pytest.fixture(scope="module")
def params() -> FramesParams:
    return FramesParams()


def _qwen_element(path: Path, p: FramesParams) -> dict:
    return {
        "video": str(path), "fps": p.fps, "min_frames": p.min_frames, "max_frames": p.max_frames,
        "min_pixels": p.min_pixels, "max_pixels": p.max_pixels, "total_pixels": p.total_pixels,
    }


# --------------------------------------------------------------------------- qwen rules
def test_planning_matches_qwen_vl_utils_functions(params):
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    import torch

    cases = [FramesParams(), FramesParams(fps=1.0, min_frames=5, max_frames=33), FramesParams(fps=4.0, total_pixels=20000)]
    for p in cases:
        for total in (2, 3, 7, 12, 99, 100, 301, 1799, 9001):
            for fps in (1.0, 10.0, 23.976, 30000 / 1001, 450 / 23, 60.0):
                ele = {"fps": p.fps, "min_frames": p.min_frames, "max_frames": p.max_frames}
                try:
                    n_q = vp.smart_nframes(ele, total_frames=total, video_fps=fps)
                except ValueError:
                    with pytest.raises(ValueError):
                        S.plan_sampling(total, fps, p)
                    continue
                idx, sample_fps = S.plan_sampling(total, fps, p)
                assert idx == torch.linspace(0, total - 1, n_q).round().long().tolist()
                assert sample_fps == n_q / total * fps
                for h, w in ((120, 160), (214, 120), (180, 320), (1080, 1920), (28, 3000), (13, 17)):
                    cap = max(min(vp.VIDEO_MAX_TOKEN_NUM * 28 * 28, p.total_pixels / n_q * 2), int(p.min_pixels * 1.05))
                    cap = min(p.max_pixels, cap)
                    assert S.plan_size(h, w, n_q, p) == vp.smart_resize(h, w, 28, p.min_pixels, cap)


def test_default_budget_keeps_synthetic_videos_under_180_tokens():
    p = FramesParams()
    assert p.total_pixels == 180 * 28 * 28
    # 160x120 at 10 fps, 8-30 s: per temporal pair of frames, H*W/784 merged tokens.
    worst = 0
    for seconds in range(8, 31):
        idx, _ = S.plan_sampling(seconds * 10, 10.0, p)
        h, w = S.plan_size(120, 160, len(idx), p)
        worst = max(worst, len(idx) // 2 * (h * w) // 784)
    assert 0 < worst <= 180
    # 8 s: 16 frames, cap 141120/16*2 = 17640 px -> 112x140 = 20 tokens per pair, 8 pairs.
    assert S.plan_size(120, 160, 16, p) == (112, 140)


@pytest.mark.parametrize("name", list(VIDEOS) + ["rotated"])
def test_same_frames_as_qwen_fetch_video(videos, params, name):
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    decord = pytest.importorskip("decord")
    assert vp.get_video_reader_backend() == "decord"  # what qwen-vl-utils uses here by default
    path = videos[name]

    ours = F.extract_video(path, params)
    qwen, meta = vp.fetch_video(_qwen_element(path, params), return_video_metadata=True)
    qwen = qwen.permute(0, 2, 3, 1).numpy()

    assert ours.frames.dtype == np.uint8
    assert ours.frames.shape == qwen.shape
    assert ours.meta["frame_indices"] == list(meta["frames_indices"])
    assert ours.meta["total_frames"] == meta["total_num_frames"]
    assert ours.meta["source_fps"] == pytest.approx(meta["fps"], rel=1e-12)
    assert ours.meta["sample_fps"] == pytest.approx(len(ours.frames) / meta["total_num_frames"] * meta["fps"])
    # Presentation times of the kept frames, as decord indexes them (exact also for VFR).
    vr = decord.VideoReader(str(path))
    expected_t = vr.get_frame_timestamp(ours.meta["frame_indices"])[:, 0]
    np.testing.assert_allclose(ours.timestamps, expected_t, atol=1e-4)
    # Pixels come from another resampler (swscale vs torchvision): close, not equal.
    mad = float(np.abs(qwen - ours.frames.astype(np.float32)).mean())
    print(f"{name}: {ours.frames.shape} mean abs diff vs qwen-vl-utils = {mad:.3f}")
    assert mad < 1.0


def test_probe_backends_agree(videos):
    for name, path in videos.items():
        via_av = D.probe_video(path, backend="av")
        via_ffmpeg = D.probe_video(path, backend="ffmpeg")
        assert via_ffmpeg["total_frames"] == via_av["total_frames"], name
        assert (via_ffmpeg["width"], via_ffmpeg["height"]) == (via_av["width"], via_av["height"]), name
        assert via_ffmpeg["fps"] == pytest.approx(via_av["fps"], rel=1e-3), name  # ffmpeg -i prints 4 digits
        if ffprobe_exe():
            via_ffprobe = D.probe_video(path, backend="ffprobe")
            assert via_ffprobe["fps"] == via_av["fps"], name
            assert via_ffprobe["total_frames"] == via_av["total_frames"], name


def test_fallback_without_pyav_gives_the_same_frames(videos, params):
    """Probing through ffmpeg/ffprobe output and timing through showinfo: same result on VFR."""
    fast = F.extract_video(videos["vfr"], params)
    slow = F.extract_video(videos["vfr"], params, probe_backend="ffmpeg")
    assert slow.meta["frame_indices"] == fast.meta["frame_indices"]
    np.testing.assert_array_equal(slow.frames, fast.frames)
    np.testing.assert_allclose(slow.timestamps, fast.timestamps, atol=1e-9)


# --------------------------------------------------------------------------- files
def test_frames_file_round_trip_is_pickle_free(videos, params, tmp_path):
    vf = F.extract_video(videos["synthetic_like"], params)
    dest = C.save_frames(tmp_path / "v.npz", vf)
    assert sorted(os.listdir(tmp_path)) == ["v.npz"]  # no temp left, no ".npz.npz"
    with np.load(dest, allow_pickle=False) as data:
        assert set(data.files) == {"frames", "timestamps", "meta"}
        assert data["meta"].shape == () and data["meta"].dtype.kind == "U"
        assert data["timestamps"].dtype == np.float64
    back = C.load_frames(dest)
    np.testing.assert_array_equal(back.frames, vf.frames)
    np.testing.assert_array_equal(back.timestamps, vf.timestamps)
    m = back.meta
    assert m["id"] == "synthetic_like" and m["n_frames"] == 24 and (m["height"], m["width"]) == (84, 112)
    assert m["total_frames"] == 120 and m["source_fps"] == 10.0 and m["duration"] == pytest.approx(12.0)
    assert m["frame_indices"][:4] == [0, 5, 10, 16] and m["params"]["total_pixels"] == params.total_pixels


def test_failed_write_leaves_old_file_and_no_partial(videos, params, tmp_path):
    vf = F.extract_video(videos["short_clip"], params)
    dest = C.save_frames(tmp_path / "v.npz", vf)
    before = dest.read_bytes()

    class Exploding:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        C.save_frames(dest, C.VideoFrames(frames=Exploding(), timestamps=vf.timestamps, meta=vf.meta))
    assert dest.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["v.npz"]

    new = tmp_path / "new.npz"
    with pytest.raises(RuntimeError):
        C.save_frames(new, C.VideoFrames(frames=Exploding(), timestamps=vf.timestamps, meta=vf.meta))
    assert not new.exists() and sorted(os.listdir(tmp_path)) == ["v.npz"]


def test_killed_write_leaves_no_file(tmp_path):
    """SIGKILL in the middle of writing: the destination name never holds a partial file."""
    dest = tmp_path / "big.npz"
    # The writer is killed after the first bytes of the archive reached the temp file.
    code = (
        "import os, signal\n"
        "import numpy as np\n"
        "import pipeline.core.frames_cache as C\n"
        "def savez(fh, **arrays):\n"
        "    fh.write(b'PK partial archive')\n"
        "    fh.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "np.savez = savez\n"
        f"C.save_frames({str(dest)!r}, C.VideoFrames(np.zeros((2, 28, 28, 3), np.uint8), np.zeros(2), {{}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    assert proc.returncode == -9
    assert not dest.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".big.npz.") for name in leftovers)  # only a hidden temp, never the real name


def test_broken_videos_are_reported_and_never_kill_the_run(videos, params, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("synthetic_like", "vfr"):
        (src / f"{name}.mp4").write_bytes(videos[name].read_bytes())
    good = videos["wide_ntsc"].read_bytes()
    (src / "truncated.mp4").write_bytes(good[: len(good) // 2])  # moov atom is at the end: cut off
    (src / "zero.mp4").write_bytes(b"")
    (src / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", str(src / "audio_only.m4a"))
    out = tmp_path / "frames"
    out.mkdir()
    (out / "zero.npz").write_bytes(b"stale frames from an earlier run")

    failures = tmp_path / "reports" / "failures.jsonl"
    summary = F.extract_dir(src, out, params, failures_path=failures, workers=2, progress=False)

    assert summary["inputs"] == 6 and summary["processed"] == 2 and summary["failed"] == 4
    rows = [json.loads(line) for line in failures.read_text().splitlines()]
    reasons = {r["id"]: r["error"] for r in rows}
    assert set(reasons) == {"truncated", "zero", "garbage", "audio_only"}
    assert all(set(r) == {"id", "path", "error"} and "\n" not in r["error"] for r in rows)
    assert "no video stream" in reasons["audio_only"]
    assert "0 bytes" in reasons["zero"]
    assert reasons["truncated"].startswith(str(src / "truncated.mp4"))
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_like.npz", "vfr.npz"]
    assert [r["id"] for r in summary["videos"]] == sorted(["synthetic_like", "vfr", "truncated", "zero", "garbage", "audio_only"])


def test_video_with_fewer_frames_than_planned_is_an_error(videos, tmp_path):
    with pytest.raises(D.VideoError, match="decoded 2 of 3 planned frames"):
        D.decode_selected(videos["short_clip"], [0, 5, 12], 56, 84)


# --------------------------------------------------------------------------- CLI and params
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_cli_json_one_object_per_video(videos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "clip.mp4").write_bytes(videos["portrait_30fps"].read_bytes())
    (src / "broken.mp4").write_bytes(b"not a video at all")
    proc = _cli("extract", str(src), "--out", str(tmp_path / "out"), "--fps", "1", "--workers", "1", "--json")
    assert proc.returncode == 1, proc.stderr  # one video failed
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["broken", "clip"]
    assert set(rows[0]) == {"id", "path", "error"}
    clip = rows[1]
    assert set(clip) == {"id", "path", "n_frames", "height", "width", "sample_fps", "timestamps", "duration"}
    # 219 frames at 30 fps, 1 fps -> 7.3 -> 6 frames; 120x214 under 141120/6*2 px -> 224x112 (multiples of 28).
    assert clip["n_frames"] == 6 and len(clip["timestamps"]) == 6
    assert (clip["height"], clip["width"]) == (224, 112)
    assert clip["sample_fps"] == pytest.approx(6 / 219 * 30)
    assert clip["duration"] == pytest.approx(7.3)
    assert C.load_frames(clip["path"]).frames.shape == (6, 224, 112, 3)
    again = _cli("extract", str(src), "--out", str(tmp_path / "out"), "--fps", "1", "--workers", "1", "--force")
    assert again.returncode == 1 and again.stdout.startswith("1 extracted, 0 up to date, 1 failed of 2 videos"), again.stdout


@pytest.mark.parametrize(("args", "key"), [(["--fps", "-1"], "frames.fps"), (["--total-pixels", "0"], "frames.total_pixels")])
def test_cli_bad_param_is_one_line_naming_the_key(videos, tmp_path, args, key):
    proc = _cli("extract", str(videos["short_clip"]), "--out", str(tmp_path), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr


def test_params_file_bad_value_names_the_key(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("frames:\n  min_pixels: 10000\n  max_pixels: 5000\n")
    with pytest.raises(InputError, match=r"^.*params.yaml: frames: .*min_pixels must be <= max_pixels"):
        load_params(bad)


def test_long_selection_keeps_every_planned_frame(tmp_path):
    # 768 kept frames (the max_frames cap): a flat sum of eq() terms this long
    # does not parse in ffmpeg 5.1, so the select expression must be grouped.
    src = _make(tmp_path / "long.mp4", "testsrc=size=64x48:rate=25", ["-t", "40"])
    vf = F.extract_video(src, FramesParams(fps=20.0))
    assert vf.frames.shape[0] == 768
    assert vf.meta["frame_indices"][-1] == 999


# --------------------------------------------------------------------------- incremental runs
def _stamp(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def _counts(summary: dict) -> tuple[int, int, int, int]:
    return summary["processed"], summary["skipped"], summary["failed"], summary["removed"]


def test_rerun_extracts_only_new_changed_and_failed_videos(videos, params, tmp_path):
    src, out, failures = tmp_path / "in", tmp_path / "frames", tmp_path / "failures.jsonl"
    src.mkdir()
    for name in ("short_clip", "mandelbrot_24", "portrait_30fps"):
        (src / f"{name}.mp4").write_bytes(videos[name].read_bytes())
    (src / "broken.mp4").write_bytes(b"not a video")

    def run(p=params, **kw):
        return F.extract_dir(src, out, p, failures_path=failures, workers=2, progress=False, **kw)

    first = run()
    assert _counts(first) == (3, 0, 1, 0)
    before = _stamp(out)

    again = run()
    assert _counts(again) == (0, 3, 1, 0)
    assert _stamp(out) == before  # no file rewritten
    assert again["videos"] == first["videos"]  # skipped rows are rebuilt from the cached meta
    assert [json.loads(line)["id"] for line in failures.read_text().splitlines()] == ["broken"]  # still listed

    # Same name, other content (a different clip) -> only that one; a fixed video -> extracted.
    (src / "short_clip.mp4").write_bytes(videos["synthetic_like"].read_bytes())
    (src / "broken.mp4").write_bytes(videos["vfr"].read_bytes())
    changed = run()
    assert _counts(changed) == (2, 2, 0, 0)
    assert C.load_frames(out / "short_clip.npz").meta["total_frames"] == 120  # synthetic_like's 12 s at 10 fps
    assert failures.read_text() == ""

    # A damaged cache file is not a hit.
    (out / "mandelbrot_24.npz").write_bytes((out / "mandelbrot_24.npz").read_bytes()[:1000])
    assert _counts(run()) == (1, 3, 0, 0)

    # Output params changed -> everything; workers alone is not an output param.
    assert _counts(run(params.model_copy(update={"workers": 1}))) == (0, 4, 0, 0)
    refps = run(params.model_copy(update={"fps": 1.0}))
    assert _counts(refps) == (4, 0, 0, 0)
    assert C.load_frames(out / "short_clip.npz").meta["n_frames"] == 12
    assert _counts(run(params.model_copy(update={"fps": 1.0}), force=True)) == (4, 0, 0, 0)

    # A removed video: its frames stay without prune, go with it (and so do killed-run temps).
    (src / "mandelbrot_24.mp4").unlink()
    (out / ".portrait_30fps.npz.abc123.npz").write_bytes(b"PK partial")
    (out / "notes.txt").write_text("not ours")
    assert _counts(run(params.model_copy(update={"fps": 1.0}))) == (0, 3, 0, 0)
    assert (out / "mandelbrot_24.npz").exists()
    pruned = run(params.model_copy(update={"fps": 1.0}), prune=True)
    assert _counts(pruned) == (0, 3, 0, 1)
    assert sorted(p.name for p in out.iterdir()) == ["broken.npz", "notes.txt", "portrait_30fps.npz", "short_clip.npz"]


@pytest.mark.parametrize("key", ["format_version", "extractor", "params", "source", "id"])
def test_any_cache_key_mismatch_reextracts(videos, params, tmp_path, key):
    src, out = tmp_path / "in", tmp_path / "frames"
    src.mkdir()
    (src / "clip.mp4").write_bytes(videos["short_clip"].read_bytes())
    assert F.extract_dir(src, out, params, progress=False)["processed"] == 1
    vf = C.load_frames(out / "clip.npz")
    assert set(vf.meta["source"]) == {"size", "sha256_ends"} and vf.meta["format_version"] == F.FORMAT_VERSION
    C.save_frames(out / "clip.npz", C.VideoFrames(vf.frames, vf.timestamps, {**vf.meta, key: "stale"}))
    assert _counts(F.extract_dir(src, out, params, progress=False)) == (1, 0, 0, 0)
    assert C.load_frames(out / "clip.npz").meta == vf.meta


def test_source_fingerprint_reads_both_ends(tmp_path):
    data = bytearray(np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    f = tmp_path / "v.bin"
    f.write_bytes(bytes(data))
    base = F.source_fingerprint(f)
    assert base["size"] == 300_000
    for offset in (0, len(data) - 1):  # first and last byte matter
        changed = bytearray(data)
        changed[offset] ^= 1
        f.write_bytes(bytes(changed))
        assert F.source_fingerprint(f) != base
    f.write_bytes(bytes(data) + b"\0")
    assert F.source_fingerprint(f)["size"] == 300_001
    small = tmp_path / "s.bin"
    small.write_bytes(b"abc")
    assert F.source_fingerprint(small)["sha256_ends"] == hashlib.sha256(b"abc").hexdigest()


def _dvc_repro(repo: Path) -> dict:
    """`dvc repro` in ``repo``; the summary the extract_frames stage printed, or {} when it did not run."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"inputs"')]
    return json.loads(lines[-1]) if lines else {}


def test_dvc_persisted_frames_are_extracted_incrementally(tmp_path):
    """The real extract_frames stage under real DVC, with data/frames persisted between runs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pipeline", "stages"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "params.yaml", repo / "params.yaml")
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["extract_frames"]
    # The persisted output this design relies on (a no-op once dvc.yaml declares it).
    stage["outs"] = [{o: {"persist": True}} if o == "data/frames" else o for o in stage["outs"]]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"extract_frames": stage}}))
    videos = repo / "data/raw/videos"
    videos.mkdir(parents=True)
    for i in range(3):
        _make(videos / f"v{i}.mp4", f"testsrc2=size=64x48:rate=10:duration={1 + i * 0.5}", [])
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "-q"], cwd=repo, check=True)
    subprocess.run([dvc, "config", "core.analytics", "false"], cwd=repo, check=True)
    frames = repo / "data/frames"

    assert _counts(_dvc_repro(repo)) == (3, 0, 0, 0)
    assert _dvc_repro(repo) == {}  # nothing changed: DVC does not even run the stage
    before = _stamp(frames)

    _make(videos / "v3.mp4", "testsrc2=size=64x48:rate=10:duration=2.5", [])
    assert _counts(_dvc_repro(repo)) == (1, 3, 0, 0)
    assert {k: v for k, v in _stamp(frames).items() if k != "v3.npz"} == before  # kept by DVC, not rewritten

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["frames"]["fps"] = 1.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _counts(_dvc_repro(repo)) == (4, 0, 0, 0)
    assert C.load_frames(frames / "v3.npz").meta["params"]["fps"] == 1.0

    (videos / "v1.mp4").unlink()
    assert _counts(_dvc_repro(repo)) == (0, 3, 0, 1)
    assert sorted(p.name for p in frames.iterdir()) == ["v0.npz", "v2.npz", "v3.npz"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    status = subprocess.run([dvc, "status"], cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout  # dvc.lock records the pruned folder
