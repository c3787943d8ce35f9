"""The ``youtube`` source: video ids fetched with yt-dlp (used as a library).

Each video is fetched into ``<raw>/.partial/youtube/<id>/`` (yt-dlp resumes its
own ``.part`` files after a kill) and moved to ``videos/<id><ext>`` only when
complete. Ids of the QVHighlights form ``{youtube_id}_{start}_{end}`` are cut to
that clip (``download_ranges``; needs ffmpeg) when ``youtube.clips``. A video
that is gone (404, private, removed) is recorded with yt-dlp's reason; the
others continue. An id already in ``videos/`` is skipped.

ffmpeg is :func:`pipeline.data.ffmpeg.ffmpeg_exe` (the system one, else the
imageio-ffmpeg binary). yt-dlp reads the ``ffmpeg_location`` option only for its
post-processors; whether its ffmpeg *downloader* (the one that cuts clips) is
available is decided from a context variable that only its command line sets, or
else from ``ffmpeg`` on PATH (yt-dlp issue #2191), so ``fetch_one`` sets it too.
No ffprobe is needed: yt-dlp uses it for chapters, thumbnails and metadata
post-processors, none of which run here.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from pipeline.core.params import DownloadParams, YoutubeParams
from pipeline.data.ffmpeg import ffmpeg_exe
from pipeline.data.sources import (
    PARTIAL_DIR,
    VIDEO_EXTS,
    IdItem,
    SourceResult,
    progress_bar,
    read_ids,
    resolve_input,
    unsafe_id,
    video_path,
)

_STATUS = re.compile(r"HTTP Error (\d{3})")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Quiet:
    """yt-dlp logger that stays silent: errors reach us as exceptions, progress is our bar."""

    def debug(self, msg: str) -> None: ...

    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...

    def error(self, msg: str) -> None: ...


def ydl_options(p: YoutubeParams, item: IdItem, tmp: Path) -> dict:
    import yt_dlp

    opts = {
        "format": p.format,
        "outtmpl": str(tmp / "video.%(ext)s"),
        "paths": {"temp": str(tmp)},
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _Quiet(),
        "retries": p.retries,
        "fragment_retries": p.retries,
        "ratelimit": p.rate_limit or None,
        "merge_output_format": "mp4",
        "ffmpeg_location": ffmpeg_exe(),
        "overwrites": False,
        "continuedl": True,
    }
    if p.clips and item.start is not None and item.end is not None:
        opts["download_ranges"] = yt_dlp.utils.download_range_func(None, [(item.start, item.end)])
    return opts


@contextlib.contextmanager
def _ffmpeg_location(location: str):
    """Point yt-dlp's ffmpeg-downloader check at ``location`` (what ``--ffmpeg-location`` does on its CLI).

    A context variable: set per call, in the worker thread that downloads, and reset after.
    """
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    var = getattr(FFmpegPostProcessor, "_ffmpeg_location", None)
    if var is None:  # another yt-dlp: clips then need ffmpeg on PATH (tests/data/test_ingest_faults.py fails)
        yield
        return
    token = var.set(location)
    try:
        yield
    finally:
        var.reset(token)


def fetch_one(p: YoutubeParams, item: IdItem, videos: Path, partial: Path) -> Path:
    """Download one video into ``videos/<id><ext>``; raise RuntimeError(reason, status) when it cannot."""
    import yt_dlp

    tmp = partial / item.id
    tmp.mkdir(parents=True, exist_ok=True)
    url = p.url_template.format(youtube_id=item.youtube_id, id=item.id)
    opts = ydl_options(p, item, tmp)
    try:
        with _ffmpeg_location(opts["ffmpeg_location"]), yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
    except yt_dlp.utils.DownloadError as exc:
        msg = _ANSI.sub("", str(exc)).removeprefix("ERROR: ").strip()
        status = _STATUS.search(msg)
        raise RuntimeError(" ".join(msg.split())[:300], int(status.group(1)) if status else None) from None
    done = [f for f in tmp.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTS and f.stem == "video"]
    if not done:
        raise RuntimeError(f"yt-dlp finished but wrote no video file ({', '.join(sorted(f.name for f in tmp.iterdir())) or 'nothing'})", None)
    dest = videos / f"{item.id}{done[0].suffix.lower()}"
    done[0].replace(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def youtube_source(params: DownloadParams, out_dir: Path, progress: bool = True) -> SourceResult:
    import yt_dlp.version

    p = params.youtube
    items = read_ids(resolve_input(p.ids_file, out_dir, "download.youtube.ids_file"))
    if p.max_videos:
        items = items[: p.max_videos]
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL_DIR / "youtube"
    result = SourceResult(tool=f"yt-dlp {yt_dlp.version.__version__}")
    todo = []
    for item in items:
        bad = unsafe_id(item.id)
        if bad:
            result.failures.append({"id": item.id, "error": bad, "status": None})
        elif (have := video_path(videos, item.id)) is not None:
            result.videos[item.id] = have.name
            result.skipped += 1
        else:
            todo.append(item)

    def one(item: IdItem) -> Path:
        try:
            return fetch_one(p, item, videos, partial)
        finally:
            if p.sleep:
                time.sleep(p.sleep)

    bar = progress_bar(len(todo), "youtube", unit="video", enabled=progress)
    with ThreadPoolExecutor(max_workers=p.workers) as pool:
        futures = {pool.submit(one, item): item for item in todo}
        for fut in as_completed(futures):
            item = futures[fut]
            bar.update(1)
            try:
                dest = fut.result()
            except Exception as exc:  # one bad video must never stop the others
                reason, status = exc.args if isinstance(exc, RuntimeError) and len(exc.args) == 2 else (f"{type(exc).__name__}: {exc}", None)
                result.failures.append({"id": item.id, "error": f"{item.id}: {reason}", "status": status})
                continue
            result.videos[item.id] = dest.name
            result.downloaded += 1
            result.fetched_bytes += dest.stat().st_size
    bar.close()
    return result
