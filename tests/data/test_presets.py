"""The dataset presets (pipeline/data/presets/*.yaml) are well-formed, safe, pinned and consistent.

Nothing is fetched here (tests run offline); docs/DATA.md (Preset URLs) says how each URL was
verified. Every check below is also run on a bad preset in ``test_each_check_can_fail``, so a
check that silently passes everything would fail the suite.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from pipeline.core.io import read_yaml
from pipeline.data.sources.archives import member_problem
from pipeline.data.sources.http_files import PRESETS_DIR, FileEntry, check_entry, load_manifest
from pipeline.riq.importers import IMPORTERS

PRESETS = sorted(PRESETS_DIR.glob("*.yaml"))
DEST_ROOTS = ("annotations", "archives", "videos")
EXTRACT_ROOTS = ("annotations", "videos")
COMMIT = re.compile(r"[0-9a-f]{40}")


def github_pin_problem(url: str) -> str | None:
    """Why a GitHub URL is not a raw file pinned to a 40-hex commit (None for other hosts)."""
    parts = urlsplit(url)
    host, segs = parts.netloc.lower(), parts.path.split("/")[1:]
    if host == "raw.githubusercontent.com":  # /<owner>/<repo>/<ref>/<path...>
        if len(segs) < 4 or not all(segs):
            return f"url: not raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>: {url}"
        ref = segs[2]
    elif host in ("github.com", "www.github.com"):  # /<owner>/<repo>/raw/<ref>/<path...>
        if len(segs) < 5 or segs[2] != "raw" or not all(segs):
            return f"url: a github.com URL that is not /<owner>/<repo>/raw/<commit>/<path> (a page, not the file): {url}"
        ref = segs[3]
    else:
        return None
    if not COMMIT.fullmatch(ref):
        return f"url: not pinned to a 40-hex commit (ref {ref!r}): {url}"
    return None


def dest_problem(dest: str, roots: tuple[str, ...] = DEST_ROOTS, what: str = "dest") -> str | None:
    """Why ``dest`` is not a relative safe path of a file under one of ``roots``."""
    parts = dest.split("/")
    if member_problem(dest) or "\\" in dest or any(p in ("", ".", "..") for p in parts):
        return f"{what}: unsafe path {dest!r}"
    if parts[0] not in roots or (what == "dest" and len(parts) < 2):
        return f"{what}: {dest!r} is not under {', '.join(r + '/' for r in roots)}"
    return None


def preset_problems(data: object, stem: str | None = None) -> list[str]:
    """Every problem of one preset mapping (empty when it is well-formed)."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list) or not data["files"]:
        return ["files: a preset is a mapping with a non-empty 'files:' list"]
    problems: list[str] = []
    if stem is not None and data.get("name") != stem:
        problems.append(f"name: {data.get('name')!r} is not the file name {stem!r}")
    if data.get("riq_source") not in IMPORTERS:
        problems.append(f"riq_source: {data.get('riq_source')!r} is not an importer ({', '.join(IMPORTERS)})")
    entries: list[FileEntry] = []
    for i, row in enumerate(data["files"]):
        try:
            entry = FileEntry.model_validate(row)  # the http source's own model (extra keys refused)
        except ValidationError as exc:
            err = exc.errors()[0]
            problems.append(f"file {i}: {'.'.join(map(str, err['loc'])) or 'entry'}: {err['msg']}")
            continue
        entries.append(entry)
        url = urlsplit(entry.url)
        found = [
            check_entry(entry),  # the http source's own validation (scheme, unsafe paths, videos/)
            None if url.scheme == "https" and url.hostname else f"url: not an https URL with a host: {entry.url}",
            dest_problem(entry.dest),
            github_pin_problem(entry.url),
            dest_problem(entry.extract, EXTRACT_ROOTS, "extract") if entry.extract else None,
            "dest: archives/ holds archives only (give extract:)"
            if entry.dest.startswith("archives/") and not entry.extract else None,
        ]
        problems += [f"file {i} ({entry.dest}): {p}" for p in found if p]
    problems += [f"dest: {d!r} is given by {n} entries" for d, n in Counter(e.dest for e in entries).items() if n > 1]
    # What lands where: a file at its dest; an archive's documented members under its extract folder.
    archives = {e.dest: e for e in entries if e.extract}
    extracted = data.get("extracted") or {}
    if not isinstance(extracted, dict):
        return problems + ["extracted: a mapping {archive dest: [member names]}"]
    written = {e.dest for e in entries if not e.extract}
    for dest, names in extracted.items():
        if dest not in archives:
            problems.append(f"extracted: {dest!r} is not the dest of an entry with extract:")
            continue
        written |= {f"{archives[dest].extract}/{name}" for name in names}
    imports = data.get("import_files")
    if not isinstance(imports, list) or not imports:
        return problems + ["import_files: a non-empty list of file names under annotations/"]
    for name in imports:
        if not isinstance(name, str) or dest_problem(f"annotations/{name}") or "/" in name:
            problems.append(f"import_files: {name!r} is not a plain file name")
        elif f"annotations/{name}" not in written:
            problems.append(f"import_files: {name!r} is written by no entry (a file dest annotations/{name}, "
                            "or an archive extracted into annotations/ that lists it under extracted:)")
    return problems


@pytest.fixture(params=PRESETS, ids=lambda p: p.stem)
def preset(request) -> Path:
    return request.param


