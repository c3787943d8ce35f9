"""The synthetic 'shapes world': seeded videos of coloured boxes whose event log
is exact, so queries built from it are true by construction.

Each video has 1-4 objects; each object lives in its own region of the frame
(whole frame, a half or a quarter) and never leaves it, so objects never
occlude each other. An object has at most two events, separated by >= 0.5 s,
so two events of one object never overlap. Every change is a linear animation
over the event's [start, end] (a fade for appears/disappears, a blink pattern
for blinks); outside its events an object does not change at all.

Frames are drawn with numpy (the geometry is known exactly, per frame) and piped
as raw RGB into one ffmpeg/libx264 process per video with pinned, bit-exact
encoder settings: the same seed gives byte-identical files on every machine
(the encoder is the lock-pinned static ffmpeg build, see ``encoder_exe``, and the
settings keep CPU-specific rounding out, see ``ENCODER_CPU_FLAGS``).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.core.events import PALETTE, Event, ShapeObject, VideoLog
from pipeline.core.io import atomic_path
from pipeline.core.params import SyntheticParams
from pipeline.data.ffmpeg import decoder_exe

# Dark backgrounds: every palette colour stands out against both.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "gray": (64, 64, 64)}
SHAPES: dict[str, tuple[float, float]] = {"square": (1.0, 1.0), "wide bar": (2.0, 0.5), "tall bar": (0.5, 2.0)}
SIZES: dict[str, float] = {"small": 0.1, "large": 0.2}  # base side as a fraction of min(width, height)
MOVES: dict[str, tuple[int, int]] = {"moves left": (-1, 0), "moves right": (1, 0), "moves up": (0, -1), "moves down": (0, 1)}

GROW = 1.6
SHRINK = 0.6
MIN_MOVE = 0.15  # shortest move, as a fraction of the frame along the move
MAX_MOVE = 0.5
BLINK_HALF_PERIOD_S = 0.4  # not a divisor of 1 s, so sampling at 1 or 2 fps still sees the blinking
GAP_S = 0.5  # between two events of one object, and from the video's ends
PAD = 2  # pixels kept free at the edge of a region, so neighbours never touch
EVENTS_PER_OBJECT = 2

# The same binary is not enough for the same bytes: swscale's SIMD RGB->YUV and x264's assembly
# round differently from their C code (measured: on an AVX-512 machine, -cpuflags 0 or x264's
# asm=0 changed the decoded pixels of 2 of 3 videos), so a machine with other CPU features rendered
# other videos, and dvc.lock's hashes and every metric moved. C code only (ENCODER_CPU_FLAGS before
# the input, asm=0 for x264) gives the same file whatever the CPU.
ENCODER_CPU_FLAGS = ("-cpuflags", "0")
ENCODER_ARGS = (
    "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-x264-params", "asm=0",
    "-pix_fmt", "yuv420p", "-threads", "1", "-sc_threshold", "0",
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-map_chapters", "-1",
    # swscale converts RGB with the BT.601 limited-range matrix; say so, so decoders invert the same one.
    "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m", "-color_range", "tv",
)


def encoder_exe() -> str:
    """The ffmpeg that encodes: the same lock-pinned static imageio-ffmpeg build that
    decodes (see ``ffmpeg_tools.decoder_exe``; RARFT_FFMPEG overrides). Pinned, so
    the videos are byte-identical on every machine, not only on one; and it starts
    ~5x faster than the distro build, which dominates the cost of a short clip
    (240 default videos: 20 s instead of 62 s wall on the busy 2-core box)."""
    return decoder_exe()


@dataclass(frozen=True)
class Box:
    cx: float
    cy: float
    w: float
    h: float

    def lerp(self, other: Box, p: float) -> Box:
        return Box(*(a + (b - a) * p for a, b in zip(
            (self.cx, self.cy, self.w, self.h), (other.cx, other.cy, other.w, other.h), strict=True)))

    def inside(self, region: tuple[int, int, int, int]) -> bool:
        x0, y0, x1, y1 = region
        return (self.cx - self.w / 2 >= x0 + PAD and self.cx + self.w / 2 <= x1 - PAD
                and self.cy - self.h / 2 >= y0 + PAD and self.cy + self.h / 2 <= y1 - PAD)


@dataclass(frozen=True)
class Step:
    """One event's geometry: frame indices and the object's box before/after."""

    event: Event
    start: int
    end: int
    before: Box
    after: Box


@dataclass(frozen=True)
class ObjectPlan:
    obj: ShapeObject
    visible0: bool
    box0: Box
    steps: tuple[Step, ...]

    def state(self, i: int, blink_half: int) -> tuple[Box, float]:
        """(box, opacity) at frame i."""
        box, alpha = self.box0, 1.0 if self.visible0 else 0.0
        for st in self.steps:
            if i < st.start:
                break
            action = st.event.action
            p = min(1.0, (i - st.start) / (st.end - st.start))
            box = st.before.lerp(st.after, p)
            if action == "appears":
                alpha = p
            elif action == "disappears":
                alpha = 1.0 - p
            elif action == "blinks" and st.start < i < st.end:
                # Off right after the start frame, so the blinking fills the whole event.
                alpha = float(((i - st.start - 1) // blink_half) % 2)
        return box, alpha


@dataclass(frozen=True)
class VideoPlan:
    log: VideoLog
    n_frames: int
    objects: tuple[ObjectPlan, ...]


def video_id(index: int, n_videos: int) -> str:
    return f"syn_{index:0{max(4, len(str(n_videos - 1)))}d}"


def _regions(n: int, w: int, h: int, rng: random.Random) -> list[tuple[str, tuple[int, int, int, int]]]:
    if n == 1:
        return [("whole frame", (0, 0, w, h))]
    if n == 2:
        if rng.random() < 0.5:
            return [("left", (0, 0, w // 2, h)), ("right", (w // 2, 0, w, h))]
        return [("top", (0, 0, w, h // 2)), ("bottom", (0, h // 2, w, h))]
    quads = [("top left", (0, 0, w // 2, h // 2)), ("top right", (w // 2, 0, w, h // 2)),
             ("bottom left", (0, h // 2, w // 2, h)), ("bottom right", (w // 2, h // 2, w, h))]
    return rng.sample(quads, n)


def _room(box: Box, region: tuple[int, int, int, int]) -> dict[str, float]:
    """How far the box can move in each direction without leaving its region."""
    x0, y0, x1, y1 = region
    return {"moves left": box.cx - box.w / 2 - (x0 + PAD), "moves right": (x1 - PAD) - (box.cx + box.w / 2),
            "moves up": box.cy - box.h / 2 - (y0 + PAD), "moves down": (y1 - PAD) - (box.cy + box.h / 2)}


def _candidates(box: Box, visible: bool, first: bool, region, frame: tuple[int, int]) -> dict[str, Box]:
    """Actions the object can do from this state -> its box afterwards (before picking a move distance)."""
    if not visible:
        return {"appears": box}
    out = {"disappears": box, "blinks": box}
    if first:
        out["appears"] = box
    grown = replace(box, w=box.w * GROW, h=box.h * GROW)
    if grown.inside(region):
        out["grows"] = grown
    if min(box.w, box.h) * SHRINK >= 3:
        out["shrinks"] = replace(box, w=box.w * SHRINK, h=box.h * SHRINK)
    room = _room(box, region)
    for action, (dx, _) in MOVES.items():
        if room[action] >= MIN_MOVE * frame[0 if dx else 1]:
            out[action] = box  # the distance is drawn later
    return out


def _place(k: int, last_frame: int, params: SyntheticParams, rng: random.Random) -> list[tuple[int, int]]:
    """k non-overlapping [start, end] frame intervals in [0, last_frame], >= GAP_S apart and from the ends."""
    fps = params.fps
    gap = math.ceil(GAP_S * fps)
    lo = max(1, math.ceil(params.min_event_duration * fps - 1e-9))
    hi = max(lo, math.floor(params.max_event_duration * fps + 1e-9))
    durs = [rng.randint(lo, hi) for _ in range(k)]
    # Frame rounding can leave the validated minimum a frame short: trim the longest event.
    while sum(durs) + (k + 1) * gap > last_frame and max(durs) > 1:
        durs[durs.index(max(durs))] -= 1
    free = max(0, last_frame - sum(durs) - (k + 1) * gap)
    cuts = sorted(rng.randint(0, free) for _ in range(k))
    spans, t, prev = [], 0, 0
    for d, c in zip(durs, cuts, strict=True):
        t += gap + (c - prev)
        prev = c
        spans.append((t, t + d))
        t += d
    return spans


def plan_video(params: SyntheticParams, index: int) -> VideoPlan:
    """The seeded plan (log + geometry) of video ``index``; pure, no rendering.

    Each video has its own random stream, so the first N videos of a larger set
    are the same as a set of N.
    """
    rng = random.Random(f"rarft-synthetic/{params.seed}/{index}")
    w, h, fps = params.width, params.height, params.fps
    lo_f = math.ceil(params.min_duration * fps - 1e-9)
    hi_f = max(lo_f, math.floor(params.max_duration * fps + 1e-9))
    n_frames = rng.randint(lo_f, hi_f)
    n_events = rng.randint(params.min_events, params.max_events)
    n_objects = rng.randint(math.ceil(n_events / EVENTS_PER_OBJECT), min(n_events, 4))
    per_object = [1] * n_objects
    for j in rng.sample([j for j in range(n_objects) for _ in range(EVENTS_PER_OBJECT - 1)], n_events - n_objects):
        per_object[j] += 1
    background = rng.choice(sorted(BACKGROUNDS))
    colors = rng.sample(sorted(PALETTE), n_objects)
    base_side = min(w, h)

    drafts = []  # (object, visible0, box0, [(action, start frame, end frame, box before, box after)])
    for j, ((region_name, region), color) in enumerate(zip(_regions(n_objects, w, h, rng), colors, strict=True)):
        shape, size = rng.choice(sorted(SHAPES)), rng.choice(sorted(SIZES))
        sx, sy = SHAPES[shape]
        rx0, ry0, rx1, ry1 = region
        bw = min(SIZES[size] * base_side * sx, rx1 - rx0 - 2 * PAD)
        bh = min(SIZES[size] * base_side * sy, ry1 - ry0 - 2 * PAD)
        box = Box(rng.uniform(rx0 + PAD + bw / 2, rx1 - PAD - bw / 2), rng.uniform(ry0 + PAD + bh / 2, ry1 - PAD - bh / 2), bw, bh)
        obj = ShapeObject(id=f"o{j + 1}", color=color, shape=shape, size=size, region=region_name)
        visible, visible0, box0, acts = True, True, box, []
        for k, (s, e) in enumerate(_place(per_object[j], n_frames - 1, params, rng)):
            options = _candidates(box, visible, k == 0, region, (w, h))
            action = rng.choice(sorted(options))
            after = options[action]
            if action in MOVES:
                dx, dy = MOVES[action]
                extent = w if dx else h
                dist = rng.uniform(MIN_MOVE * extent, min(_room(box, region)[action], MAX_MOVE * extent))
                after = replace(box, cx=box.cx + dx * dist, cy=box.cy + dy * dist)
            if action == "appears" and k == 0:
                visible0 = False
            acts.append((action, s, e, box, after))
            box = after
            if action in ("appears", "disappears"):
                visible = action == "appears"
        drafts.append((obj, visible0, box0, acts))

    # Event ids follow start time (ties: object order); (object, start frame) is unique.
    flat = sorted(((a[1], j, a) for j, draft in enumerate(drafts) for a in draft[3]), key=lambda x: x[:2])
    event_of = {
        (j, a[1]): Event(id=f"e{n + 1}", object_id=drafts[j][0].id, action=a[0], start=a[1] / fps, end=a[2] / fps)
        for n, (_, j, a) in enumerate(flat)
    }
    vid = video_id(index, params.n_videos)
    objects = tuple(
        ObjectPlan(obj, visible0, box0, tuple(Step(event_of[(j, a[1])], a[1], a[2], a[3], a[4]) for a in acts))
        for j, (obj, visible0, box0, acts) in enumerate(drafts)
    )
    log = VideoLog(
        video_id=vid, video=f"videos/{vid}.mp4", duration=n_frames / fps, width=w, height=h, fps=fps,
        background=background, objects=[o.obj for o in objects],
        events=[event_of[(j, a[1])] for _, j, a in flat],
    )
    return VideoPlan(log=log, n_frames=n_frames, objects=objects)


def _even(v: float) -> int:
    return 2 * math.floor(v / 2 + 0.5)


def _pixels(box: Box) -> tuple[int, int, int, int]:
    """Pixel bounds snapped to even coordinates: edges then fall on the 2x2 chroma
    blocks of yuv420p, so colours stay pure and a box's pixel count does not
    depend on where it stands."""
    x0, y0 = _even(box.cx - box.w / 2), _even(box.cy - box.h / 2)
    return x0, y0, x0 + max(2, _even(box.w)), y0 + max(2, _even(box.h))


def render_frames(plan: VideoPlan, chunk: int = 64) -> Iterator[np.ndarray]:
    """Yield (n, H, W, 3) uint8 RGB chunks of the video's frames."""
    log = plan.log
    bg = np.array(BACKGROUNDS[log.background], dtype=np.float64)
    blink_half = max(1, round(BLINK_HALF_PERIOD_S * log.fps))
    for first in range(0, plan.n_frames, chunk):
        frames = np.empty((min(chunk, plan.n_frames - first), log.height, log.width, 3), dtype=np.uint8)
        frames[:] = bg.astype(np.uint8)
        for n, frame in enumerate(frames):
            for op in plan.objects:
                box, alpha = op.state(first + n, blink_half)
                if alpha <= 0:
                    continue
                x0, y0, x1, y1 = _pixels(box)
                color = alpha * np.array(PALETTE[op.obj.color]) + (1 - alpha) * bg
                frame[y0:y1, x0:x1] = np.floor(color + 0.5).astype(np.uint8)
        yield frames


