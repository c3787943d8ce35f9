"""Vision pretraining of the tiny model: a stand-in for the image-text pretraining
a hub Qwen2.5-VL's vision tower already has.

Through the language-model loss alone, a randomly initialised tiny vision tower
gets almost no gradient (the decoder first learns to ignore video tokens that all
look alike), so the warm start and GRPO never learn to look. Here the tower is
trained directly with word supervision (bag-of-words pretraining, as in
tag-supervised visual pretraining): each merged video token group of one time step
must predict, through the model's own tied word embeddings, the words of the
answerable train queries whose segment overlaps that time, and the whole video
the words of all its queries. The targets come from the RIQ train split only, so
any dataset works, not only the synthetic one; words that occur in most videos
("the", "moment") carry nothing visual and are left out.

Because the head is the (tied) embedding matrix, a video token ends up close to
the input embeddings of the words it shows, which the decoder can then read
like text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pipeline.core.events import PALETTE, VideoLog, visible_spans
from pipeline.core.frames_cache import frames_file, load_frames
from pipeline.riq.schema import RiqRecord


def query_words(records: Sequence[RiqRecord], tokenizer) -> dict[str, list[tuple[float, float, set[int]]]]:
    """Per video: (start, end, token ids) of each of its answerable queries."""
    events: dict[str, list[tuple[float, float, set[int]]]] = {}
    for r in records:
        if r.task_type != "answerable" or r.span is None:
            continue
        ids = set(tokenizer(" " + " ".join(r.problem.split()), add_special_tokens=False)["input_ids"])
        events.setdefault(r.video, []).append((float(r.span[0]), float(r.span[1]), ids))
    return events


def visual_vocabulary(records: Sequence[RiqRecord], tokenizer, max_video_share: float) -> dict[str, list[tuple[float, float, set[int]]]]:
    """:func:`query_words`, keeping only token ids that occur in at most ``max_video_share``
    of the videos (and in at least two: a word of one video cannot generalise)."""
    events = query_words(records, tokenizer)
    df: dict[int, int] = {}
    for evs in events.values():
        for i in set().union(*(e[2] for e in evs)):
            df[i] = df.get(i, 0) + 1
    n = max(1, len(events))
    keep = {i for i, c in df.items() if c >= 2 and c / n <= max_video_share}
    return {v: [(s, e, ids & keep) for s, e, ids in evs] for v, evs in events.items()}


def scene_words(log: VideoLog, tokenizer) -> list[tuple[float, float, set[int]]]:
    """What a synthetic video shows, from its event log: (start, end, token ids) for each span in
    which an object is in view (its colour, shape and size words, the size only until it first
    grows or shrinks) and for each event (the object's words and the action's, finite form as in
    the queries). Denser than :func:`query_words`, which names an object only while one of
    its queries' events runs: an object in view but idle is then a false negative."""
    def ids(text: str) -> set[int]:
        return set(tokenizer(" " + text, add_special_tokens=False)["input_ids"])

    out = []
    for obj in log.objects:
        look = ids(f"{obj.color} {obj.shape}")
        resized = [e.start for e in log.events if e.object_id == obj.id and e.action in ("grows", "shrinks")]
        size_until = min(resized) if resized else log.duration
        for s, e in visible_spans(log, obj.id):
            out.append((s, e, look))
            if s < size_until:
                out.append((s, min(e, size_until), ids(obj.size)))
    for ev in log.events:
        obj = log.object(ev.object_id)
        out.append((ev.start, ev.end, ids(f"{obj.color} {obj.shape} {ev.action}")))
    return out


def object_words(log: VideoLog, tokenizer) -> dict[str, list[tuple[float, float, set[int]]]]:
    """Per object of a synthetic video: (start, end, token ids) of what it shows over time, as in
    :func:`scene_words` (its colour and shape words while in view, its size word until it first
    grows or shrinks, an event's action words while the event runs)."""
    def ids(text: str) -> set[int]:
        return set(tokenizer(" " + text, add_special_tokens=False)["input_ids"])

    out: dict[str, list[tuple[float, float, set[int]]]] = {}
    for obj in log.objects:
        look = ids(f"{obj.color} {obj.shape}")
        resized = [e.start for e in log.events if e.object_id == obj.id and e.action in ("grows", "shrinks")]
        size_until = min(resized) if resized else log.duration
        spans = [(0.0, log.duration, look), (0.0, size_until, ids(obj.size))]
        spans += [(e.start, e.end, ids(e.action)) for e in log.events if e.object_id == obj.id]
        out[obj.color] = spans
    return out


