"""Profiles: named sets of params (configs/profiles/<name>.yaml) written into params.yaml.

``rarft profile gpu8`` rewrites params.yaml so that every key any profile lists
takes its default from :mod:`pipeline.core.params`, then the keys of the chosen
profile take the profile's values, and ``profile`` records the name. Keys no
profile lists keep whatever params.yaml says. ``cpu`` is the built-in profile
that lists nothing, i.e. the defaults.

Why a file rewrite and not a loader-side merge or Hydra composition: the values
that run are then the values in params.yaml, so ``dvc params diff`` and
``dvc exp show`` columns are the real learning rate, model and process count,
and ``dvc repro`` / ``dvc exp run`` behave as usual (docs/TRAINING.md, Profiles).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.io import InputError, atomic_path
from pipeline.core.params import Params, parse_params

PROFILES_DIR = Path(__file__).resolve().parents[2] / "configs" / "profiles"
DEFAULT = "cpu"
ATOMIC = {"reward_weights", "train_sets", "eval_sets", "generators", "perturb_difficulty"}


def profile_names(folder: Path = PROFILES_DIR) -> list[str]:
    return sorted([DEFAULT, *(p.stem for p in folder.glob("*.yaml"))])


def read_profile(name: str, folder: Path = PROFILES_DIR) -> dict:
    """The profile's nested keys (empty for ``cpu``); an unknown name or a bad key fails in one line."""
    if name == DEFAULT:
        return {}
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"profile {name!r}: no {path} (known: {', '.join(profile_names(folder))})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    params = parse_params(data, str(path))  # every key must be a params key
    check_lengths(params, str(path))
    return data


def check_lengths(params: Params, source: str) -> None:
    """Evaluation must generate at least as many tokens as a rollout may have: a completion cut
    before its <answer> is scored wrong for both classes (docs/TRAINING.md, Profiles)."""
    ev, tr = params.evaluate.max_new_tokens, params.train.max_completion_length
    if ev < tr:
        raise InputError(f"{source}: evaluate.max_new_tokens: {ev} is shorter than train.max_completion_length {tr} "
                         "(a truncated completion has no <answer>); set evaluate.max_new_tokens >= train.max_completion_length")


def _leaves(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    for key, value in tree.items():
        # Dict-valued params are one value each, not sections: a profile's set list replaces the default's.
        if isinstance(value, dict) and key not in ATOMIC:
            out |= _leaves(value, (*prefix, key))
        else:
            out[(*prefix, key)] = value
    return out


def _set(tree: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def compose(current: dict, name: str, folder: Path = PROFILES_DIR) -> dict:
    """``current`` params data with profile ``name`` applied (see the module docstring)."""
    defaults = Params().model_dump(mode="json")
    touched = set()
    for other in profile_names(folder):
        touched |= set(_leaves(read_profile(other, folder)))
    out = copy.deepcopy(current or {})
    for path in sorted(touched):
        _set(out, path, _get(defaults, path))
    for path, value in _leaves(read_profile(name, folder)).items():
        _set(out, path, value)
    out["profile"] = name
    # Set lists are written whole, every field of every set, so dvc.yaml's per-set params exist.
    riq = parse_params(out).riq.model_dump(mode="json")
    for key in ("train_sets", "eval_sets"):
        if key in out.get("riq", {}):
            out["riq"][key] = riq[key]
    return out


def apply_profile(name: str, params_path: str | Path = "params.yaml", folder: Path = PROFILES_DIR) -> dict[str, tuple]:
    """Rewrite ``params_path`` with profile ``name``; return the changed keys as ``{key: (old, new)}``."""
    path = Path(params_path)
    current = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else Params().model_dump(mode="json")
    new = compose(current, name, folder)
    parse_params(new, str(path))
    old_leaves, new_leaves = _leaves(current), _leaves(new)
    changed = {".".join(k): (old_leaves.get(k), v) for k, v in new_leaves.items() if old_leaves.get(k) != v}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(new, sort_keys=False), encoding="utf-8")
    return changed
