"""Safe extraction of zip/tar archives: no member may land outside the target folder.

Refused, each with its reason: absolute names, drive letters, ``..`` parts,
symbolic and hard links, devices/FIFOs. (Python's ``tarfile`` "data" filter
would catch most of these for tar, but zip has no such filter, and we want one
rule and one failure record per refused member for both.) Every member is
written atomically, so a killed extraction leaves no partial file behind.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.core.io import atomic_path
from pipeline.data.sources import VIDEO_EXTS, unsafe_id


@dataclass
class Extracted:
    written: list[dict] = field(default_factory=list)  # {"member", "path" (relative to target), "bytes"}
    refused: list[dict] = field(default_factory=list)  # {"member", "error"}
    ignored: list[str] = field(default_factory=list)  # non-video members of a video archive


def member_problem(name: str) -> str | None:
    """Why an archive member name is unsafe, or None."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "'..' in the path"
    return None


def _relative(name: str, strip: int) -> PurePosixPath | None:
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".")]
    return PurePosixPath(*parts[strip:]) if len(parts) > strip else None


def _members(archive: Path):
    """Yield (name, kind, opener) for each member; kind is 'file', 'dir', 'link' or 'special'."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if info.is_dir():
                    kind = "dir"
                elif stat.S_ISLNK(mode):
                    kind = "link"
                elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a plain file (writestr)
                    kind = "special"
                else:
                    kind = "file"
                yield info.filename, kind, (lambda info=info: zf.open(info))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for m in tf:
                kind = "dir" if m.isdir() else "link" if (m.issym() or m.islnk()) else "file" if m.isfile() else "special"
                yield m.name, kind, (lambda m=m: tf.extractfile(m))
    else:
        raise ValueError(f"{archive.name}: not a zip or tar archive")


def extract_archive(archive: Path, target: Path, *, videos: bool, strip_components: int = 0, flatten: bool = False) -> Extracted:
    """Extract ``archive`` into ``target``.

    ``videos=True``: only video files are taken, flattened to ``target/<name>`` (the
    frames stage reads one flat folder), and each name must be a safe video id.
    Otherwise the tree is kept below ``target`` after dropping ``strip_components``
    leading folders.
    """
    out = Extracted()
    root = target.resolve()
    for name, kind, opener in _members(archive):
        if kind == "dir":
            continue
        problem = member_problem(name)
        if problem is None and kind in ("link", "special"):
            problem = "symbolic or hard link" if kind == "link" else "device or special file"
        if problem:
            out.refused.append({"member": name, "error": f"unsafe archive member {name!r}: {problem}"})
            continue
        rel = _relative(name, strip_components)
        if rel is None:
            continue
        if videos:
            if rel.suffix.lower() not in VIDEO_EXTS:
                out.ignored.append(name)
                continue
            bad = unsafe_id(rel.stem)
            if bad:
                out.refused.append({"member": name, "error": bad})
                continue
            rel = PurePosixPath(rel.name)
        elif flatten:
            rel = PurePosixPath(rel.name)
        dest = target / rel
        if root not in (dest.resolve().parent, *dest.resolve().parents):  # belt and braces
            out.refused.append({"member": name, "error": f"unsafe archive member {name!r}: outside the target"})
            continue
        with opener() as src, atomic_path(dest, suffix=".part") as tmp, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.written.append({"member": name, "path": rel.as_posix(), "bytes": dest.stat().st_size})
    return out