def colour_map(frames, colours: Sequence[str]):
    """(T, H, W) int8: for each pixel, the index in ``colours`` of the palette colour it shows, or -1.
    A synthetic object is a box of one palette colour, unique within its video, so this map says
    where each object is (a fading object, between colours, is nowhere)."""
    import numpy as np

    out = np.full(frames.shape[:3], -1, np.int8)
    rgb = frames.astype(np.int16)
    for j, colour in enumerate(colours):
        out[np.abs(rgb - np.array(PALETTE[colour], np.int16)).sum(-1) < 60] = j
    return out


def located_targets(cmap, timestamps, words: dict[str, list[tuple[float, float, set[int]]]], col: dict[int, int],
                    t: int, tps: int, cell: int, min_pixels: int = 3, colour_ids: dict[str, set[int]] | None = None,
                    whole_ids: set[int] | None = None):
    """(t, tokens, len(col)) targets of each merged video token: the words (``words``: per colour,
    :func:`object_words`) of the objects whose pixels (``cmap``: :func:`colour_map` over
    ``list(words)``) it covers in either frame of its temporal patch; a token that covers no object
    has no words. With ``colour_ids`` (colour -> its word's ids), tokens that cover no object name
    the colours in view at their time step instead: wherever the decoder looks it then finds which
    colours are there, while an object's own tokens keep only its words, so its shape and size stay
    bound to its colour. With ``whole_ids`` (the ids of the shape and size words), those words go only
    to the token that covers most of the object's pixels at each time step: a token that shows a
    sliver of a square is not asked to call it a square."""
    import numpy as np
    import torch

    n, h, w = cmap.shape
    if t * tps > n:  # the processor repeats the last frame up to a whole temporal patch
        cmap = np.concatenate([cmap, np.repeat(cmap[-1:], t * tps - n, 0)])
        timestamps = np.concatenate([timestamps, np.repeat(timestamps[-1:], t * tps - n)])
    gh, gw = h // cell, w // cell
    cells = cmap[: t * tps, : gh * cell, : gw * cell].reshape(t, tps, gh, cell, gw, cell)
    out = torch.zeros(t, gh * gw, len(col))
    for j, (colour, spans) in enumerate(words.items()):
        counts = (cells == j).sum((1, 3, 5)).reshape(t, gh * gw)
        hits = counts >= min_pixels
        for k in np.flatnonzero(hits.any(1)):
            lo, hi = float(timestamps[k * tps]), float(timestamps[k * tps + tps - 1])
            ids_now = {i for s, e, ids in spans if s <= hi and e >= lo for i in ids if i in col}
            whole = ids_now & whole_ids if whole_ids else set()
            cols = [col[i] for i in ids_now - whole]
            if cols:
                out[k, torch.from_numpy(np.flatnonzero(hits[k]))[:, None], torch.tensor(cols)[None]] = 1.0
            if whole:
                out[k, int(counts[k].argmax()), [col[i] for i in whole]] = 1.0
    if colour_ids:
        empty = out.sum(-1) == 0
        for colour in words:
            cols = [col[i] for i in colour_ids.get(colour, ()) if i in col]
            if cols:
                on = (out[:, :, cols] > 0).any(-1).any(-1)  # (t,): the colour's object is in view
                out[:, :, cols] += (on[:, None] & empty).float()[:, :, None]
    return out


