"""Word-supervised pretraining of the tiny vision tower (pipeline.model.vision_pretrain) on
real frames: a tower that starts blind must learn which colour a video shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.frames_cache import VideoFrames, save_frames
from pipeline.core.params import TinyModelParams
from pipeline.model.tiny import build_processor, build_tiny_model, train_tokenizer
from pipeline.model.vision_pretrain import pretrain_vision, visual_vocabulary, word_auc
from pipeline.riq.schema import RiqRecord

# Smallest tower that still has every part (patch embed, a block, the merger).
TINY = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=400)
COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30)}


def _record(video: str, query: str, answerable: bool = True) -> RiqRecord:
    base = {"id": f"{video}-{len(query)}-{answerable}", "video": video, "video_path": f"videos/{video}.mp4",
            "frames_path": f"{video}.npz", "duration": 4.0, "source": "synthetic"}
    if answerable:
        return RiqRecord.model_validate(base | {
            "problem": query, "task_type": "answerable", "kind": "answerable", "gt_answers": [{"answer": [0.0, 4.0]}],
            "reference_answer": "0.00 to 4.00", "contrast_answer": "No relevant segment.", "difficulty": "original"})
    return RiqRecord.model_validate(base | {
        "problem": query, "task_type": "refusable", "kind": "hard_irrelevant", "gt_answers": [{"answer": [-1.0, -1.0]}],
        "refusable_queries": [{"problem": "x", "gt_answers": [{"answer": [0.0, 4.0]}]}],
        "explanation": "No relevant segment.", "reference_answer": "No relevant segment.",
        "contrast_answer": "0.00 to 4.00", "difficulty": "hard", "categories": ["Attribute/AttributeValue"]})


def test_visual_vocabulary_keeps_words_that_tell_videos_apart():
    records = [_record("v0", "the red square moves left"), _record("v1", "the green square moves left"),
               _record("v2", "the red bar grows"), _record("v3", "the blue bar grows"),
               _record("v3", "the blue bar moves up", answerable=False)]  # refusals say nothing about the video
    tok = train_tokenizer([r.problem for r in records] * 20, 400)
    vocab = visual_vocabulary(records, tok, max_video_share=0.5)
    kept = {tok.decode([i]) for evs in vocab.values() for _, _, ids in evs for i in ids}
    # "the" is in 4/4 videos (> 0.5); "green" and "blue" in one video only; " up" only in a refusal.
    assert kept == {" red", " square", " moves", " left", " bar", " grows"}
    assert sorted(vocab) == ["v0", "v1", "v2", "v3"] and [s for s, _, _ in vocab["v3"]] == [0.0]


@pytest.fixture(scope="module")
def colour_videos(tmp_path_factory):
    """10 videos (8 frames at 2 fps, 56x84): a red or a green box on black, at a random place."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    records = []
    for i in range(10):
        colour = "red" if i % 2 == 0 else "green"
        frames = np.zeros((8, 56, 84, 3), np.uint8)
        y, x = rng.integers(0, 56 - 20), rng.integers(0, 84 - 20)
        frames[:, y : y + 20, x : x + 20] = COLOURS[colour]
        save_frames(root / f"v{i}.npz", VideoFrames(frames=frames, timestamps=np.arange(8) / 2.0,
                                                    meta={"sample_fps": 2.0, "duration": 4.0}))
        records.append(_record(f"v{i}", f"the {colour} square moves left"))
    return root, records


def test_pretraining_teaches_a_blind_tower_to_see_colour(colour_videos):
    root, records = colour_videos
    fit, held = records[:8], records[8:]
    tok = train_tokenizer([r.problem for r in records] * 20, 400)
    processor = build_processor(tok)
    torch.manual_seed(0)
    model = build_tiny_model(tok, TINY)
    decoder = {k: v.clone() for k, v in model.model.language_model.layers.state_dict().items()}
    before = word_auc(model, processor, held, root, fit, 0.5)
    summary = pretrain_vision(model, processor, fit, root, steps=60, learning_rate=1e-2, batch_size=4,
                              max_video_share=0.5, seed=0)
    after = word_auc(model, processor, held, root, fit, 0.5)
    # Words: red and green (each in 4 of 8 videos); held out: one red, one green video.
    assert summary["words"] == 2 and summary["last_loss"] < summary["first_loss"]
    assert after == 1.0 and before < 1.0
    # Only the tower and the word embeddings it is read through move; the decoder does not.
    assert all(torch.equal(v, model.model.language_model.layers.state_dict()[k]) for k, v in decoder.items())


