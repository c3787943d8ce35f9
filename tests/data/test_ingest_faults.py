"""The http and youtube sources against a real server on 127.0.0.1 that misbehaves on purpose.

The server (http.server in a thread) serves byte strings and can drop the
connection mid-file, send wrong bytes, answer 404/500 or an HTML page, trickle
slowly (so a kill lands mid-file), and honours Range requests like a CDN.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.core.io import InputError
from pipeline.core.params import parse_params
from pipeline.data.decode import probe_video
from pipeline.data.download import DownloadError, run_download
from pipeline.data.ffmpeg import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[2]


class Server:
    """Files by path, faults by path, and a log of (path, Range header) per GET."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, dict] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head: bool = False):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                if not head:
                    server.log.append((path, rng))
                fault = server.faults.get(path, {})
                if "status" in fault or path not in server.files:
                    code = fault.get("status", 404)
                    body = b"nope"
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return
                if fault.get("html"):
                    body = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return
                data = server.files[path]
                start = 0
                if rng and not fault.get("no_range"):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", fault.get("type", "video/mp4"))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if head:
                    return
                body = data[start:]
                drops = fault.get("drop_after")
                if drops and fault.setdefault("drops_left", fault.get("drops", 1)) > 0:
                    fault["drops_left"] -= 1
                    self.wfile.write(body[:drops])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection dies mid-file
                    self.close_connection = True
                    return
                step = fault.get("chunk", len(body) or 1)
                for i in range(0, len(body), step):
                    self.wfile.write(body[i : i + step])
                    if fault.get("delay"):
                        self.wfile.flush()
                        time.sleep(fault["delay"])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that vanish mid-file are the point
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def blob(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"video-{seed}".encode()).digest(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_params(manifest: Path, **kw):
    dl = {"sources": ["http"], "max_failures": kw.pop("max_failures", -1),
          "http": {"manifest": str(manifest), "retries": 3, "backoff": 0.01, "timeout": 5, "workers": 4, **kw}}
    return parse_params({"download": dl}, "test").download


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps(entries))
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- faults
def test_dropped_connection_is_resumed_with_range_and_verified(server, tmp_path):
    data = blob(300_000)
    server.files["/v/a.mp4"] = data
    server.faults["/v/a.mp4"] = {"drop_after": 100_000, "drops": 2}
    m = write_manifest(tmp_path / "m.json", [{"url": f"{server.url}/v/a.mp4", "dest": "videos/a.mp4", "sha256": sha(data), "size": len(data)}])
    out = tmp_path / "raw"
    summary = run_download(http_params(m), out, progress=False)
    assert summary["written"] == 1 and summary["failed"] == 0
    assert (out / "videos/a.mp4").read_bytes() == data
    # Each retry asked only for the missing bytes (from what reached the disk: whole 64 KiB chunks).
    ranges = [rng for _, rng in server.log]
    starts = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    assert len(ranges) == 3 and ranges[0] is None and 0 < starts[0] <= 100_000 < starts[1] <= 200_000, ranges
    assert not (out / ".partial").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["videos"] == {"a": {"file": "a.mp4", "source": "http", "bytes": 300_000}}

    # Present and verified: a re-run skips it without a request.
    server.log.clear()
    again = run_download(http_params(m), out, progress=False)
    assert (again["downloaded"], again["skipped"]) == (0, 1) and server.log == []


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = blob(50_000, 1)
    server.files["/v/b.mp4"] = data
    server.faults["/v/b.mp4"] = {"drop_after": 20_000, "no_range": True}
    m = write_manifest(tmp_path / "m.json", [{"url": f"{server.url}/v/b.mp4", "dest": "videos/b.mp4", "sha256": sha(data)}])
    run_download(http_params(m), tmp_path / "raw", progress=False)
    assert (tmp_path / "raw/videos/b.mp4").read_bytes() == data


def test_wrong_checksum_is_retried_then_fails_naming_the_file(server, tmp_path):
    good, served = blob(40_000, 2), blob(40_000, 3)
    server.files["/v/c.mp4"] = served
    m = write_manifest(tmp_path / "m.json", [{"url": f"{server.url}/v/c.mp4", "dest": "videos/c.mp4", "sha256": sha(good)}])
    out = tmp_path / "raw"
    with pytest.raises(DownloadError, match=r"no video written; first failure videos/c.mp4: videos/c.mp4 .*sha256") as err:
        run_download(http_params(m, retries=2), out, progress=False)
    assert "\n" not in str(err.value)
    assert len(server.log) == 3  # the first try and two retries
    assert not (out / "videos/c.mp4").exists() and not list(out.rglob("*.part"))
    (row,) = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert row["id"] == "videos/c.mp4" and row["source"] == "http" and "checksum mismatch" in row["error"] and sha(served) in row["error"]

    # A corrupt file already in place is not trusted either: replaced by a good download, else removed.
    (out / "videos/c.mp4").write_bytes(b"corrupt")
    server.files["/v/c.mp4"] = good
    run_download(http_params(m), out, progress=False)
    assert (out / "videos/c.mp4").read_bytes() == good


