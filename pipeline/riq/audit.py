"""Blind baseline of a RIQ dataset: how well does the query text alone tell refusable from answerable?

A model that refuses *because of what it sees* must beat a classifier that never sees the
video. This module fits such classifiers on the train records' queries and scores them on
the test records, split by video (never a video on both sides):

* ``ngram``: logistic regression on word uni- and bigrams (scikit-learn), whose
  coefficients name the cue n-grams (the words that most push "refusable");
* ``sbert``: logistic regression on all-MiniLM-L6-v2 sentence embeddings (optional).

Reported per column: balanced accuracy overall (chance 0.5), and per ``kind``,
``difficulty`` and category of the refusable records. A group of refusable records has
one class only, so its balanced accuracy pairs it with all answerable test records:
``(true-negative rate on answerable + recall on the group) / 2``. docs/RIQ.md has the
numbers of the released sets and the synthetic default.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from pipeline.core.io import InputError
from pipeline.riq.schema import RiqRecord

TOP_CUES = 15


def split_by_video(records: Sequence[RiqRecord], test_fraction: float, seed: int) -> tuple[list[RiqRecord], list[RiqRecord]]:
    """Seeded split of one file's records by video: (train, test)."""
    videos = sorted({r.video for r in records})
    if len(videos) < 2:
        raise InputError(f"audit: {len(videos)} video(s): at least 2 are needed to split by video")
    random.Random(f"{seed}:audit").shuffle(videos)
    n_test = min(max(round(len(videos) * test_fraction), 1), len(videos) - 1)
    test_videos = set(videos[:n_test])
    return [r for r in records if r.video not in test_videos], [r for r in records if r.video in test_videos]


def _label(r: RiqRecord) -> int:
    return int(r.task_type == "refusable")


def _balanced(y: np.ndarray, pred: np.ndarray) -> float:
    recalls = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    return round(sum(recalls) / len(recalls), 4) if recalls else float("nan")


def _groups(test: Sequence[RiqRecord]) -> dict[str, dict[str, np.ndarray]]:
    """Refusable subgroups (by kind, difficulty, category) as index arrays into ``test``."""
    out: dict[str, dict[str, list[int]]] = {"kind": {}, "difficulty": {}, "category": {}}
    for i, r in enumerate(test):
        if r.task_type != "refusable":
            continue
        out["kind"].setdefault(r.kind, []).append(i)
        out["difficulty"].setdefault(r.difficulty or "none", []).append(i)
        for c in r.categories:
            out["category"].setdefault(c, []).append(i)
    return {k: {g: np.asarray(v) for g, v in sorted(d.items())} for k, d in out.items()}


def _score(y: np.ndarray, pred: np.ndarray, groups) -> dict:
    answerable = np.flatnonzero(y == 0)
    tnr = float((pred[answerable] == 0).mean()) if len(answerable) else float("nan")
    block = {"balanced_accuracy": _balanced(y, pred), "answerable_kept": round(tnr, 4)}
    for axis, by in groups.items():
        block[axis] = {g: {"n": len(idx), "refused": round(float(pred[idx].mean()), 4),
                           "balanced_accuracy": round((tnr + float(pred[idx].mean())) / 2, 4)} for g, idx in by.items()}
    return block


def _ngram(train_q: list[str], y_train: np.ndarray, test_q: list[str], seed: int) -> tuple[np.ndarray, list[dict]]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer(ngram_range=(1, 2), lowercase=True, token_pattern=r"(?u)\b\w+\b", binary=True)
    x_train = vec.fit_transform(train_q)
    clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed).fit(x_train, y_train)
    pred = clf.predict(vec.transform(test_q))
    names = vec.get_feature_names_out()
    coef = clf.coef_[0]
    present = np.asarray(x_train.sum(axis=0)).ravel()
    refusable_counts = np.asarray(x_train[y_train == 1].sum(axis=0)).ravel()
    cues = [{"ngram": str(names[j]), "weight": round(float(coef[j]), 3), "train_refusable": int(refusable_counts[j]),
             "train_answerable": int(present[j] - refusable_counts[j])}
            for j in np.argsort(-coef)[:TOP_CUES]]
    return pred, cues


