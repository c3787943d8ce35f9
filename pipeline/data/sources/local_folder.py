"""The ``local`` source: an existing folder of videos, matched by id and linked, never copied.

``link: auto`` makes a hard link (same inode: no extra bytes, survives the
folder being moved) and falls back to a symbolic link across filesystems.
Under DVC both end the same way: DVC follows the link when it hashes the
output, then stores the bytes per ``cache.type``; with ``cache.type
hardlink,symlink`` the cache reuses the original inode (zero extra bytes, and
DVC marks the original read-only), with the default ``copy`` it keeps one copy.
See docs/DATA.md. Each link is made under a temporary name and renamed into
place, so it is atomic.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.core.io import InputError, atomic_path
from pipeline.core.params import DownloadParams, LocalParams
from pipeline.data.sources import (
    IdItem,
    SourceResult,
    progress_bar,
    read_ids,
    resolve_input,
    unsafe_id,
)


def index_folder(folder: Path, extensions: list[str]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """id -> video file (recursive); and the ids found more than once (ambiguous, not used)."""
    exts = {e.lower() for e in extensions}
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in exts and path.is_file() and not path.name.startswith("."):
            found.setdefault(path.stem, []).append(path)
    return {k: v[0] for k, v in found.items() if len(v) == 1}, {k: v for k, v in found.items() if len(v) > 1}


def _same(dest: Path, src: Path) -> bool:
    try:
        return dest.resolve().samefile(src) or (dest.stat().st_size == src.stat().st_size and not dest.is_symlink()
                                               and dest.stat().st_mtime_ns >= src.stat().st_mtime_ns)
    except OSError:
        return False


def link(src: Path, dest: Path, mode: str) -> str:
    """Put ``src`` at ``dest`` by ``mode`` (auto/hardlink/symlink/copy); return the method used."""
    with atomic_path(dest, suffix=".link") as tmp:
        tmp.unlink()
        if mode in ("auto", "hardlink"):
            try:
                os.link(src, tmp)
                return "hardlink"
            except OSError:
                if mode == "hardlink":
                    raise
        if mode in ("auto", "symlink"):
            os.symlink(src.resolve(), tmp)
            return "symlink"
        shutil.copy2(src, tmp)
        return "copy"


def local_source(params: DownloadParams, out_dir: Path, progress: bool = True) -> SourceResult:
    p: LocalParams = params.local
    if not p.folder:
        raise InputError("params.yaml: download.local.folder: is empty but the source 'local' is selected")
    folder = Path(p.folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"params.yaml: download.local.folder: {folder} is not a folder")
    index, dupes = index_folder(folder, p.extensions)
    if p.ids_file:
        items = read_ids(resolve_input(p.ids_file, out_dir, "download.local.ids_file"))
    else:
        items = [IdItem(k, k) for k in sorted({*index, *dupes})]
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    result = SourceResult(tool=f"local folder {folder.resolve()} ({p.link})")
    bar = progress_bar(len(items), "local", unit="video", enabled=progress)
    for item in items:
        bar.update(1)
        bad = unsafe_id(item.id)
        src = index.get(item.id)
        if bad:
            result.failures.append({"id": item.id, "error": bad, "status": None})
        elif item.id in dupes:
            result.failures.append({"id": item.id, "error": f"{item.id}: several files in {folder}: {', '.join(str(x) for x in dupes[item.id])}", "status": None})
        elif src is None:
            result.failures.append({"id": item.id, "error": f"{item.id}: no video file in {folder}", "status": "missing"})
        else:
            dest = videos / f"{item.id}{src.suffix.lower()}"
            if dest.exists() and _same(dest, src):
                result.skipped += 1
            else:
                try:
                    link(src, dest, p.link)
                except OSError as exc:
                    result.failures.append({"id": item.id, "error": f"{item.id}: cannot link {src}: {exc.strerror or exc}", "status": None})
                    continue
                result.downloaded += 1
                result.fetched_bytes += src.stat().st_size
            result.videos[item.id] = dest.name
    bar.close()
    return result