def test_scene_words_name_every_object_while_in_view_and_every_event():
    from pipeline.core.events import VideoLog, visible_spans
    from pipeline.model.vision_pretrain import scene_words

    log = VideoLog(
        video_id="v", video="videos/v.mp4", duration=10.0, width=64, height=48, fps=10, background="black",
        objects=[{"id": "o1", "color": "red", "shape": "wide bar", "size": "large"},
                 {"id": "o2", "color": "blue", "shape": "square", "size": "small"}],
        events=[{"id": "e1", "object_id": "o1", "action": "appears", "start": 1.0, "end": 2.0},
                {"id": "e2", "object_id": "o2", "action": "moves left", "start": 2.0, "end": 4.0},
                {"id": "e3", "object_id": "o1", "action": "disappears", "start": 5.0, "end": 6.0},
                {"id": "e4", "object_id": "o2", "action": "grows", "start": 6.5, "end": 8.0},
                {"id": "e5", "object_id": "o1", "action": "appears", "start": 7.0, "end": 8.0}])
    # o1 starts hidden (its first event is 'appears'): seen from 1.0 to the end of 'disappears', then again.
    assert visible_spans(log, "o1") == [(1.0, 6.0), (7.0, 10.0)]
    assert visible_spans(log, "o2") == [(0.0, 10.0)]
    tok = train_tokenizer(["red wide bar large blue square small appears disappears moves left grows"] * 20, 400)
    # (A lone space token, where the toy tokenizer makes one, is no word.)
    got = sorted((s, e, [w for i in ids if (w := tok.decode([i]).strip())]) for s, e, ids in scene_words(log, tok))
    words = lambda text: sorted(text.split())  # noqa: E731
    expected = sorted([
        (1.0, 6.0, words("red wide bar")), (1.0, 6.0, ["large"]), (7.0, 10.0, words("red wide bar")), (7.0, 10.0, ["large"]),
        (0.0, 10.0, words("blue square")), (0.0, 6.5, ["small"]),  # its size word only until it grows
        (1.0, 2.0, words("red wide bar appears")), (5.0, 6.0, words("red wide bar disappears")), (7.0, 8.0, words("red wide bar appears")),
        (2.0, 4.0, words("blue square moves left")), (6.5, 8.0, words("blue square grows")),
    ])
    assert [(s, e, sorted(w)) for s, e, w in got] == expected


def _gaps(model, processor, records, root) -> tuple[float, float]:
    """Over the held-out videos: the score of the video's colour minus the other colour's, on the
    median token and on the best token (means over videos)."""
    from pipeline.core.frames_cache import load_frames
    from pipeline.model.vision_pretrain import _video_batch

    ids = {c: processor.tokenizer(" " + c, add_special_tokens=False)["input_ids"][-1] for c in COLOURS}
    median = best = 0.0
    with torch.no_grad():
        for r in records:
            out = model.model.visual(*_video_batch(processor, load_frames(root / r.frames_path)))
            feats = out.pooler_output if hasattr(out, "pooler_output") else out
            here, other = ("red", "green") if " red " in f" {r.problem} " else ("green", "red")
            gap = feats @ (model.get_input_embeddings().weight[ids[here]] - model.get_input_embeddings().weight[ids[other]])
            median += float(gap.median()) / len(records)
            best += float(gap.max()) / len(records)
    return median, best


def test_every_token_makes_every_video_token_tell_the_colour(colour_videos):
    """With the default max-over-tokens loss only the box's token has to know its colour; with
    ``every_token`` each token of a step predicts the step's words, so wherever the decoder looks
    it finds the colour (docs/MODEL.md: what let the tiny decoder read the video)."""
    root, records = colour_videos
    fit, held = records[:8], records[8:]
    tok = train_tokenizer([r.problem for r in records] * 20, 400)
    processor = build_processor(tok)
    gaps = {}
    for every in (False, True):
        torch.manual_seed(0)
        model = build_tiny_model(tok, TINY)
        pretrain_vision(model, processor, fit, root, steps=60, learning_rate=1e-2, batch_size=4, max_video_share=0.5,
                        seed=0, every_token=every)
        gaps[every] = _gaps(model, processor, held, root)
    ratio = {every: median / best for every, (median, best) in gaps.items()}
    # Measured: the median token carries 0.43 of the best token's colour gap without, 0.75 with.
    assert gaps[True][0] > 0 and ratio[True] > 0.6 > ratio[False], gaps


