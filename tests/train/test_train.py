"""Stage train: GRPO on video with the real tiny Qwen2.5-VL, real frames and real rewards.

The data chain is the real one at toy size (synthetic videos rendered and
encoded by ffmpeg, frames extracted, RIQ records built); the policy is the tiny
model from pipeline.model.tiny, saved and loaded like models/base.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.frames_cache import load_frames
from pipeline.core.io import InputError
from pipeline.core.params import (
    FramesParams,
    ModelParams,
    Params,
    RiqParams,
    SyntheticParams,
    TinyModelParams,
    VisionPretrainParams,
    WarmStartParams,
)

TINY = TinyModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64, vision_depth=1, vision_hidden_size=16, vision_num_heads=1, vocab_size=400)
# Few, small frames keep the vision tower and the sequences short (<= 16 merged tokens per video).
FRAMES = FramesParams(fps=1.0, total_pixels=16 * 28 * 28, workers=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from pipeline.core.params import DownloadParams
    from pipeline.data.download import run_download
    from pipeline.data.frames import extract_dir
    from pipeline.riq.build import build_riq

    root = tmp_path_factory.mktemp("train")
    synth = SyntheticParams(n_videos=3, min_duration=8.0, max_duration=9.0, seed=1)
    run_download(DownloadParams(synthetic=synth, workers=1), root / "raw")
    extract_dir(root / "raw" / "videos", root / "frames", FRAMES, progress=False)
    build_riq(RiqParams(test_fraction=0.34), root / "raw" / "annotations.jsonl", root / "frames", root / "riq", root / "stats.json")
    return root


@pytest.fixture(scope="module")
def records(data):
    from pipeline.riq.schema import read_train_records

    return read_train_records(data / "riq" / "train.jsonl")


@pytest.fixture(scope="module")
def base(data, records) -> Path:
    from pipeline.model.make import make_model

    # No warm start: GRPO mechanics do not need a good policy, only a real one.
    params = ModelParams(tiny=TINY, vision_pretrain=VisionPretrainParams(steps=0), warm_start=WarmStartParams(epochs=0, eval_records=0))
    make_model(params, records, data / "frames", data / "base", frames=FRAMES)
    return data / "base"


def _params(**train) -> Params:
    small = {"max_steps": 2, "max_completion_length": 12, "num_generations": 2, "per_device_train_batch_size": 4}
    return Params().model_copy(update={"train": Params().train.model_copy(update=small | train)})


# --------------------------------------------------------------------------- rewards
def test_reward_functions_follow_registry_order():
    from pipeline.train.rewards import REWARDS
    from pipeline.train.run import reward_functions

    funcs, weights = reward_functions({"correction": 0.5, "format": 2.0, "explain": 1.0})
    assert [f.__name__ for f in funcs] == [n for n in REWARDS if n in ("format", "explain", "correction")]
    assert weights == [2.0, 1.0, 0.5]
    # The renamed function is the registry's function.
    assert funcs[0](["<think>a</think> <answer>b</answer> <correction>NIL</correction>", "x"]) == [1.0, 0.0]
    with pytest.raises(InputError, match=r"^params.yaml: train.reward_weights.bogus: unknown reward"):
        reward_functions({"format": 1.0, "bogus": 1.0})


# --------------------------------------------------------------------------- data mix
def test_pools_group_refusable_by_video_and_correction_target(records):
    from pipeline.train.run import refusal_pools

    pools = refusal_pools(records)
    members = [i for pool in pools for i in pool]
    assert sorted(members) == [i for i, r in enumerate(records) if r.task_type == "refusable"]
    for pool in pools:
        assert len({(records[i].video, records[i].correction_target) for i in pool}) == 1
    assert any(len(pool) > 1 for pool in pools)  # hard + medium variants of one true query


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.8, 1.0, 0.0])
def test_mix_keeps_every_example_and_balances(records, fraction):
    from pipeline.train.run import mix_rows, refusal_pools

    rows = mix_rows(records, fraction, seed=0)
    answerable = [r for r in rows if records[r[0]].task_type == "answerable"]
    n_ans = sum(r.task_type == "answerable" for r in records)
    pools = refusal_pools(records)
    if fraction > 0:
        assert {r[0] for r in answerable} == {i for i, r in enumerate(records) if r.task_type == "answerable"}
    if fraction < 1:
        assert all(p in rows for p in pools)
    assert len(answerable) / len(rows) == pytest.approx(fraction, abs=1.0 / len(rows))
    assert len(rows) == (n_ans if fraction == 1 else len(pools) if fraction == 0 else len(rows))
    assert mix_rows(records, fraction, seed=0) == rows


def test_pool_draw_is_seeded_and_changes_with_epoch():
    from pipeline.train.run import pick

    pool = [10, 11, 12]
    draws = [pick(pool, row=3, epoch=e, seed=0) for e in range(30)]
    assert draws == [pick(pool, row=3, epoch=e, seed=0) for e in range(30)]
    assert set(draws) == set(pool)
    assert pick([7], row=0, epoch=5, seed=1) == 7


def test_dataset_rows_carry_prompt_frames_and_reward_columns(records):
    from pipeline.train.rewards import reward_columns
    from pipeline.train.run import build_dataset

    ds, clock = build_dataset(records, lambda q: f"<prompt>{q}", 0.5, seed=0)
    by_id = {r.id: r for r in records}
    seen = {}
    for epoch in range(4):
        clock.epoch = epoch
        for i in range(len(ds)):
            row = ds[i]
            rec = by_id[row["record_id"]]
            assert row["prompt"] == f"<prompt>{rec.problem}" and row["frames_path"] == rec.frames_path
            assert {k: row[k] for k in reward_columns(rec)} == reward_columns(rec)
            seen.setdefault(i, set()).add(rec.id)
    # Some refusable row drew different pool members in different epochs.
    assert any(len(ids) > 1 for ids in seen.values())


def test_missing_frames_path_is_a_one_line_error(tmp_path, records):
    from pipeline.riq.schema import read_train_records

    bad = records[0].model_dump() | {"frames_path": None}
    (tmp_path / "t.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=rf"t.jsonl: record '{records[0].id}': frames_path: missing"):
        read_train_records(tmp_path / "t.jsonl")


# --------------------------------------------------------------------------- GRPO
@pytest.fixture(scope="module")
def run(data, base):
    """Two GRPO steps through train()'s own pieces, with probes on the policy and reference forwards."""
    from pipeline.train.run import build_trainer, run

    trainer = build_trainer(_params(), base, data / "riq" / "train.jsonl", data / "live", data / "work")
    policy, ref = trainer.model, trainer.ref_model
    seen = {"policy": [], "ref": [], "vision_in_loss": 0}

    def grab(name):
        def hook(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            seen[name].append({"grad": torch.is_grad_enabled(), "input_ids": ids, **{k: kwargs.get(k) for k in
                               ("mm_token_type_ids", "second_per_grid_ts", "video_grid_thw", "pixel_values_videos")}})
        return hook

    def vision(_module, _args, _out):
        # Only the loss forward runs with gradients (generation and old/ref log-probs are no_grad).
        seen["vision_in_loss"] += torch.is_grad_enabled()

    handles = [policy.register_forward_pre_hook(grab("policy"), with_kwargs=True),
               ref.register_forward_pre_hook(grab("ref"), with_kwargs=True),
               policy.model.visual.register_forward_hook(vision)]
    summary = run(trainer, data / "trained")
    for h in handles:
        h.remove()
    return trainer, seen, summary


def test_vision_tower_runs_in_the_loss_forward(run):
    trainer, seen, summary = run
    assert summary["steps"] == 2
    assert seen["vision_in_loss"] == 2  # once per optimizer step (one micro-batch per step)


def test_second_per_grid_ts_is_temporal_patch_over_true_fps(run, records):
    trainer, seen, _ = run
    tps = trainer.processing_class.video_processor.temporal_patch_size
    fps = {load_frames(r.frames_path).meta["sample_fps"] for r in records}
    assert fps == {FRAMES.fps}
    # Forwards that see the videos: generation's prefill, reference and loss log-probs (decode steps do not).
    calls = [c for c in seen["policy"] + seen["ref"] if c["video_grid_thw"] is not None]
    assert {c["grad"] for c in calls} == {True, False}
    for c in calls:
        ts = c["second_per_grid_ts"]
        assert ts is not None and ts.shape[0] == c["video_grid_thw"].shape[0]
        assert torch.allclose(ts, torch.full_like(ts, tps / FRAMES.fps))


@pytest.mark.parametrize("who", ["policy", "ref"])
def test_mm_token_type_ids_reach_the_logprob_forward(run, who):
    trainer, seen, _ = run
    video_id = trainer.model.config.video_token_id
    # Log-prob forwards see the whole prompt+completion; the loss forward is the policy's grad-enabled one.
    forwards = [c for c in seen[who] if c["grad"] == (who == "policy")]
    assert forwards
    merge = trainer.processing_class.video_processor.merge_size ** 2
    for c in forwards:
        mm, ids = c["mm_token_type_ids"], c["input_ids"]
        assert mm is not None and mm.shape == ids.shape
        assert torch.equal(mm == 2, ids == video_id) and not (mm == 1).any()
        assert int((mm == 2).sum()) == int(c["video_grid_thw"].prod(-1).sum()) // merge
        assert c["pixel_values_videos"].shape[0] == int(c["video_grid_thw"].prod(-1).sum())


def test_two_steps_write_model_and_curves(run, data):
    from pipeline.model.video_inputs import load_policy

    trainer, _, summary = run
    out = data / "trained"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "chat_template.jinja").is_file() or (out / "processor_config.json").is_file()
    model, processor = load_policy(out)
    assert model.config.video_token_id == trainer.model.config.video_token_id
    # The saved weights are the trained policy's (a random tiny policy may earn equal rewards in every group,
    # so whether two steps move the weights is not asserted here).
    saved = model.state_dict()
    assert all(torch.equal(saved[k], v.detach().cpu()) for k, v in trainer.model.state_dict().items())
    live = data / "live"
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 2 and set(metrics["rewards"]) == {"format", "refuse_iou", "explain", "correction"}
    for key in ("reward", "kl", "completions/mean_length", "rewards/format/mean", "rewards/refuse_iou/mean",
                "rewards/explain/mean", "rewards/correction/mean"):
        tsv = [line.split("\t") for line in (live / "plots" / "metrics" / f"{key}.tsv").read_text().splitlines()]
        assert tsv[0][:2] == ["step", key.split("/")[-1]], key
        assert [int(r[0]) for r in tsv[1:]] == [1, 2], key  # one point per optimizer step
        assert np.isfinite([float(r[1]) for r in tsv[1:]]).all(), key
    assert not (live / "dvc.yaml").exists()
    assert not (data / "work").exists() or not any((data / "work").iterdir())


