"""The code layout keeps DVC honest: every file a stage imports is one of its deps, and no import circles.

A stage whose deps miss a file it imports is reported "up to date" by DVC after that
file changes, over outputs the new code would not produce. The imports are read from
the source (ast), transitively from each stage's entry point (`python -m stages.<x>`),
including imports inside functions: a lazy import runs all the same.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str) -> Path | None:
    """The source file of a first-party module (``pipeline.x.y`` / ``stages.x``), or None."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def file_module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """First-party modules ``path`` imports anywhere in its body (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = file_module(path) if path.name == "__init__.py" else file_module(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pipeline.core import sbert` imports the submodule pipeline.core.sbert.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in {"pipeline", "stages"}:
                continue
            # Importing pipeline.a.b runs pipeline/__init__ and pipeline/a/__init__ too.
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                if module_file(".".join(parts[:i])):
                    found.add(".".join(parts[:i]))
    return found


def transitive_files(entry: str) -> set[Path]:
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    return seen


def stage_entries() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (entry module, deps) from dvc.yaml (foreach stages once, their deps templated alike)."""
    graph = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    out = {}
    for name, stage in graph["stages"].items():
        stage = stage.get("do", stage)
        match = re.search(r"python -m (stages\.\w+)", stage["cmd"])
        assert match, f"dvc.yaml stage {name}: cmd does not run `python -m stages.<name>`"
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        out[name] = (match.group(1), deps)
    return out


def uncovered(entry: str, deps: list[str]) -> list[str]:
    covered = [ROOT / d.rstrip("/") for d in deps if "${" not in d]
    missing = []
    for path in sorted(transitive_files(entry)):
        if not any(path == c or c in path.parents for c in covered):
            missing.append(str(path.relative_to(ROOT)))
    return missing


def test_every_stage_depends_on_every_file_it_imports():
    problems = {name: uncovered(entry, deps) for name, (entry, deps) in stage_entries().items()}
    problems = {name: files for name, files in problems.items() if files}
    assert not problems, "dvc.yaml deps miss imported files (DVC would call these stages up to date after they change): " + "; ".join(
        f"{name}: {', '.join(files)}" for name, files in problems.items())


def test_the_check_names_a_missing_file():
    # The check above must be able to fail: a stage that lists only its entry point misses the library.
    entry, deps = stage_entries()["train"]
    missing = uncovered(entry, [d for d in deps if not d.startswith("pipeline")])
    assert "pipeline/core/params.py" in missing and "pipeline/train/grpo.py" in missing


def import_graph() -> dict[str, set[str]]:
    files = [p for p in (ROOT / "pipeline").rglob("*.py")]
    return {file_module(p): {m for m in imported_modules(p) if m.startswith("pipeline")} - {file_module(p)} for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    # Package __init__ files are edges only where they import something; an empty one adds none.
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_circle():
    graph = {"pipeline.a": {"pipeline.b"}, "pipeline.b": {"pipeline.c"}, "pipeline.c": {"pipeline.a"}, "pipeline.d": {"pipeline.a"}}
    assert cycles(graph) == [["pipeline.a", "pipeline.b", "pipeline.c"]]


LAYERS = {
    # subpackage -> the subpackages it may import (besides itself). Core is the floor.
    "core": set(),
    "data": {"core"},
    "riq": {"core"},
    "model": {"core", "riq"},
    "train": {"core", "riq", "model"},
    "evaluate": {"core", "data", "riq", "model", "train"},  # data: `rarft predict` decodes a raw video
    "cli": {"core", "data", "riq", "model", "train", "evaluate"},
}


def test_subpackages_import_only_downwards():
    bad = []
    for module, imports in import_graph().items():
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in LAYERS:
            continue
        for target in imports:
            tparts = target.split(".")
            if len(tparts) >= 2 and tparts[1] != parts[1] and tparts[1] not in LAYERS[parts[1]]:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layering of docs/ARCHITECTURE.md: " + ", ".join(sorted(bad))


def test_stages_and_cli_are_glue():
    # Glue: stage scripts stay short; they parse arguments and call one library function.
    long = {p.name: n for p in (ROOT / "stages").glob("*.py") if (n := len(p.read_text().splitlines())) > 70}
    assert not long, f"stage scripts over 70 lines (move the logic into pipeline/): {long}"