def encode(plan: VideoPlan, dest: Path) -> None:
    """Render ``plan`` into ``dest`` (mp4) atomically; raise RuntimeError with ffmpeg's message on failure."""
    log = plan.log
    cmd = [
        encoder_exe(), *ENCODER_CPU_FLAGS, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{log.width}x{log.height}", "-framerate", str(log.fps), "-i", "-",
        "-an", *ENCODER_ARGS, "-g", str(2 * int(log.fps)), "-frames:v", str(plan.n_frames),
    ]
    with atomic_path(dest, suffix=".part") as tmp:
        proc = subprocess.Popen([*cmd, "-f", "mp4", str(tmp)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for frames in render_frames(plan):
                proc.stdin.write(frames.tobytes())
        except BrokenPipeError:
            pass  # ffmpeg died; its message comes from stderr below
        _, err = proc.communicate()
        if proc.returncode != 0:
            msg = err.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"ffmpeg exit {proc.returncode}: {msg[-1] if msg else 'no message'}")


def render_dataset(params: SyntheticParams, out_dir: str | os.PathLike, workers: int = 0) -> tuple[list[VideoLog], list[dict]]:
    """Render every video into ``out_dir/videos``; return (logs of written videos, failures).

    A failure is ``{"id", "error"}``; the other videos are still written.
    """
    videos = Path(out_dir) / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for stale in videos.glob(".*.part"):  # left by a killed run
        stale.unlink()
    plans = [plan_video(params, i) for i in range(params.n_videos)]

    def one(plan: VideoPlan) -> tuple[VideoLog | None, dict | None]:
        try:
            encode(plan, videos / f"{plan.log.video_id}.mp4")
            return plan.log, None
        except (OSError, RuntimeError) as exc:
            return None, {"id": plan.log.video_id, "error": str(exc)}

    # Threads suffice: the encoding runs in ffmpeg processes, and numpy releases the GIL while filling frames.
    with ThreadPoolExecutor(max_workers=workers or len(os.sched_getaffinity(0))) as pool:
        results = list(pool.map(one, plans))
    # A video of a previous, larger or failed run would not match the new annotations.
    keep = {f"{log.video_id}.mp4" for log, _ in results if log}
    for old in videos.glob("syn_*.mp4"):
        if old.name not in keep:
            old.unlink()
    return [log for log, _ in results if log], [f for _, f in results if f]