def test_trainer_config_is_explicit(run):
    trainer, _, _ = run
    args, tp = trainer.args, Params().train
    assert (args.loss_type, args.beta, args.bf16, args.scale_rewards) == ("grpo", tp.beta, False, "group")
    assert list(trainer.reward_weights.tolist()) == [tp.reward_weights[n] for n in trainer.reward_func_names]
    assert trainer.reward_func_names == ["format", "refuse_iou", "explain", "correction"]
    vocab = trainer.model.config
    assert {vocab.video_token_id, vocab.image_token_id, vocab.vision_start_token_id} <= set(trainer.generation_config.suppress_tokens)


# The GPU profile, launcher, DeepSpeed and multi-process checks are in tests/train/test_distributed.py;
# checkpoints and resume in tests/train/test_resume.py.


def _two_prompt_lengths(trainer) -> list[dict]:
    """Dataset rows (num_generations of each) with prompts of two token lengths, so TRL left-pads one of them."""
    from pipeline.model.video_inputs import batch_inputs

    rows, counts = [], set()
    for row in trainer.train_dataset:
        n = batch_inputs(trainer.processing_class, [row["prompt"]], [load_frames(row["frames_path"])])["input_ids"].shape[1]
        if n not in counts:
            counts.add(n)
            rows += [row] * trainer.num_generations
        if len(counts) == 2:
            return rows
    raise AssertionError("the fixture's prompts all have the same length")


