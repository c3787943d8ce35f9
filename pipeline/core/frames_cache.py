"""The frames cache: one pickle-free ``<dir>/<video_id>.npz`` per video, shared by every stage.

extract_frames writes it; build_riq, make_model, train and evaluate read it. The
format is the one type they all share, so it lives in core (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.io import InputError, atomic_path


@dataclass
class VideoFrames:
    frames: np.ndarray  # uint8 (T, H, W, 3)
    timestamps: np.ndarray  # float64 (T,), seconds from the start of the file
    meta: dict = field(default_factory=dict)


def frames_path(frames_dir: str | Path, video_id: str) -> Path:
    """Where the cache keeps ``video_id``'s frames: ``<frames_dir>/<video_id>.npz``."""
    return Path(frames_dir) / f"{video_id}.npz"


def frames_file(record, frames_dir: str | Path | None) -> Path:
    """A record's frames: ``<frames_dir>/<video>.npz`` (the declared stage input), else its ``frames_path``.

    ``record``: anything with ``id``, ``video`` and ``frames_path`` (a RiqRecord).
    """
    if frames_dir is not None:
        path = frames_path(frames_dir, record.video)
        if path.is_file() or not record.frames_path:
            return path
    if record.frames_path:
        return Path(record.frames_path)
    raise InputError(f"record {record.id}: frames_path: not set and no frames folder given")


def one_line(exc: BaseException) -> str:
    # PyAV errors carry errno and path in str(); the path is already in our message.
    text = getattr(exc, "strerror", None) or str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text[:300]


def save_frames(path: str | Path, vf: VideoFrames) -> Path:
    """Write one pickle-free ``.npz`` atomically (a killed run leaves no partial file)."""
    path = Path(path)
    meta = np.array(json.dumps(vf.meta, sort_keys=True))
    with atomic_path(path, suffix=".npz") as tmp:
        # An open file handle stops np.savez from appending ".npz" to the temp name.
        with open(tmp, "wb") as fh:
            np.savez(fh, frames=np.asarray(vf.frames, np.uint8), timestamps=np.asarray(vf.timestamps, np.float64), meta=meta)
    return path


def load_frames(path: str | Path) -> VideoFrames:
    """Read a frames file written by :func:`save_frames`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            frames, timestamps, meta = data["frames"], data["timestamps"], json.loads(str(data["meta"][()]))
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a frames file ({one_line(exc)})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"{path}: frames: expected uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    if timestamps.shape != frames.shape[:1]:
        raise InputError(f"{path}: timestamps: expected shape ({frames.shape[0]},), got {timestamps.shape}")
    return VideoFrames(frames=frames, timestamps=timestamps, meta=meta)
