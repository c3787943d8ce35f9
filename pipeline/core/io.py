"""Atomic file writes and JSON Lines helpers shared by every stage.

Every write goes to a temporary file in the destination folder and is renamed
into place, so a killed run never leaves a half-written file where the next
stage would read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input: the message is one line naming the file, record id and field."""


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; outputs should get the usual umask-derived mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put the folder ``src`` in place of ``dest`` (created or replaced as a whole).

    The old folder is first renamed aside, so at every moment ``dest`` is either the
    complete old folder or the complete new one; a kill between the two renames leaves
    ``.<dest>.old`` beside it, which the next call removes.
    """
    src, dest = Path(src), Path(dest)
    old = dest.parent / f".{dest.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``dest``; it replaces ``dest`` on success (:func:`replace_dir`)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    write_text(dest, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(dest: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write rows (dicts or pydantic models) as JSON Lines; return the count."""
    n = 0
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            if hasattr(row, "model_dump_json"):
                fh.write(row.model_dump_json(exclude_none=False))
            else:
                fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; bad JSON raises InputError."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_records(path: str | os.PathLike) -> list[dict]:
    """Read a JSON Lines file or a JSON file holding a list of objects."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of records")
        return data
    return [obj for _, obj in read_jsonl(path)]


# Bad input exits 2 (as argparse and click do for bad usage); other failures (a video that
# could not be read, a download over its failure budget) exit 1. Stages and `rarft` alike.
BAD_INPUT_EXIT = 2


def one_line_errors(main):
    """Wrap an entry point (a stage's main, a `rarft` command): an InputError ends the run with
    its one-line message on stderr and exit status 2, not a traceback."""
    import functools
    import sys

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(BAD_INPUT_EXIT) from None

    return run


def read_yaml(path: str | os.PathLike, what: str = "YAML"):
    """Parse a YAML (or JSON) file; a missing or unparsable file is one InputError line."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid {what} ({str(exc).splitlines()[0]})") from None