def test_loss_logprobs_equal_a_plain_one_sample_forward(run):
    """GRPO must score the tokens it sampled under the distribution it sampled them from.

    The trainer's log-prob forward sees TRL's layout (left-padded prompts, right-padded completions,
    several videos in one batch); a plain forward of one unpadded prompt+completion is the reference.
    A wrong position, token-type id or video in the batched path changes the numbers, not the shapes.
    """
    trainer, _, _ = run
    trainer.model.eval()
    out = trainer._generate_and_score_completions(_two_prompt_lengths(trainer))
    prompt, completion = out["prompt_ids"], out["completion_ids"]
    assert (out["prompt_mask"] == 0).any(), "the batch should hold prompts of different lengths"
    trainer._video = out["video_inputs"]
    try:
        with torch.no_grad():
            logps, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, torch.cat([prompt, completion], 1), torch.cat([out["prompt_mask"], out["completion_mask"]], 1),
                completion.size(1), batch_size=completion.size(0))
    finally:
        trainer._video = None
    # The test policy is nearly uniform (log-probs about -6), so layout errors move log-probs by ~1e-5:
    # the tolerance sits well below what dropping the token-type ids (1-D positions) does, checked below.
    worst_flat = 0.0
    for i, video in enumerate(out["video_inputs"]):
        p = torch.tensor(video["prompt_ids"])
        c = completion[i][out["completion_mask"][i].bool()]
        x = torch.cat([p, c])[None]
        mm = torch.cat([video["mm_token_type_ids"].cpu(), torch.zeros(len(c), dtype=torch.long)])[None]
        fields = {k: video[k] for k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")}

        def logp(**extra):
            with torch.no_grad():
                logits = trainer.model(input_ids=x, attention_mask=torch.ones_like(x), **fields, **extra).logits
            lp = torch.log_softmax(logits[0, len(p) - 1 : -1].float() / trainer.temperature, -1)
            return lp.gather(-1, c[:, None])[:, 0]

        expected = logp(mm_token_type_ids=mm)
        torch.testing.assert_close(logps[i, : len(c)], expected, atol=5e-6, rtol=0)
        worst_flat = max(worst_flat, (logp() - expected).abs().max().item())
    assert worst_flat > 1e-5, f"1-D positions change log-probs by only {worst_flat:.1e}: the test cannot tell layouts apart"


def test_logprob_forward_positions_follow_qwens_rule(run):
    """The 3-D positions of the GRPO log-prob forward (TRL's [pad.. prompt | completion ..pad] layout,
    several videos per batch) are Qwen's, token for token: the completion continues after the prompt, and
    the prompt's text after the video starts after the video's last time step (tests/rope_reference.py;
    transformers 5.24 alone puts it max(h, w) past the video's start, see pipeline/model/rope.py)."""
    from rope_reference import assert_positions, reference_positions

    trainer, _, _ = run
    trainer.model.eval()
    out = trainer._generate_and_score_completions(_two_prompt_lengths(trainer))
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    seen = []
    handle = trainer.model.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["position_ids"]), with_kwargs=True)
    trainer._video = out["video_inputs"]
    try:
        with torch.no_grad():
            trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, out["completion_ids"].size(1),
                                                       batch_size=ids.size(0))
    finally:
        trainer._video = None
        handle.remove()
    (pos,) = seen
    vc, video_id = trainer.model.config.vision_config, trainer.model.config.video_token_id
    for i, video in enumerate(out["video_inputs"]):
        keep = mask[i].bool()
        row = ids[i][keep].tolist()
        grid, seconds = video["video_grid_thw"][0].tolist(), video["second_per_grid_ts"][0].item()
        want = torch.tensor(reference_positions(row, video_id, [grid], [seconds], vc.tokens_per_second,
                                                vc.spatial_merge_size)).T
        assert_positions(pos[:, i, keep], want, f"log-prob forward, row {i} (grid {grid}, {seconds} s per grid)")
        # The fixture's videos last longer than they are wide, so the two rules differ here.
        after = max(j for j, t in enumerate(row) if t == video_id) + 1
        start = int(want[0, row.index(video_id)])
        assert int(want[0, after]) > start + max(grid[1:]) // vc.spatial_merge_size