def translate(frames, dy: int, dx: int, fill=None):
    """``frames`` (T, H, W, C) moved by (dy, dx) pixels; the uncovered border takes ``fill``, by default
    the top-left pixel (the background: synthetic objects keep clear of the frame's edges)."""
    import numpy as np

    out = np.empty_like(frames)
    out[:] = frames[:, :1, :1] if fill is None else fill
    h, w = frames.shape[1:3]
    out[:, max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = frames[:, max(-dy, 0): h - max(dy, 0), max(-dx, 0): w - max(dx, 0)]
    return out


def recolour(frames, old: Sequence[tuple[int, int, int]], new: Sequence[tuple[int, int, int]]):
    """``frames`` with each object of colour ``old[j]`` painted ``new[j]`` instead, its anti-aliased
    edges included: a pixel that lies on the line from the background (the top-left pixel) to
    ``old[j]`` keeps its place on that line, towards ``new[j]``. Synthetic colours are unique within
    a video and far apart, so another object's pixels stay off every line but their own."""
    import numpy as np

    px = frames.astype(np.float32)
    bg = px[:, :1, :1]
    out = px.copy()
    for o, n in zip(old, new, strict=True):
        d = np.asarray(o, np.float32) - bg
        alpha = ((px - bg) * d).sum(-1, keepdims=True) / (d * d).sum(-1, keepdims=True)
        on = (alpha > 0.15) & (np.abs(px - (bg + alpha * d)).sum(-1, keepdims=True) < 40)
        out = np.where(on, bg + alpha * (np.asarray(n, np.float32) - bg), out)
    return np.clip(out + 0.5, 0, 255).astype(frames.dtype)


def foreground(frames):
    """(H, W) bool: pixels that ever differ from the background (the top-left pixel)."""
    import numpy as np

    return (np.abs(frames.astype(np.int16) - frames[:, :1, :1]).sum(-1) > 30).any(0)


def free_shift(fg, most: int, rng: random.Random) -> tuple[int, int]:
    """A random (dy, dx), each within +-``most`` pixels, that keeps every pixel of ``fg``
    (:func:`foreground`) inside the frame: a cut-off object would show another shape."""
    import numpy as np

    if not fg.any():
        return rng.randint(-most, most), rng.randint(-most, most)
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    h, w = fg.shape
    dy = rng.randint(max(-most, -int(rows[0])), min(most, h - 1 - int(rows[-1])))
    dx = rng.randint(max(-most, -int(cols[0])), min(most, w - 1 - int(cols[-1])))
    return dy, dx


def _video_batch(processor, frames):
    from pipeline.model.video_inputs import batch_inputs, prompt_text

    b = batch_inputs(processor, [prompt_text(processor, "")], [frames])
    return b["pixel_values_videos"], b["video_grid_thw"]


def word_auc(model, processor, records: Sequence[RiqRecord], frames_dir, train_records: Sequence[RiqRecord],
             max_video_share: float) -> float | None:
    """How well the video tokens tell which visual words a video's queries use: the ROC AUC,
    over (video, word) pairs of ``records``' videos, of the best video token's score for the
    word (0.5 = chance). The words are the visual vocabulary of ``train_records``."""
    import torch


    vocab = visual_vocabulary(train_records, processor.tokenizer, max_video_share)
    words = sorted(set().union(*(ids for evs in vocab.values() for _, _, ids in evs))) if vocab else []
    truth = query_words(records, processor.tokenizer)
    first = {r.video: r for r in records if r.video in truth}
    if not words or not first:
        return None
    embed = model.get_input_embeddings().weight
    scores, labels = [], []
    with torch.no_grad():
        for video, record in sorted(first.items()):
            pixels, grid = _video_batch(processor, load_frames(frames_file(record, frames_dir)))
            out = model.model.visual(pixels, grid_thw=grid)
            feats = out.pooler_output if hasattr(out, "pooler_output") else out
            best = (feats @ embed[words].T).amax(0)
            present = set().union(*(ids for _, _, ids in truth[video]))
            scores += best.tolist()
            labels += [w in present for w in words]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    # Mann-Whitney form of the AUC: share of (positive, negative) pairs ranked right, ties half.
    neg_t = torch.tensor(neg)
    wins = sum(float((p > neg_t).sum() + 0.5 * (p == neg_t).sum()) for p in pos)
    return round(wins / (len(pos) * len(neg)), 4)


def pretrain_vision(model, processor, records: Sequence[RiqRecord], frames_dir, *, steps: int, learning_rate: float,
                    batch_size: int, max_video_share: float, seed: int, logs: dict[str, VideoLog] | None = None,
                    every_token: bool = False, located: bool = False,
                    logs_all_words: bool = False, shift: int = 0, colour_everywhere: bool = False,
                    whole_object: bool = False, recolour_objects: bool = False, clip_frames: int = 0) -> dict:
    """Train the vision tower (and the tied word embeddings it is read through) on
    word targets; returns the losses.

    The words are the visual vocabulary of the records' queries. With ``logs`` (the synthetic
    event logs), a video that has one is supervised with :func:`scene_words` instead of its
    queries' words: every object in view, not only those whose events a query names.
    """
    import torch
    import torch.nn.functional as F


    vocab = visual_vocabulary(records, processor.tokenizer, max_video_share)
    if logs:
        # The share filter (meant for "the", "moment") drops every shape and size word, which occur
        # in most videos, so by default the tower never learns to see shape or size; the words of an
        # event log are visual by construction, and ``logs_all_words`` keeps them all (docs/MODEL.md).
        keep = set().union(*(ids for evs in vocab.values() for _, _, ids in evs)) if not logs_all_words else None
        dense = {v: [(s, e, ids if keep is None else ids & keep) for s, e, ids in scene_words(logs[v], processor.tokenizer)]
                 for v in vocab if v in logs}
        vocab |= dense
    by_video = {r.video: r for r in records if r.video in vocab}
    videos = sorted(by_video)
    words = sorted(set().union(*(ids for evs in vocab.values() for _, _, ids in evs)))
    if not videos or not words or steps <= 0:
        return {"steps": 0}
    col = {w: j for j, w in enumerate(words)}
    embed = model.get_input_embeddings().weight
    # A learnt temperature keeps the video tokens near the scale of word embeddings.
    log_scale = torch.nn.Parameter(torch.tensor(3.0))
    params = list(model.model.visual.parameters()) + [embed, log_scale]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    merge = model.config.vision_config.spatial_merge_size
    cache: dict[str, tuple] = {}

    def inputs(video: str):
        if video not in cache:
            frames = load_frames(frames_file(by_video[video], frames_dir))
            pixels, grid = _video_batch(processor, frames)
            located_inputs = None
            if located and logs and video in logs:
                log = logs[video]
                colour_ids = {o.color: set(processor.tokenizer(" " + o.color, add_special_tokens=False)["input_ids"])
                              for o in log.objects} if colour_everywhere else None
                whole_ids = set().union(*(processor.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
                                          for o in log.objects for w in (o.shape, o.size))) if whole_object else None
                located_inputs = (colour_map(frames.frames, [o.color for o in log.objects]), foreground(frames.frames),
                                  object_words(log, processor.tokenizer), colour_ids, whole_ids)
            cache[video] = (pixels, grid, [float(t) for t in frames.timestamps], frames, located_inputs)
        pixels, grid, ts, frames, located_inputs = cache[video]
        if located_inputs is None:
            return pixels, grid, ts, None, vocab[video]
        cmap, fg, obj_words, colour_ids, whole_ids = located_inputs
        spans = vocab[video]
        if recolour_objects:
            # Each draw paints the objects in other palette colours, with the words to match, so a
            # shape is seen in every colour rather than in the one or two of its few train objects.
            log = logs[video]
            new = recolour_rng.sample(palette, len(log.objects))
            frames = type(frames)(frames=recolour(frames.frames, [PALETTE[o.color] for o in log.objects], [PALETTE[c] for c in new]),
                                  timestamps=frames.timestamps, meta=frames.meta)
            log = log.model_copy(update={"objects": [o.model_copy(update={"color": c}) for o, c in zip(log.objects, new, strict=True)]})
            obj_words = object_words(log, processor.tokenizer)
            if colour_ids is not None:
                colour_ids = {c: set(processor.tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in new}
            spans = [(s, e, ids if keep is None else ids & keep) for s, e, ids in scene_words(log, processor.tokenizer)]
        if clip_frames and len(frames.frames) > clip_frames:
            # Frames of one video show the same few objects, so a short clip teaches the tower nearly
            # what the whole video does, at a fraction of the tokens and of the processing.
            a = clip_rng.randrange((len(frames.frames) - clip_frames) // tps + 1) * tps
            frames = type(frames)(frames=frames.frames[a:a + clip_frames], timestamps=frames.timestamps[a:a + clip_frames],
                                  meta=frames.meta)
            cmap, ts = cmap[a:a + clip_frames], [float(t) for t in frames.timestamps]
        if (recolour_objects or clip_frames) and not shift:
            pixels, grid = _video_batch(processor, frames)
        if shift:
            # A fresh translation each time the video is drawn: the same object then falls on
            # different places of the patch grid, so the tower learns its shape, not its pixels.
            dy, dx = free_shift(fg, shift, shift_rng)
            moved = type(frames)(frames=translate(frames.frames, dy, dx), timestamps=frames.timestamps, meta=frames.meta)
            pixels, grid = _video_batch(processor, moved)
            cmap = translate(cmap[..., None], dy, dx, fill=-1)[..., 0]
        where = located_targets(cmap, frames.timestamps, obj_words, col, int(grid[0, 0]), tps,
                                model.config.vision_config.patch_size * merge, colour_ids=colour_ids, whole_ids=whole_ids)
        return pixels, grid, ts, where, spans

    def targets(spans, t: int, ts: list[float], tps: int) -> tuple:
        step_s = ts[1] - ts[0] if len(ts) > 1 else 0.5
        groups = torch.zeros(t, len(words))
        for k in range(t):
            lo, hi = ts[min(k * tps, len(ts) - 1)], ts[min(k * tps + tps - 1, len(ts) - 1)] + step_s
            for s, e, ids in spans:
                if s < hi and e > lo:
                    groups[k, [col[i] for i in ids]] = 1.0
        whole = torch.zeros(len(words))
        for _, _, ids in spans:
            whole[[col[i] for i in ids]] = 1.0
        return groups, whole

    tps = model.config.vision_config.temporal_patch_size
    rng, shift_rng, recolour_rng = random.Random(seed), random.Random(seed + 1), random.Random(seed + 2)
    clip_rng = random.Random(seed + 3)
    # Only colours the logs name: their words are targets; another colour's word would have no column.
    palette = sorted({o.color for v in videos if v in (logs or {}) for o in logs[v].objects})
    model.train()
    losses, drawn = [], []
    for _ in range(steps):
        chunk = rng.sample(videos, min(batch_size, len(videos)))
        got = [inputs(v) for v in chunk]
        drawn += [int(g[1][0, 0]) * tps for g in got]
        pixels = torch.cat([g[0] for g in got])
        grid = torch.cat([g[1] for g in got])
        out = model.model.visual(pixels, grid_thw=grid)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        sizes = (grid.prod(-1) // merge**2).tolist()
        loss = 0.0
        for (_, thw, ts, where, spans), f in zip(got, torch.split(feats, sizes)):
            t = int(thw[0, 0])
            logits = log_scale.exp() * (f @ embed[words].T)  # (tokens, words)
            per_group = logits.view(t, -1, len(words)).amax(1)
            g_target, w_target = targets(spans, t, ts, tps)
            if clip_frames and where is not None:
                w_target = g_target.amax(0)  # only the words of the clip's time
            if where is not None:
                loss = loss + F.binary_cross_entropy_with_logits(logits.view(t, -1, len(words)), where)
            elif every_token:
                per_token = logits.view(t, -1, len(words))
                loss = loss + F.binary_cross_entropy_with_logits(per_token, g_target[:, None].expand_as(per_token))
            loss = loss + F.binary_cross_entropy_with_logits(per_group, g_target)
            loss = loss + F.binary_cross_entropy_with_logits(per_group.amax(0), w_target)
        loss = loss / len(chunk)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    k = max(1, len(losses) // 10)
    return {
        "steps": steps,
        "videos": len(videos),
        "videos_with_event_log": sum(v in (logs or {}) for v in videos),
        "words": len(words),
        "first_loss": round(sum(losses[:k]) / k, 4),
        "last_loss": round(sum(losses[-k:]) / k, 4),
        "frames_per_draw": round(sum(drawn) / len(drawn), 1),
    }