def _sbert(train_q: list[str], y_train: np.ndarray, test_q: list[str], seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    from pipeline.core import sbert

    emb = sbert.embed(train_q + test_q)
    clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed).fit(emb[: len(train_q)], y_train)
    return clf.predict(emb[len(train_q):])


def audit(train: Sequence[RiqRecord], test: Sequence[RiqRecord], *, use_sbert: bool = True, seed: int = 0) -> dict:
    """The blind baselines fitted on ``train`` queries and scored on ``test`` (see the module doc)."""
    shared = sorted({r.video for r in train} & {r.video for r in test})
    if shared:
        raise InputError(f"audit: {len(shared)} video(s) in both train and test (first: {', '.join(shared[:3])}): the split must be by video")
    y_train, y_test = np.array([_label(r) for r in train]), np.array([_label(r) for r in test])
    for name, y in (("train", y_train), ("test", y_test)):
        if len(set(y.tolist())) < 2:
            raise InputError(f"audit: the {name} records hold one class only (answerable and refusable are both needed)")
    train_q, test_q = [r.problem for r in train], [r.problem for r in test]
    groups = _groups(test)
    pred, cues = _ngram(train_q, y_train, test_q, seed)
    out = {
        "n_train": len(train), "n_test": len(test), "test_refusable_share": round(float(y_test.mean()), 4),
        "ngram": _score(y_test, pred, groups) | {"top_cues": cues},
    }
    if use_sbert:
        out["sbert"] = _score(y_test, _sbert(train_q, y_train, test_q, seed), groups)
    return out


def read_for_audit(path, fmt: str = "riq") -> list[RiqRecord]:
    """RIQ records of a file: a RIQ file, or a released annotation file read by its importer (no frames needed)."""
    if fmt == "riq":
        from pipeline.riq.schema import read_riq

        return read_riq(path)
    from pipeline.riq.importers import import_annotations

    return [RiqRecord.model_validate(r) for r in import_annotations(fmt, path, None).records]


def audit_files(paths: Sequence[str], fmt: str = "riq", *, test_fraction: float = 0.2, seed: int = 0, use_sbert: bool = True) -> dict:
    """`rarft audit`: TRAIN TEST (fit on one, score on the other) or one FILE split by video (seeded)."""
    if len(paths) not in (1, 2):
        raise InputError(f"audit: give TRAIN TEST or one FILE, got {len(paths)} paths")
    if len(paths) == 2:
        train, test = read_for_audit(paths[0], fmt), read_for_audit(paths[1], fmt)
        split = {"mode": "files", "train": str(paths[0]), "test": str(paths[1])}
    else:
        train, test = split_by_video(read_for_audit(paths[0], fmt), test_fraction, seed)
        split = {"mode": "by_video", "file": str(paths[0]), "test_fraction": test_fraction, "seed": seed}
    return {"split": split, **audit(train, test, use_sbert=use_sbert, seed=seed)}


def summary_lines(result: dict) -> list[str]:
    """Human-readable lines of an audit: one per column, then the cue n-grams."""
    lines = []
    for column in ("ngram", "sbert"):
        if column in result:
            block = result[column]
            per = "; ".join(f"{axis} " + ", ".join(f"{g} {v['balanced_accuracy']:.3f}" for g, v in block[axis].items())
                            for axis in ("kind", "difficulty"))
            lines.append(f"{column}: balanced accuracy {block['balanced_accuracy']:.3f} (chance 0.5) on {result['n_test']} test records; {per}")
    cues = ", ".join(f"{c['ngram']!r} ({c['train_refusable']} refusable / {c['train_answerable']} answerable)" for c in result["ngram"]["top_cues"][:8])
    lines.append(f"cues (push 'refusable' most): {cues}")
    return lines