def test_the_presets_are_there():
    assert {p.stem for p in PRESETS} >= {"activitynet-captions", "charades-sta", "qvhighlights", "ra-rft"}


def test_preset_is_well_formed(preset):
    assert preset_problems(read_yaml(preset, "YAML"), preset.stem) == []


def test_preset_loads_with_the_http_source(preset):
    """The http source's loader reads every entry of the preset, unchanged."""
    rows = read_yaml(preset, "YAML")["files"]
    assert [e.model_dump(exclude_defaults=True) for e in load_manifest(preset)] == rows


# --------------------------------------------------------------------------- every check can fail
GOOD = {
    "name": "demo",
    "riq_source": "charades-sta",
    "import_files": ["train.txt", "val.json"],
    "files": [
        {"url": f"https://raw.githubusercontent.com/owner/repo/{'a' * 40}/data/train.txt", "dest": "annotations/train.txt"},
        {"url": "https://example.org/data/ann.zip", "dest": "archives/ann.zip", "extract": "annotations", "flatten": True},
        {"url": "https://example.org/data/videos.tar.gz", "dest": "archives/videos.tar.gz", "extract": "videos"},
        {"url": "https://example.org/v/abc.mp4", "dest": "videos/abc.mp4"},
    ],
    "extracted": {"archives/ann.zip": ["val.json"]},
}


def _set(path: str, value):
    """A copy of GOOD with ``path`` ('files.0.url', 'import_files') set to value (None: removed)."""
    def edit(data):
        *keys, last = path.split(".")
        node = data
        for k in keys:
            node = node[int(k)] if isinstance(node, list) else node[k]
        key = int(last) if isinstance(node, list) else last
        if value is None:
            del node[key]
        else:
            node[key] = value
        return data
    return edit


BAD = {
    "http URL": (_set("files.0.url", "http://example.org/train.txt"), "not an https URL"),
    "ftp URL (the http source refuses it)": (_set("files.3.url", "ftp://example.org/abc.mp4"), "scheme 'ftp' refused"),
    "URL without a host": (_set("files.1.url", "https:///ann.zip"), "with a host"),
    "unknown entry key (model refuses it)": (_set("files.0.md5", "0" * 32), "md5: Extra inputs are not permitted"),
    "negative size (model refuses it)": (_set("files.0.size", -1), "size: Input should be greater than or equal to 0"),
    "dest with ..": (_set("files.0.dest", "annotations/../x.txt"), "unsafe path"),
    "absolute dest": (_set("files.0.dest", "/etc/passwd"), "unsafe path"),
    "dest with an empty part": (_set("files.0.dest", "annotations//train.txt"), "unsafe path"),
    "dest outside the three folders": (_set("files.0.dest", "models/train.txt"), "is not under annotations/, archives/, videos/"),
    "dest that is a folder": (_set("files.0.dest", "annotations"), "is not under"),
    "nested video dest": (_set("files.3.dest", "videos/a/abc.mp4"), "only flat files go under videos/"),
    "archive not extracted": (_set("files.2.extract", None), "archives/ holds archives only"),
    "extract outside annotations/videos": (_set("files.1.extract", "models"), "extract: 'models' is not under"),
    "GitHub raw on a branch": (_set("files.0.url", "https://raw.githubusercontent.com/owner/repo/main/data/train.txt"),
                               "not pinned to a 40-hex commit (ref 'main')"),
    "GitHub raw on a short hash": (_set("files.0.url", "https://raw.githubusercontent.com/owner/repo/abc1234/data/train.txt"),
                                   "not pinned to a 40-hex commit (ref 'abc1234')"),
    "GitHub raw without a path": (_set("files.0.url", "https://raw.githubusercontent.com/owner/repo/main"), "not raw.githubusercontent.com/<owner>"),
    "github.com blob page": (_set("files.0.url", f"https://github.com/owner/repo/blob/{'a' * 40}/data/train.txt"), "a page, not the file"),
    "github.com raw on a branch": (_set("files.0.url", "https://github.com/owner/repo/raw/main/data/train.txt"), "ref 'main'"),
    "two entries, one dest": (_set("files.3.dest", "annotations/train.txt"), "'annotations/train.txt' is given by 2 entries"),
    "import file nobody writes": (_set("import_files", ["train.txt", "test.txt"]), "'test.txt' is written by no entry"),
    "import file only in an undocumented archive": (_set("extracted", None), "'val.json' is written by no entry"),
    "import file extracted into videos/": (_set("extracted", {"archives/videos.tar.gz": ["val.json"]}), "'val.json' is written by no entry"),
    "extracted: names a plain file": (_set("extracted", {"annotations/train.txt": ["val.json"]}), "not the dest of an entry with extract:"),
    "import file with a folder": (_set("import_files", ["train.txt", "sub/val.json"]), "'sub/val.json' is not a plain file name"),
    "no import files": (_set("import_files", []), "import_files: a non-empty list"),
    "unknown riq_source": (_set("riq_source", "charades"), "riq_source: 'charades' is not an importer"),
    "name is not the file name": (_set("name", "other"), "name: 'other' is not the file name 'demo'"),
    "no files": (_set("files", []), "non-empty 'files:' list"),
}


def test_the_good_example_passes():
    assert preset_problems(copy.deepcopy(GOOD), "demo") == []


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_each_check_can_fail(case):
    edit, expected = BAD[case]
    problems = preset_problems(edit(copy.deepcopy(GOOD)), "demo")
    assert any(expected in p for p in problems), problems
