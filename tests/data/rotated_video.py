"""Writing a test video with a display-matrix rotation, with whichever ffmpeg the tests run.

ffmpeg 5.1 (Debian) writes the display matrix from a ``rotate`` stream tag when
stream-copying; newer builds (imageio-ffmpeg's 9.0.2) ignore that tag (no error, an
upright file) and take ``-display_rotation`` on the input instead, which 5.1 does not know. Either
way the result is checked with PyAV, so a binary that silently drops the rotation
fails here instead of making the rotation tests pass on an unrotated file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av


def rotation_of(path: Path) -> int:
    """Rotation of the first decoded frame (the display matrix), as PyAV reports it."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return int(frame.rotation or 0)


def write_rotated(ffmpeg: str, src: Path, dest: Path, degrees: int = 90) -> Path:
    """Stream-copy ``src`` to ``dest`` (mp4/mov) with a ``degrees`` display rotation; the frames are unchanged."""
    base = [ffmpeg, "-v", "error", "-nostdin", "-y"]
    new = subprocess.run([*base, "-display_rotation:v:0", str(degrees), "-i", str(src), "-c", "copy", str(dest)],
                         capture_output=True, text=True)
    if new.returncode != 0:
        if "display_rotation" not in new.stderr:  # an unknown option is the only expected failure
            raise RuntimeError(f"{dest}: {new.stderr.strip()}")
        subprocess.run([*base, "-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(dest)],
                       check=True, capture_output=True)
    got = rotation_of(dest)
    assert (got - degrees) % 360 == 0, f"{dest}: {ffmpeg} wrote rotation {got}, not {degrees}"
    return dest