def test_404_500_and_html_are_recorded_and_max_failures_decides(server, tmp_path):
    ok = blob(10_000, 4)
    server.files.update({"/v/ok.mp4": ok, "/v/err.mp4": ok, "/v/page.mp4": ok})
    server.faults.update({"/v/err.mp4": {"status": 500}, "/v/page.mp4": {"html": True}})
    m = write_manifest(tmp_path / "m.json", [
        {"url": f"{server.url}/v/ok.mp4", "dest": "videos/ok.mp4"},
        {"url": f"{server.url}/v/gone.mp4", "dest": "videos/gone.mp4"},
        {"url": f"{server.url}/v/err.mp4", "dest": "videos/err.mp4"},
        {"url": f"{server.url}/v/page.mp4", "dest": "videos/page.mp4"},
    ])
    out = tmp_path / "raw"
    summary = run_download(http_params(m, retries=1), out, progress=False)
    assert (summary["written"], summary["failed"]) == (1, 3)
    rows = {r["id"]: r for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert rows["videos/gone.mp4"]["status"] == 404 and "HTTP 404" in rows["videos/gone.mp4"]["error"]
    assert rows["videos/err.mp4"]["status"] == 500 and "after 2 attempt(s)" in rows["videos/err.mp4"]["error"]
    assert "HTML instead of a video" in rows["videos/page.mp4"]["error"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["ok.mp4"]
    assert [path for path, _ in server.log].count("/v/gone.mp4") == 1  # a 404 is final: no retry
    assert json.loads((out / "manifest.json").read_text())["failed"] == 3

    # The stage: exit code and summary follow download.max_failures.
    for limit, code in ((3, 0), (2, 1)):
        params = tmp_path / f"params{limit}.yaml"
        params.write_text(json.dumps({"download": {**json.loads(http_params(m, retries=0, max_failures=limit).model_dump_json())}}))
        proc = subprocess.run([sys.executable, "-m", "stages.download", "--out", str(out), "--params", str(params)],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == code, proc.stderr
        assert "failed" in proc.stdout
        if code:
            assert "3 item(s) failed, more than download.max_failures=2" in proc.stderr


def test_kill_9_then_rerun_gives_the_same_outputs(server, tmp_path):
    files = {f"/v/k{i}.mp4": blob(120_000 + i, 10 + i) for i in range(4)}
    server.files.update(files)
    entries = [{"url": f"{server.url}{p}", "dest": f"videos/{Path(p).name}", "sha256": sha(d)} for p, d in files.items()]
    m = write_manifest(tmp_path / "m.json", entries)
    params = tmp_path / "params.yaml"
    params.write_text(http_params(m).model_dump_json().join(['{"download": ', "}"]))

    reference = tmp_path / "ref"
    run_download(http_params(m), reference, progress=False)

    for p in files:  # trickle: 8 KB every 20 ms, so the kill lands mid-file
        server.faults[p] = {"chunk": 8192, "delay": 0.02}
    out = tmp_path / "raw"
    cmd = [sys.executable, "-m", "stages.download", "--out", str(out), "--params", str(params)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(p.stat().st_size for p in (out / ".partial").rglob("*.part")) < 100_000:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    parts = list((out / ".partial").rglob("*.part"))
    assert parts and not (out / "manifest.json").exists()
    assert not list((out / "videos").glob("*.mp4")) or all(
        (out / "videos" / n).read_bytes() == files[f"/v/{n}"] for n in os.listdir(out / "videos"))

    server.faults.clear()
    server.log.clear()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    assert any(rng for _, rng in server.log), "the rerun should resume with Range requests"
    assert tree(out) == tree(reference)


# ----------------------------------------------------------------------------- refusals
def test_only_http_urls_and_safe_destinations(tmp_path):
    for entry, msg in [
        ({"url": "file:///etc/passwd", "dest": "videos/x.mp4"}, "scheme 'file' refused"),
        ({"url": "ftp://example.org/x.mp4", "dest": "videos/x.mp4"}, "scheme 'ftp' refused"),
        ({"url": "http://h/x", "dest": "../x.mp4"}, "dest: unsafe path"),
        ({"url": "http://h/x", "dest": "/etc/x"}, "dest: unsafe path"),
        ({"url": "http://h/x", "dest": "videos/../../x.mp4"}, "dest: unsafe path"),
        ({"url": "http://h/x", "dest": "videos/sub/x.mp4"}, "only flat files"),
        ({"url": "http://h/x", "dest": "a.zip", "extract": "../up"}, "extract: unsafe path"),
    ]:
        m = write_manifest(tmp_path / "m.json", [entry])
        with pytest.raises(InputError, match=msg) as err:
            run_download(http_params(m), tmp_path / "raw", progress=False)
        assert "m.json: file 0" in str(err.value) and "\n" not in str(err.value)


def _zip_with_bad_members() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pack/good1.mp4", b"G1" * 100)
        zf.writestr("pack/readme.txt", b"hi")
        zf.writestr("../evil.mp4", b"E")
        zf.writestr("/abs.mp4", b"A")
        zf.writestr("pack/..%2f/../../evil2.mp4", b"E")
        zf.writestr("pack/bad name;rm.mp4", b"B")
        link = zipfile.ZipInfo("pack/link.mp4")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


def _tar_with_bad_members() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        def add(name, data=b"", **kw):
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        add("videos/good2.mp4", b"G2" * 100)
        add("videos/sym.mp4", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("videos/hard.mp4", type=tarfile.LNKTYPE, linkname="../../outside.mp4")
        add("../../tar_evil.mp4", b"E")
        add("videos/dev.mp4", type=tarfile.CHRTYPE)
    return buf.getvalue()


def test_malicious_archive_members_are_refused(server, tmp_path):
    server.files["/a.zip"] = _zip_with_bad_members()
    server.files["/b.tar.gz"] = _tar_with_bad_members()
    for p in ("/a.zip", "/b.tar.gz"):
        server.faults[p] = {"type": "application/octet-stream"}
    m = write_manifest(tmp_path / "m.json", [
        {"url": f"{server.url}/a.zip", "dest": "archives/a.zip", "extract": "videos"},
        {"url": f"{server.url}/b.tar.gz", "dest": "archives/b.tar.gz", "extract": "videos"},
    ])
    out = tmp_path / "work" / "raw"
    summary = run_download(http_params(m), out, progress=False)
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["good1.mp4", "good2.mp4"]
    assert (out / "videos/good1.mp4").read_bytes() == b"G1" * 100
    assert not (out / "videos/link.mp4").is_symlink()
    refused = {r["id"]: r["error"] for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert summary["failed"] == len(refused) == 9
    assert "'..' in the path" in refused["archives/a.zip:../evil.mp4"]
    assert "absolute path" in refused["archives/a.zip:/abs.mp4"]
    assert "unsafe video id" in refused["archives/a.zip:pack/bad name;rm.mp4"]
    assert "link" in refused["archives/a.zip:pack/link.mp4"] and "link" in refused["archives/b.tar.gz:videos/sym.mp4"]
    assert "link" in refused["archives/b.tar.gz:videos/hard.mp4"] and "special" in refused["archives/b.tar.gz:videos/dev.mp4"]
    # Nothing escaped: the only files anywhere under tmp_path are ours.
    escaped = [p for p in tmp_path.rglob("*") if "evil" in p.name or p.name == "outside.mp4"]
    assert escaped == []
    record = json.loads((out / "archives/a.zip.extracted.json").read_text())
    assert record["ignored"] == ["pack/readme.txt"] and not (out / "archives/a.zip").exists()

    # Re-run: the extraction record says everything is in place; nothing is fetched again.
    server.log.clear()
    again = run_download(http_params(m), out, progress=False)
    assert again["skipped"] == 2 and server.log == []


# ----------------------------------------------------------------------------- youtube (yt-dlp)
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "c.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=4",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5", "-movflags", "+faststart", str(path)], check=True)
    return path.read_bytes()


def test_youtube_source_with_generic_extractor_clips_and_gone_videos(server, tmp_path, clip):
    server.files["/yt/AAAAAAAAAAA.mp4"] = clip
    server.files["/yt/BBBBBBBBBBB.mp4"] = clip
    ids = tmp_path / "highlight_train.jsonl"
    rows = [{"vid": "AAAAAAAAAAA"}, {"vid": "BBBBBBBBBBB_1.0_3.0"}, {"vid": "GONEGONEGON"}, {"vid": "../../etc/passwd"}]
    ids.write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = parse_params({"download": {"sources": ["youtube"], "youtube": {
        "ids_file": str(ids), "url_template": server.url + "/yt/{youtube_id}.mp4", "format": "best", "retries": 0}}}, "test").download
    out = tmp_path / "raw"
    summary = run_download(params, out, progress=False)
    assert (summary["written"], summary["failed"]) == (2, 2)
    assert (out / "videos/AAAAAAAAAAA.mp4").read_bytes() == clip
    cut = probe_video(out / "videos/BBBBBBBBBBB_1.0_3.0.mp4")
    assert 1.5 <= cut["duration"] <= 2.6, cut  # the [1, 3] s clip, at keyframe precision
    rows = {r["id"]: r for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert rows["GONEGONEGON"]["status"] == 404 and "404" in rows["GONEGONEGON"]["error"]
    assert "unsafe video id" in rows["../../etc/passwd"]["error"]
    assert not (out / ".partial").exists()

    server.log.clear()
    again = run_download(params, out, progress=False)
    assert again["skipped"] == 2 and [p for p, _ in server.log if "AAAA" in p or "BBBB" in p] == []