def test_located_targets_name_the_objects_each_token_covers():
    """Two frames of 56x56 make one temporal patch of 2x2 merged tokens (28 px each). A red small
    square sits in the top-left token; a large blue tall bar spans the two right tokens and grows
    during the patch. Hand-written expectation: each token has exactly the words of the objects
    whose pixels it covers; the bottom-left token none."""
    from pipeline.core.events import VideoLog
    from pipeline.core.events import PALETTE
    from pipeline.model.vision_pretrain import colour_map, located_targets, object_words

    log = VideoLog(
        video_id="v", video="videos/v.mp4", duration=1.0, width=56, height=56, fps=10, background="black",
        objects=[{"id": "o1", "color": "red", "shape": "square", "size": "small"},
                 {"id": "o2", "color": "blue", "shape": "tall bar", "size": "large"}],
        events=[{"id": "e1", "object_id": "o2", "action": "grows", "start": 0.2, "end": 0.4}])
    frames = np.zeros((2, 56, 56, 3), np.uint8)
    frames[0, 4:8, 4:8] = PALETTE["red"]  # 16 pixels in frame 0 only: enough
    frames[:, 20:40, 40:46] = PALETTE["blue"]
    frames[1, 50:52, 2] = (40, 60, 240)  # 2 near-blue pixels in the bottom-left token: under min_pixels (3)
    tok = train_tokenizer(["red square small blue tall bar large grows"] * 20, 400)
    words = object_words(log, tok)
    ids = sorted(set().union(*(i for spans in words.values() for _, _, i in spans)))
    col = {i: j for j, i in enumerate(ids)}
    cmap = colour_map(frames, list(words))
    assert cmap.shape == (2, 56, 56) and (cmap == 0).sum() == 16 and (cmap == 1).sum() == 2 * 20 * 6 + 2

    def named(got):
        return [sorted(w for j in got[0, k].nonzero().flatten().tolist() if (w := tok.decode([ids[j]]).strip())) for k in range(4)]

    got = located_targets(cmap, np.array([0.0, 0.5]), words, col, t=1, tps=2, cell=28)
    assert got.shape == (1, 4, len(ids))
    blue = sorted(["bar", "blue", "grows", "large", "tall"])
    assert named(got) == [["red", "small", "square"], blue, [], blue]
    # colour_ids: the token that covers nothing names the colours in view; the objects' tokens do not change.
    colour_ids = {c: set(tok(" " + c, add_special_tokens=False)["input_ids"]) for c in words}
    assert named(located_targets(cmap, np.array([0.0, 0.5]), words, col, t=1, tps=2, cell=28, colour_ids=colour_ids)) == [
        ["red", "small", "square"], blue, ["blue", "red"], blue]
    # whole_ids: shape and size words only at the token with most of the object (the bar: 8 of its
    # 20 rows in the top-right token, 12 in the bottom-right); the colour and action stay on both.
    whole_ids = set().union(*(tok(" " + w, add_special_tokens=False)["input_ids"] for w in ("square", "small", "tall bar", "large")))
    assert named(located_targets(cmap, np.array([0.0, 0.5]), words, col, t=1, tps=2, cell=28, whole_ids=whole_ids)) == [
        ["red", "small", "square"], ["blue", "grows"], [], blue]


def _box_logs(records):
    """An event log per colour video (its one box: a large square of the query's colour), and a
    processor whose tokenizer knows the log's words."""
    from pipeline.core.events import VideoLog

    logs = {r.video: VideoLog(video_id=r.video, video=r.video_path, duration=4.0, width=84, height=56, fps=2,
                              background="black", events=[],
                              objects=[{"id": "o1", "color": r.problem.split()[1], "shape": "square", "size": "large"}])
            for r in records}
    return logs, build_processor(train_tokenizer([r.problem + " large" for r in records] * 20, 400))


