"""Real-video ingestion: params, id lists, presets, the local source on assorted real encodes
(then frame extraction), and sharing the frames cache through a DVC remote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.core.frames_cache import load_frames
from pipeline.core.io import InputError
from pipeline.core.params import FramesParams, Params, parse_params
from pipeline.data.download import run_download, with_overrides
from pipeline.data.ffmpeg import ffmpeg_exe
from pipeline.data.frames import extract_dir
from pipeline.data.sources import read_ids, unsafe_id
from pipeline.data.sources.http_files import PRESETS_DIR, load_manifest
from rotated_video import write_rotated

ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).with_name("dvc"))


# ----------------------------------------------------------------------------- params, ids, presets
def test_synthetic_stays_the_default_and_sources_are_validated():
    assert Params().download.sources == ["synthetic"]
    dl = parse_params({"download": {"sources": "local, http"}}).download
    assert dl.sources == ["local", "http"]
    for bad, msg in ((["synthetic", "synthetic"], "listed twice"), (["ftp"], "download.sources.0"), ([], "download.sources")):
        with pytest.raises(InputError, match=msg):
            parse_params({"download": {"sources": bad}}, "params.yaml")
    over = with_overrides(Params().download, source="local", **{"local.folder": "/x", "local.link": "symlink"})
    assert (over.sources, over.local.folder, over.local.link) == (["local"], "/x", "symlink")


def test_id_lists_in_dataset_formats(tmp_path):
    (tmp_path / "sta.txt").write_text("AO8RW 0.0 6.9##a person is putting a book on a shelf.\nAO8RW 1.0 2.0##x\n\nY7QWB 3 4##y\n")
    assert [i.id for i in read_ids(tmp_path / "sta.txt")] == ["AO8RW", "Y7QWB"]
    (tmp_path / "qvh.jsonl").write_text(json.dumps({"qid": 1, "vid": "bP5KfdFJzC4_660.0_810.0"}) + "\n")
    (item,) = read_ids(tmp_path / "qvh.jsonl")
    assert (item.youtube_id, item.start, item.end) == ("bP5KfdFJzC4", 660.0, 810.0)
    (tmp_path / "train.json").write_text(json.dumps({"v_QOlSCBRmfWY": {"duration": 82.7}, "v_ehGHCYKzyZ8": {}}))
    assert [(i.id, i.youtube_id, i.start) for i in read_ids(tmp_path / "train.json")] == [
        ("v_QOlSCBRmfWY", "QOlSCBRmfWY", None), ("v_ehGHCYKzyZ8", "ehGHCYKzyZ8", None)]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"query": "no id"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: no video id"):
        read_ids(tmp_path / "bad.jsonl")
    for bad in ("../x", "a/b", ".hidden", "/etc/passwd", "a b", "x.", ""):
        assert unsafe_id(bad), bad
    for good in ("AO8RW", "-abc_DEF12", "bP5KfdFJzC4_660.0_810.0", "v_QOlSCBRmfWY"):
        assert unsafe_id(good) is None, good


def test_presets_are_data_with_https_urls_and_safe_destinations():
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    assert names == ["activitynet-captions", "charades-sta", "qvhighlights", "ra-rft"]
    for name in names:
        entries = load_manifest(PRESETS_DIR / f"{name}.yaml")  # validates scheme and paths
        assert entries and all(e.url.startswith("https://") for e in entries), name
    ra = {Path(e.dest).name for e in load_manifest(PRESETS_DIR / "ra-rft.yaml")}
    assert {"hi_vtg_charades.json", "ss_vtg_charades.json", "human_anno.json"} <= ra
    with pytest.raises(InputError, match="unknown preset 'nope'.*charades-sta"):
        run_download(parse_params({"download": {"sources": ["http"], "http": {"presets": ["nope"]}}}).download, "/tmp/unused-raw", progress=False)


# ----------------------------------------------------------------------------- the local source on real encodes
# (name, codec args, container, size, extra args): 21 good videos of assorted codecs/containers/sizes.
SPECS = [
    ("h264_mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4", "64x48", []),
    ("h264_mkv", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mkv", "80x60", []),
    ("h264_avi", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "avi", "64x36", []),
    ("h264_mov", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mov", "72x48", []),
    ("h264_odd444", ["-c:v", "libx264", "-pix_fmt", "yuv444p"], "mp4", "65x49", []),
    ("h264_wide", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4", "256x32", []),
    ("h264_tiny25", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4", "30x30", ["-r", "25"]),
    ("h264_rot90", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4", "96x48", ["rotate"]),
    ("h264_vfr", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mkv", "64x48",
     ["-vf", "select='not(between(n\\,3\\,12))'", "-fps_mode", "vfr"]),
    # No -x265-params here: with any of them, Debian 12's ffmpeg 5.1.9 (libx265 3.5) aborts on the 48x64
    # clip ("free(): invalid next size"), every time; without, it encodes (checked 2026-12-03).
    ("hevc_mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-tag:v", "hvc1"], "mp4", "64x48", []),
    ("hevc_mkv", ["-c:v", "libx265", "-pix_fmt", "yuv420p"], "mkv", "96x54", []),
    ("hevc_10fps", ["-c:v", "libx265", "-pix_fmt", "yuv420p"], "mp4", "48x64", ["-r", "10"]),
    ("vp9_webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "webm", "64x48", []),
    ("vp9_mkv", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "mkv", "72x40", []),
    ("vp9_odd", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "webm", "33x65", []),
    ("vp9_2s", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "webm", "64x48", ["-t", "2"]),
    ("mpeg4_avi", ["-c:v", "mpeg4", "-q:v", "5"], "avi", "64x48", []),
    ("mpeg4_mp4", ["-c:v", "mpeg4", "-q:v", "5"], "mp4", "50x30", []),
    ("mpeg4_mkv", ["-c:v", "mpeg4", "-q:v", "5"], "mkv", "64x48", []),
    ("mpeg4_mov", ["-c:v", "mpeg4", "-q:v", "5"], "mov", "80x48", []),
    ("mpeg4_tall", ["-c:v", "mpeg4", "-q:v", "5"], "avi", "32x128", []),
]


def _encode(folder: Path, spec) -> None:
    name, codec, ext, size, extra = spec
    dur = extra[extra.index("-t") + 1] if "-t" in extra else "1"
    extra = [a for i, a in enumerate(extra) if a != "-t" and (i == 0 or extra[i - 1] != "-t")]
    sub = folder / ("nested" if name.startswith("vp9") else "")  # the folder is searched recursively
    sub.mkdir(parents=True, exist_ok=True)
    rotate = extra == ["rotate"]
    dest = sub / f"{name}.{ext}"
    cmd = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=15:duration={dur}",
           *([] if rotate else extra), *codec, "-threads", "1", str(dest.with_suffix(".tmp.mp4") if rotate else dest)]
    subprocess.run(cmd, check=True, capture_output=True)
    if rotate:  # the display matrix is set when stream-copying (how depends on the ffmpeg version)
        tmp = dest.with_suffix(".tmp.mp4")
        write_rotated(ffmpeg_exe(), tmp, dest, 90)
        tmp.unlink()


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A folder of real-looking videos, plus one corrupt file."""
    folder = tmp_path_factory.mktemp("library")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: _encode(folder, s), SPECS))
    good = (folder / "h264_mp4.mp4").read_bytes()
    (folder / "corrupt01.mp4").write_bytes(good[: len(good) // 3][:64] + os.urandom(4000))  # header-ish then garbage
    (folder / "notes.txt").write_text("not a video")
    return folder


def local_params(folder: Path, **kw):
    return parse_params({"download": {"sources": ["local"], "local": {"folder": str(folder), **kw}}}, "test").download


def test_local_source_links_every_video_then_frames_take_the_good_ones(library, tmp_path):
    out = tmp_path / "raw"
    summary = run_download(local_params(library), out, progress=False)
    assert (summary["written"], summary["failed"], summary["downloaded"]) == (22, 0, 22)
    videos = out / "videos"
    names = sorted(p.name for p in videos.iterdir())
    assert len(names) == 22 and "corrupt01.mp4" in names and "vp9_webm.webm" in names
    # Linked, never copied: the same inode as the original.
    src = library / "h264_mkv.mkv"
    assert (videos / "h264_mkv.mkv").stat().st_ino == src.stat().st_ino

    frames = tmp_path / "frames"
    report = extract_dir(videos, frames, FramesParams(workers=2), failures_path=tmp_path / "frames_failures.jsonl", progress=False)
    failed = {r["id"]: r["error"] for r in report["videos"] if "error" in r}
    assert list(failed) == ["corrupt01"], failed
    assert "corrupt01" in failed["corrupt01"] and len(failed["corrupt01"]) > 20
    assert report["processed"] == len(SPECS)
    rows = [json.loads(line) for line in (tmp_path / "frames_failures.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["corrupt01"]
    for name, *_ in SPECS:
        vf = load_frames(frames / f"{name}.npz")
        assert vf.frames.shape[0] >= 2 and vf.frames.dtype == np.uint8, name
        assert np.all(np.diff(vf.timestamps) > 0), name
    rot = load_frames(frames / "h264_rot90.npz")
    assert rot.frames.shape[1] > rot.frames.shape[2], "rotation metadata must be applied (96x48 shown as 48x96)"
    vfr = load_frames(frames / "h264_vfr.npz")
    assert vfr.timestamps[-1] > 0.8  # the gap left by the dropped frames is kept in the timestamps


def test_local_rerun_skips_prunes_and_reports_missing_ids(library, tmp_path):
    out = tmp_path / "raw"
    run_download(local_params(library), out, progress=False)
    again = run_download(local_params(library), out, progress=False)
    assert (again["downloaded"], again["skipped"]) == (0, 22)

    ids = tmp_path / "ids.txt"
    ids.write_text("h264_mp4\nvp9_webm\nnot_there\n../../etc/passwd\n")
    summary = run_download(local_params(library, ids_file=str(ids), link="symlink"), out, progress=False)
    assert (summary["written"], summary["failed"]) == (2, 2)
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["h264_mp4.mp4", "vp9_webm.webm"]  # the rest pruned
    rows = {r["id"]: r for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert rows["not_there"]["status"] == "missing" and "unsafe video id" in rows["../../etc/passwd"]["error"]
    # The hard link of the first run satisfies "present" whatever the link mode; a fresh folder gets symlinks.
    fresh = tmp_path / "fresh"
    run_download(local_params(library, ids_file=str(ids), link="symlink"), fresh, progress=False)
    assert (fresh / "videos/vp9_webm.webm").is_symlink()
    assert (fresh / "videos/vp9_webm.webm").resolve() == (library / "nested/vp9_webm.webm").resolve()


def test_cli_download_local_prints_the_summary_table(library, tmp_path):
    result = CliRunner().invoke(app, ["download", "--source", "local", "--folder", str(library), "--out", str(tmp_path / "raw"),
                                      "--no-progress", "--max-failures", "0"])
    assert result.exit_code == 0, result.output
    for word in ("downloaded", "skipped", "failed", "bytes", "local", "22"):
        assert word in result.output
    missing = CliRunner().invoke(app, ["download", "--source", "local", "--folder", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert missing.exit_code == 2 and "download.local.folder" in missing.output


# ----------------------------------------------------------------------------- DVC remote
def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_frames_cache_is_shared_through_a_local_dvc_remote(tmp_path):
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    repo.mkdir()
    _git(repo, "init", "-q")
    _dvc(repo, "init", "-q")
    _dvc(repo, "config", "core.analytics", "false")
    (repo / "make_frames.py").write_text(
        "import numpy as np, pathlib\n"
        "out = pathlib.Path('data/frames'); out.mkdir(parents=True, exist_ok=True)\n"
        "for i in range(3):\n"
        "    np.savez(out / f'v{i}.npz', frames=np.full((2, 28, 28, 3), i, np.uint8), timestamps=np.arange(2.0))\n"
    )
    _dvc(repo, "stage", "add", "-q", "-n", "extract_frames", "--outs", "data/frames", "python make_frames.py")
    _dvc(repo, "repro", "-q")
    _dvc(repo, "remote", "add", "-d", "store", str(remote))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "frames")
    _dvc(repo, "push", "-q")
    assert any(p.is_file() for p in remote.rglob("*"))

    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "data/frames").exists()
    _dvc(clone, "pull", "-q")
    got = sorted((clone / "data/frames").iterdir())
    assert [p.name for p in got] == ["v0.npz", "v1.npz", "v2.npz"]
    for p in got:
        assert p.read_bytes() == (repo / "data/frames" / p.name).read_bytes()
    assert "up to date" in _dvc(clone, "status")