def test_located_pretraining_with_every_option_learns_from_the_event_logs(colour_videos):
    """The located path end to end (event logs, shift, whole_object, recolour_objects) on the colour
    videos: each has a log with its one box. Recolouring swaps red and green with the words to
    match, so the tower must still tell the held-out videos' colours apart."""
    root, records = colour_videos
    fit, held = records[:8], records[8:]
    logs, processor = _box_logs(records)
    torch.manual_seed(0)
    model = build_tiny_model(processor.tokenizer, TINY)
    summary = pretrain_vision(model, processor, fit, root, steps=60, learning_rate=1e-2, batch_size=4, max_video_share=0.5,
                              seed=0, logs=logs, located=True, logs_all_words=True, shift=4, whole_object=True,
                              recolour_objects=True)
    # Words: red, green, square, large (all log words).
    assert summary["words"] == 4 and summary["last_loss"] < summary["first_loss"]
    assert word_auc(model, processor, held, root, fit, 0.5) == 1.0


def test_clip_frames_trains_on_clips_and_still_learns(colour_videos):
    """With clip_frames 4 each drawn 8-frame video is cut to 4 frames (2 temporal patches), with and
    without shift (two processing paths), and the tower still tells the held-out colours apart; the
    whole video is 8 frames per draw."""
    root, records = colour_videos
    fit, held = records[:8], records[8:]
    logs, processor = _box_logs(records)
    drawn = {}
    for clip, shift in ((0, 0), (4, 0), (4, 4)):
        torch.manual_seed(0)
        model = build_tiny_model(processor.tokenizer, TINY)
        summary = pretrain_vision(model, processor, fit, root, steps=60, learning_rate=1e-2, batch_size=4,
                                  max_video_share=0.5, seed=0, logs=logs, located=True, logs_all_words=True,
                                  shift=shift, clip_frames=clip)
        drawn[clip, shift] = summary["frames_per_draw"]
        assert summary["last_loss"] < summary["first_loss"]
        assert word_auc(model, processor, held, root, fit, 0.5) == 1.0
    assert drawn == {(0, 0): 8.0, (4, 0): 4.0, (4, 4): 4.0}


def test_recolour_paints_each_object_and_its_edges_and_nothing_else():
    """A gray frame with a red box whose edge pixel is half red, half gray, and a green box. Painted
    red -> blue, green -> yellow: the box is blue, the edge pixel half blue, half gray (hand-computed:
    64 + 0.5 * (40 - 64) = 52, 64 + 0.5 * (70 - 64) = 67, 64 + 0.5 * (250 - 64) = 157), the green box
    yellow, the background untouched; colour_map then finds the objects where it found them before."""
    from pipeline.core.events import PALETTE
    from pipeline.model.vision_pretrain import colour_map, recolour

    frames = np.full((1, 10, 10, 3), 64, np.uint8)
    frames[0, 1:4, 1:4] = PALETTE["red"]
    frames[0, 2, 4] = (147, 47, 47)  # (64 + 230) / 2, (64 + 30) / 2
    frames[0, 6:9, 6:9] = PALETTE["green"]
    out = recolour(frames, [PALETTE["red"], PALETTE["green"]], [PALETTE["blue"], PALETTE["yellow"]])
    assert (out[0, 1:4, 1:4] == PALETTE["blue"]).all() and (out[0, 6:9, 6:9] == PALETTE["yellow"]).all()
    assert tuple(out[0, 2, 4]) == (52, 67, 157)
    assert (out[0, 0] == 64).all() and (out[0, 5, :5] == 64).all()
    assert (colour_map(out, ["blue", "yellow"]) == colour_map(frames, ["red", "green"])).all()


def test_translate_moves_frames_and_fills_with_the_background():
    from pipeline.model.vision_pretrain import foreground, free_shift, translate

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    moved = translate(frames, 3, -5)
    assert (moved[:, 3:, :-5] == frames[:, :-3, 5:]).all()
    assert (moved[:, :3] == frames[:, :1, :1]).all() and (moved[:, :, -5:] == frames[:, :1, :1]).all()
    # A box from rows 2-4, columns 20-25 of a black frame may move up 2, down 13, left 13, right 2 at most.
    box = np.zeros((2, 28, 28, 3), np.uint8)
    box[0, 2:5, 20:26] = 200
    import random
    r = random.Random(0)
    shifts = [free_shift(foreground(box), 13, r) for _ in range(300)]
    assert (min(d for d, _ in shifts), max(d for d, _ in shifts)) == (-2, 13)
    assert (min(d for _, d in shifts), max(d for _, d in shifts)) == (-13, 2)
