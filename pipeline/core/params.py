"""The single reader of params.yaml.

One frozen pydantic model per section; unknown keys and bad values fail with a
one-line error naming the key (``params.yaml: frames.fps: ...``). Stages load
only through :func:`load_params`, and each dvc.yaml stage declares exactly the
sections it reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.core.io import InputError, read_yaml


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- download
class SyntheticParams(Section):
    n_videos: int = Field(240, ge=1, description="Number of synthetic 'shapes world' videos to render.")
    min_duration: float = Field(8.0, gt=0, description="Shortest video, seconds.")
    max_duration: float = Field(30.0, gt=0, description="Longest video, seconds (>= min_duration).")
    width: int = Field(160, ge=32, description="Rendered width in pixels (even, for yuv420p).")
    height: int = Field(120, ge=32, description="Rendered height in pixels (even, for yuv420p).")
    fps: int = Field(10, ge=1, description="Frame rate of the rendered videos.")
    min_events: int = Field(2, ge=1, description="Fewest events per video.")
    max_events: int = Field(4, ge=1, le=8, description="Most events per video (>= min_events; at most 8: 4 objects x 2 events).")
    min_event_duration: float = Field(1.5, gt=0, description="Shortest event, seconds (two events plus three 0.5 s gaps must fit in min_duration).")
    max_event_duration: float = Field(6.0, gt=0, description="Longest event, seconds (>= min_event_duration).")
    seed: int = Field(0, description="Seed of the generator: same seed, byte-identical videos and logs.")

    # Field validators (not a model validator) so the error names the offending key.
    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (yuv420p)")
        return v

    @field_validator("max_duration", "max_events", "max_event_duration")
    @classmethod
    def _not_below_min(cls, v, info: ValidationInfo):
        low = info.data.get(info.field_name.replace("max_", "min_"))
        if low is not None and v < low:
            raise ValueError(f"must be >= {info.field_name.replace('max_', 'min_')} ({low})")
        return v

    @field_validator("min_event_duration")
    @classmethod
    def _fits(cls, v: float, info: ValidationInfo) -> float:
        shortest = info.data.get("min_duration")
        if shortest is not None and 2 * v + 1.5 > shortest:
            raise ValueError(f"two events of {v} s plus 1.5 s of gaps must fit in min_duration ({shortest} s)")
        return v


class HttpParams(Section):
    presets: list[str] = Field(default_factory=list, description="Dataset presets to fetch (files of pipeline/data/presets/<name>.yaml: charades-sta, activitynet-captions, qvhighlights, ra-rft); see docs/DATA.md.")
    manifest: str = Field("", description="Extra manifest (YAML/JSON list of {url, dest, sha256?, size?, extract?, strip_components?}); dest is relative to the raw folder, videos go under videos/.")
    retries: int = Field(5, ge=0, description="Retries per file after a dropped connection, a 5xx/429 answer or a checksum mismatch (4xx other than 408/429 is final).")
    backoff: float = Field(1.0, ge=0, description="First retry delay in seconds, doubled per retry (capped at 60 s).")
    timeout: float = Field(30.0, gt=0, description="Seconds without a byte before a connection counts as dropped.")
    workers: int = Field(8, ge=1, description="Files fetched in parallel (network-bound, so independent of the CPU count).")
    keep_archives: bool = Field(False, description="Keep zip/tar archives after extracting them (a small <archive>.extracted.json records what they held either way).")


class YoutubeParams(Section):
    ids_file: str = Field("", description="Video ids: .txt (one per line, first token), .jsonl/.json records with vid/video_id/id (QVHighlights' vid_start_end gives the clip), or a JSON object keyed by id (ActivityNet v_<id>); relative paths are looked up in the raw folder first.")
    url_template: str = Field("https://www.youtube.com/watch?v={youtube_id}", description="URL of one video; {youtube_id} is replaced.")
    format: str = Field("b[height<=480][ext=mp4]/bv*[height<=480][ext=mp4]+ba[ext=m4a]/b[height<=480]/b", description="yt-dlp format selector (default: best mp4 at most 480p).")
    clips: bool = Field(True, description="Cut to the clip range when the id gives one (QVHighlights {youtube_id}_{start}_{end}); false = whole videos.")
    rate_limit: int = Field(0, ge=0, description="Bytes per second per download; 0 = unlimited.")
    sleep: float = Field(0.0, ge=0, description="Seconds to wait between two videos of one worker (be polite to the site).")
    retries: int = Field(3, ge=0, description="yt-dlp retries per video (and per fragment).")
    workers: int = Field(2, ge=1, description="Videos fetched in parallel.")
    max_videos: int = Field(0, ge=0, description="Fetch at most this many ids (first in file order); 0 = all.")


class LocalParams(Section):
    folder: str = Field("", description="Existing folder of videos (searched recursively); a video's id is its file name without extension.")
    ids_file: str = Field("", description="Optional list of ids to take (same formats as youtube.ids_file); empty = every video in the folder. Ids not found are recorded as failures.")
    link: Literal["auto", "hardlink", "symlink", "copy"] = Field("auto", description="How videos enter videos/: auto = hardlink, else symlink (other filesystem); never copied unless 'copy'. See docs/DATA.md for DVC's cache.type.")
    extensions: list[str] = Field(default_factory=lambda: [".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg"], description="File extensions counted as videos (case-insensitive).")


class DownloadParams(Section):
    sources: list[Literal["synthetic", "http", "youtube", "local"]] = Field(
        default_factory=lambda: ["synthetic"], min_length=1,
        description="Sources that fill data/raw/, in order (several at once; a later duplicate video id is a failure): synthetic (offline default), http, youtube, local.",
    )
    workers: int = Field(0, ge=0, description="Parallel render workers of the synthetic source; 0 = one per CPU core.")
    max_failures: int = Field(-1, ge=-1, description="Fail the stage when more items than this failed (see data/raw/failures.jsonl); -1 = never for failures alone (it still fails when nothing at all is written).")
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams, description="Settings of the offline synthetic source.")
    http: HttpParams = Field(default_factory=HttpParams, description="Settings of the http source (manifest files and dataset presets).")
    youtube: YoutubeParams = Field(default_factory=YoutubeParams, description="Settings of the youtube source (yt-dlp).")
    local: LocalParams = Field(default_factory=LocalParams, description="Settings of the local-folder source.")

    @field_validator("sources", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        # `-S download.sources=local` and `--source local,http` give a string.
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a source is listed twice")
        return v


# --------------------------------------------------------------------------- frames
class FramesParams(Section):
    fps: float = Field(2.0, gt=0, description="Target sampling rate in frames per second (Qwen2.5-VL default 2.0).")
    min_frames: int = Field(4, ge=1, description="Fewest frames kept per video (rounded up to an even count).")
    max_frames: int = Field(768, ge=2, description="Most frames kept per video (rounded down to an even count).")
    min_pixels: int = Field(3136, gt=0, description="Lower bound of H*W per frame (qwen-vl-utils min_pixels).")
    max_pixels: int = Field(602112, gt=0, description="Upper bound of H*W per frame (qwen-vl-utils VIDEO_MAX_PIXELS = 768*28*28).")
    total_pixels: int = Field(141120, gt=0, description="Pixel budget for the whole clip (qwen-vl-utils total_pixels); the per-frame cap is total_pixels / n_frames * 2, so a video costs at most total_pixels / 784 merged visual tokens (default 180*28*28: <= 180 tokens).")
    workers: int = Field(0, ge=0, description="Videos decoded in parallel; 0 = one per CPU core.")

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_frames > self.max_frames:
            raise ValueError("min_frames must be <= max_frames")
        if self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must be <= max_pixels")
        return self


# --------------------------------------------------------------------------- riq
ImportFormat = Literal["seed", "hi-vtg", "charades-sta", "activitynet-captions", "qvhighlights"]


def _plain_file_name(v: str) -> str:
    if v and (Path(v).name != v or v in (".", "..")):
        raise ValueError("must be a file name inside the imports folders (data/import/, data/raw/annotations/), not a path")
    return v


class TrainSetParams(Section):
    """One annotation file the train RIQ is built from (riq.source: sets)."""

    format: ImportFormat = Field(description="Importer of the file (pipeline.riq.importers): charades-sta (the .txt or the {video: {duration, timestamps, sentences}} JSON layout), activitynet-captions, qvhighlights, hi-vtg, seed.")
    file: str = Field(description="File name inside the imports folders (build_riq --imports: data/import/, then data/raw/annotations/).")
    max_videos: int = Field(0, ge=0, description="Take at most this many of the file's videos that have frames (a seeded sample; the others' queries are quarantined as 'not_in_subset'); 0 = all. For plumbing runs on CPU (profile paper-cpu).")

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _plain_file_name(v)


class EvalSetParams(Section):
    """One evaluation set: its own RIQ file data/riq/eval/<name>.jsonl and its own evaluate@<name> stage."""

    format: Literal["split", "seed", "hi-vtg", "charades-sta", "activitynet-captions", "qvhighlights"] = Field(
        description="'split': the held-out videos (riq.test_fraction) of the train RIQ's own source (the synthetic default); otherwise the importer of a released test file, imported as released (no generated refusals): hi-vtg for the RA-RFT HI-VTG/SS-VTG/human-annotated files, charades-sta / activitynet-captions for plain grounding (Charades-STA test, ActivityNet val_2).",
    )
    file: str = Field("", description="File name inside the imports folders (empty for 'split').")
    max_videos: int = Field(0, ge=0, description="Evaluate at most this many of the set's videos that have frames (a seeded sample; the others' queries are quarantined as 'not_in_subset'); 0 = all.")
    required: bool = Field(True, description="false: a missing file is not an error; the set is written empty (its evaluate@ stage reports 0 items) and the stats say it was absent. For released files that may not exist yet (HI-VTG / SS-VTG ActivityNet).")
    leakage: Literal["error", "exclude_from_train", "allow"] = Field(
        "error",
        description="What the leakage guard does when some of this set's videos are in the train RIQ: 'error' (build_riq fails, naming the set, the count and the first ids), 'exclude_from_train' (those videos' train records go to the quarantine; the count is a metric; the protocol profiles set it for the human-annotated set, 15 of whose 100 videos are Charades-STA train videos) or 'allow' (kept, and recorded in the set's metrics file).",
    )

    @field_validator("file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _plain_file_name(v)

    @model_validator(mode="after")
    def _file_for_imports(self):
        if (self.format == "split") != (not self.file):
            raise ValueError("file: required for an imported set, and empty for format 'split'")
        return self


class RiqParams(Section):
    source: Literal["synthetic", "seed", "hi-vtg", "charades-sta", "activitynet-captions", "qvhighlights", "sets"] = Field(
        "synthetic", description="Where the train queries come from: 'synthetic' (generated from the event logs), an imported annotation format (pipeline.riq.importers; 'seed' = the seed README's RIQ records) read from riq.import_file, or 'sets': every file of riq.train_sets (the paper's protocol: train RIQ from the train splits of grounding datasets)."
    )
    train_sets: dict[str, TrainSetParams] = Field(
        default_factory=dict,
        description="riq.source 'sets': name -> train annotation file. Each is imported, given hard-irrelevant (generators.perturb, .llm) and shuffled (generators.shuffle, donors from the same set) refusals, and joined into data/riq/train.jsonl; none may be an evaluation file.",
    )
    eval_sets: dict[str, EvalSetParams] = Field(
        default_factory=lambda: {"synthetic": EvalSetParams(format="split")},
        description="Evaluation sets, name -> set: build_riq writes data/riq/eval/<name>.jsonl for each and dvc.yaml runs one evaluate@<name> stage per set (metrics in reports/metrics/<name>.json). Names: letters, digits, '_' and '-'.",
    )
    import_file: str = Field("", description="File name inside the imports folder (build_riq --imports, data/import/) read when riq.source is not 'synthetic'.")
    generators: dict[str, float] = Field(
        default_factory=lambda: {"perturb": 1.0, "shuffle": 0.5},
        description="Refusable queries generated per imported answerable query that has none of its own, by generator (perturb, shuffle, llm); a fraction is drawn per query (seeded).",
    )
    perturb_difficulty: dict[str, float] = Field(
        default_factory=lambda: {"hard": 0.5, "medium": 0.3, "easy": 0.2},
        description="Proportions of perturb queries with 1 (hard), 2 (medium) and 3 (easy) edited words.",
    )
    max_similarity: float = Field(0.9, gt=0, le=1, description="SBERT similarity ((cos+1)/2) to a caption of the video at or above which a generated refusable query counts as (nearly) answerable and is rejected.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of videos held out for the test split (split is by video).")
    hard_per_event: int = Field(1, ge=0, description="Hard-irrelevant queries (1 edit from a true query) generated per event.")
    medium_per_event: int = Field(1, ge=0, description="Medium queries (2 edits) generated per event.")
    easy_per_event: int = Field(0, ge=0, description="Easy queries (3 edits) generated per event.")
    shuffled_per_video: int = Field(1, ge=0, description="Simply-shuffled refusable queries (a query from another video) per video.")
    train_shuffled_per_video: int | None = Field(3, ge=0, description="Synthetic source: shuffled queries per train video, when the train split should have more of them than the evaluation split (null: shuffled_per_video). 3: the warm start and GRPO get 576 queries that only the video refutes instead of 192. They are drawn after the evaluation split's count from the same per-video generator, so the first ones, the ids and the evaluation split stay as they were. More of them give the warm start and GRPO more queries that only the video refutes.")
    max_redraws: int = Field(20, ge=1, description="Candidates drawn per refusable query before giving up (a candidate that matches some event of the video is rejected and redrawn).")
    edits: list[Literal["colour", "size", "shape", "action", "direction", "order", "count"]] = Field(
        default_factory=lambda: ["colour", "size", "shape", "action", "direction", "order"],
        description="Facts a synthetic hard-irrelevant query may edit. 'count' is off by default: the shapes world never shows two objects alike, so every stated count above one is false and the words 'two'/'three' alone would give the label away (docs/RIQ.md).",
    )
    audit: bool = Field(True, description="Write the blind query-only baseline of the train/test split (pipeline.riq.audit: balanced accuracy per kind, difficulty, category, and the cue n-grams) into the stats file, a DVC metric.")
    order_clause_rate: float = Field(
        0.3, ge=0, le=1,
        description="Share of synthetic queries, answerable and refusable alike, that carry an order clause ('after the blue bar appears, ...') when their event has another one wholly before or after it; true in answerable queries, false only where 'order' is the edit, so the clause's words say nothing about the label.",
    )
    seed: int = Field(0, description="Seed for query generation and the train/test split.")

    @field_validator("import_file")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _plain_file_name(v)

    @field_validator("train_sets", "eval_sets")
    @classmethod
    def _set_names(cls, v: dict) -> dict:
        bad = [k for k in v if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", k)]
        if bad:
            raise ValueError(f"set name {bad[0]!r}: letters, digits, '_' and '-' only (it names a DVC stage and files)")
        return v

    @field_validator("eval_sets")
    @classmethod
    def _one_split(cls, v: dict) -> dict:
        if sum(s.format == "split" for s in v.values()) > 1:
            raise ValueError("at most one set may have format 'split' (the held-out videos of the train RIQ)")
        return v

    @model_validator(mode="after")
    def _sets_source(self):
        if (self.source == "sets") != bool(self.train_sets):
            raise ValueError("riq.train_sets: must be non-empty exactly when riq.source is 'sets'")
        return self

    @field_validator("generators")
    @classmethod
    def _known_generators(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - {"perturb", "shuffle", "llm"})
        if unknown:
            raise ValueError(f"unknown generator(s) {unknown}; known: perturb, shuffle, llm")
        if any(x < 0 for x in v.values()):
            raise ValueError("counts must be >= 0")
        return v

    @field_validator("perturb_difficulty")
    @classmethod
    def _difficulties(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) - {"hard", "medium", "easy"} or any(x < 0 for x in v.values()) or not sum(v.values()) > 0:
            raise ValueError("keys must be hard/medium/easy with non-negative weights, not all zero")
        return v


# --------------------------------------------------------------------------- model
class TinyModelParams(Section):
    hidden_size: int = Field(128, ge=8, description="Text hidden size of the tiny Qwen2.5-VL (also the vision merger output).")
    num_hidden_layers: int = Field(2, ge=1, description="Text decoder layers.")
    num_attention_heads: int = Field(4, ge=1, description="Text attention heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Text key/value heads (grouped-query attention).")
    intermediate_size: int = Field(256, ge=8, description="Text MLP width.")
    vision_depth: int = Field(2, ge=1, description="Vision transformer blocks.")
    vision_hidden_size: int = Field(64, ge=8, description="Vision tower width. 64: at 32 the tower told the colours of held-out videos apart with AUC 0.82 and the decoder's look with 0.73; at 64 (with 800 pretraining steps) 0.996 and 0.98 (docs/MODEL.md).")
    vision_num_heads: int = Field(4, ge=1, description="Vision attention heads (head size 16).")
    vocab_size: int = Field(1024, ge=300, description="Size of the byte-level BPE vocabulary trained on the RIQ text (before special tokens).")
    tie_word_embeddings: bool = Field(False, description="Share the input word embeddings with the output head (Qwen2.5-VL-3B does; the 7B does not). Untied (the default), the vision pretraining's alignment of video tokens with the input embeddings can be kept fixed (model.warm_start.freeze_embeddings) while the output head learns.")
    seed: int = Field(0, description="Seed of weight initialisation and the warm start.")


class VisionPretrainParams(Section):
    """Word-supervised pretraining of the tiny vision tower (pipeline.model.vision_pretrain): the
    stand-in for the image-text pretraining a hub model's tower already has."""

    steps: int = Field(800, ge=0, description="Vision pretraining steps before the warm start (tiny source only); 0 = none (the tower stays random and the decoder learns to ignore it, see docs/MODEL.md). 800 with the 64-wide tower: at 400 the look's AUC on held-out train videos was 0.94 against 0.98 (docs/MODEL.md).")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the vision tower and the word embeddings it is read through.")
    batch_size: int = Field(8, ge=1, description="Videos per step.")
    every_token: bool = Field(True, description="Also make every video token of a time step predict all of that step's words (not only the best token): the decoder then finds what the video shows wherever it looks, instead of having to find the one token that shows it.")
    located: bool = Field(False, description="With the synthetic event logs, each video token's targets are the words of the objects whose pixels it covers (found by their palette colour, unique within a video) instead of all the words of its time step: a token then says what is where, so the decoder can read an object's shape and size at the tokens of its colour. Off by default: on 24 held-out train videos the shape read at the colour's best token rose 0.31 -> 0.67 (3 shapes), but the decoder's colour look fell 0.98 -> 0.70-0.78 AUC (docs/MODEL.md).")
    colour_everywhere: bool = Field(False, description="With `located`: tokens that cover no object name the colours in view at their time step (an object's own tokens keep only its words). The decoder then finds the colours wherever it looks, as with every_token, and the shape and size stay bound to the colour's own tokens. Measured with `located` and `shift` 13: colour look AUC 0.93, but the look's shape and size checks 0.64 / 0.45 (docs/MODEL.md).")
    shift: int = Field(0, ge=0, description="With `located`: translate each drawn video by up to this many pixels (never moving an object out of the frame), so an object falls on other places of the patch grid and the tower learns its shape rather than the pixels of 168 videos. 0 = none. 13 with `located`: shape read at the colour's token 0.67 -> 0.72, size 0.83 -> 0.81, tower shape AUC 0.81 -> 0.86; each drawn video is then processed again.")
    whole_object: bool = Field(False, description="With `located`: an object's shape and size words go only to the token that covers most of its pixels at each time step (its colour and action words stay on every token it covers), so a token that shows a sliver of a square is not asked to call it a square. Off: tower-only on 24 held-out train videos (58 objects, with all_log_words and shift 13) the shape read at the colour's token went 0.74 -> 0.78, at the object's largest token 0.74 -> 0.76, within the +-0.06 noise; squares stayed at 0.55-0.60 (scripts/tower_probe.py, docs/MODEL.md).")
    recolour_objects: bool = Field(False, description="With `located`: each time a video is drawn its objects are painted in other palette colours (anti-aliased edges included), with the colour words to match, so each shape is seen in every colour rather than in the one or two of its few train objects. Off: tower-only on 24 held-out train videos (58 objects, with all_log_words and shift 13) the shape read stayed at 0.71-0.74 (0.74 before), the size read at the object's largest token 0.91 -> 0.95; the vision pretraining takes about 1.5x longer (scripts/tower_probe.py, docs/MODEL.md).")
    clip_frames: int = Field(0, ge=0, multiple_of=2, description="With `located`: each drawn video is cut to a random clip of this many frames (a multiple of the temporal patch, 2); 0 = the whole video. Frames of one video show the same few objects, so a clip teaches the tower nearly what the whole video does for less: with all_log_words and shift 13, 8-frame clips (the default world's videos have 16-60) took 2,400 steps in 220 s against 633 s, one thread, and read the shapes and sizes of the 126 test objects as well (shape 0.71-0.77 against 0.71-0.76, size 0.78-0.79 against 0.79-0.82; scripts/tower_probe.py --look, docs/MODEL.md). Off: nothing in the default reads the located tower.")
    all_log_words: bool = Field(False, description="With the synthetic event logs, train on every word of the logs (colours, shapes, sizes, actions), not only those that pass max_video_share: shape and size words occur in most videos, so the share filter drops them and the tower never learns to see shape or size (tower AUC on 24 held-out train videos: shape 0.67, size 0.81 with them; 0.46 / 0.38 without). Off by default: with the every_token targets the shape is not bound to the colour (read at the colour's token: 0.31 of 3 shapes), so nothing downstream uses it yet.")
    max_video_share: float = Field(0.5, gt=0, le=1, description="Target words are those found in the answerable queries of at most this share of train videos: words in most videos ('the', 'moment') say nothing visual.")


class TextPretrainParams(Section):
    """Text-only copy-and-compare pretraining of the tiny decoder (pipeline.model.text_pretrain), for the 'verify' think."""

    epochs: float = Field(0.0, ge=0, description="Epochs over two text-only examples per train record (restate the query, decide whether two phrases agree); 0 = none. 10 epochs taught the copy and the comparison (held-out restatements 24 -> 66 of 77) but not a better base, at ~5 min more: off by default, see docs/MODEL.md.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak learning rate (cosine decay); the word embeddings stay fixed so the vision pretraining's alignment holds.")
    batch_size: int = Field(32, ge=1, description="Examples per step (text only, so larger than the warm start's).")


class WarmStartParams(Section):
    epochs: float = Field(5.0, ge=0, description="Supervised warm-start epochs over the warm-start set (tiny source only); 0 = none, the model stays random. 5 over the 1,104-record look set (690 steps; the 8 epochs of the earlier 736-record set were 736 steps): at 2-3 epochs of the old set the tiny decoder had not yet learnt to copy the query, see docs/MODEL.md.")
    think: Literal["verify", "look", "quote"] = Field("look", description="Warm-start think. 'verify': restate the asked event, name the nearest event the video shows, decide on whether they agree (records whose explanations state both events; others fall back to 'quote'). 'look': as 'verify', with a check of the video first: whether an object of the query's colour is in view ('In view: red yes.'), from the synthetic event logs (other records fall back to 'verify'). 'quote': quote the query and decide right after it. See docs/MODEL.md for what each taught.")
    freeze_vision: bool = Field(True, description="Keep the vision tower fixed during the warm start, so the language-model loss does not undo the vision pretraining while the decoder learns to read it.")
    look_attributes: list[Literal["color", "shape", "size"]] = Field(
        default_factory=lambda: ["color"],
        description="What the look think checks, in order, each with its own yes/no ('In view: red yes, tall bar no.'); the think stops at the first no, which settles the refusal. 'color': whether an object of the query's colour is in view; 'shape' / 'size': whether that object (colours are unique within a synthetic video) has the asked shape / size. The tiny 2-layer decoder did not learn the shape and size checks (teacher-forced AUC 0.42-0.64 and 0.45-0.52 on held-out train videos, with every tower tried; docs/MODEL.md), so the default checks colour only.")
    look_names: bool = Field(False, description="With 'shape' or 'size' in look_attributes: the look names the shape and size the video shows for the asked colour's object ('In view: red yes, wide bar.') instead of a yes/no for the asked one, and the think stops at the first named word that differs from the asked one. A yes/no asks the decoder to find the colour's tokens, read their shape and compare it with the query's in one token; naming leaves the comparison to the text that follows. The named words get look_weight. Off by default: the 2-layer decoder names the query's words, not the video's (on held-out pairs that ask another shape than the video's it named the video's 0.02 of the time), and its colour look said yes to every video (docs/MODEL.md).")
    look_weight: float = Field(20.0, gt=0, description="Loss weight of the look think's yes/no token (every other completion token weighs 1): it is the one token the video alone decides, and at weight 1 it is ~1 of 70 loss tokens, too little for the tiny decoder to learn it (docs/MODEL.md).")
    freeze_embeddings: bool = Field(True, description="Keep the input word embeddings fixed during the warm start: the vision pretraining aligned video tokens with them, and the language-model loss moves them away (tied to the output head, the colour probe fell from 0.985 to 0.72 AUC; docs/MODEL.md). With tied embeddings this freezes the output head too, and the warm start barely learns (loss 2.4 against 0.3).")
    learning_rate: float = Field(2e-3, gt=0, description="Warm-start peak learning rate (cosine decay).")
    batch_size: int = Field(8, ge=1, description="Warm-start batch size.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of warm-start steps spent warming the learning rate up.")
    answerable_fraction: float = Field(0.5, gt=0, lt=1, description="Share of answerable records in the warm-start set (the larger class is subsampled). 0.5 with riq.train_shuffled_per_video 3: every answerable train record and as many shuffled refusals (0.75 kept the 25% there were with one per video); with hard-irrelevant refusals taught too, 0.5 (on the raw 28%-answerable mix the model learns the majority decision and always refuses).")
    refusable_kinds: list[Literal["hard_irrelevant", "shuffled"]] = Field(
        default_factory=lambda: ["shuffled"],
        description="Which refusable records the warm start teaches. ['shuffled'] (default): a base like the VTG models RA-RFT starts from, which ground queries and refuse only queries taken from another video; refusing hard-irrelevant queries is what GRPO has to teach. ['hard_irrelevant', 'shuffled']: supervised on the whole task, a stronger tiny model that GRPO does not improve (docs/MODEL.md).",
    )
    logging_steps: int = Field(20, ge=1, description="Log the warm-start loss every N steps.")
    holdout_videos: int = Field(8, ge=0, description="Train videos kept out of the warm start to measure it (their records are not trained on).")
    eval_records: int = Field(32, ge=0, description="Held-out records greedily decoded after the warm start (format rate, answer/refuse accuracy in models/base/make_model.json); 0 = skip.")
    max_new_tokens: int = Field(128, ge=8, description="Most new tokens per held-out greedy completion (the longest reference completion of the tiny tokenizer is ~110).")


class ModelParams(Section):
    source: Literal["tiny", "hub"] = Field("tiny", description="'tiny': build a small Qwen2.5-VL locally (offline default); 'hub': snapshot a Hugging Face repo or local path.")
    hub_id: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="Hugging Face repo id or local directory used when source is 'hub'.")
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch) to pin when source is 'hub'.")
    attn_implementation: str = Field("sdpa", description="Attention kernel: 'sdpa' (default) or 'flash_attention_2' when flash-attn is installed.")
    tiny: TinyModelParams = Field(default_factory=TinyModelParams, description="Architecture of the tiny model.")
    vision_pretrain: VisionPretrainParams = Field(default_factory=VisionPretrainParams, description="Vision pretraining of the tiny model.")
    text_pretrain: TextPretrainParams = Field(default_factory=TextPretrainParams, description="Text-only pretraining of the tiny decoder.")
    warm_start: WarmStartParams = Field(default_factory=WarmStartParams, description="Supervised warm start of the tiny model.")


# --------------------------------------------------------------------------- train
class LaunchParams(Section):
    """How the train stage starts (pipeline.train.launch). Per-machine values (machine rank, main
    process address and port) come from RARFT_MACHINE_RANK, RARFT_MAIN_PROCESS_IP and
    RARFT_MAIN_PROCESS_PORT, so every node of a multi-node run shares one params.yaml."""

    num_processes: int = Field(1, ge=1, description="Training processes over all machines (one per GPU). More than 1, or deepspeed other than 'none', makes `python -m stages.train` re-run itself under `accelerate launch`.")
    num_machines: int = Field(1, ge=1, description="Machines (nodes) of the run; num_processes must be a multiple of it.")
    deepspeed: Literal["none", "zero3", "zero3_offload"] = Field("none", description="DeepSpeed config: 'zero3' (configs/deepspeed/zero3.json: parameters, gradients and optimizer states sharded over GPUs) or 'zero3_offload' (zero3_offload.json: also moves optimizer states and parameters to CPU RAM); 'none' = plain DDP or one process.")


class TrainParams(Section):
    """GRPO (RA-RFT) settings. Defaults are the CPU profile for the tiny model; the 7B values of the
    seed README are in configs/profiles/gpu8.yaml, those of the official script in
    gpu8-official.yaml (docs/TRAINING.md, Profiles; each shrunk value says why below)."""

    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"format": 1.0, "refuse_iou": 1.0, "explain": 1.0, "correction": 1.0},
        description="Reward name -> weight; names must be in the reward registry (pipeline.train.rewards.REWARDS); rewards not named are not computed.",
    )
    learning_rate: float = Field(1e-4, gt=0, description="GRPO learning rate (paper/GPU: 5e-7 for the 7B model; CPU: at 2e-5 with 2 prompts per step the tiny policy barely moves in 100 steps (KL 0.003), at 1e-4 with 8 prompts per step it keeps its format (0.99) and moves (KL 0.06), see docs/MODEL.md).")
    lr_scheduler_type: str = Field("constant", description="Learning-rate schedule (transformers SchedulerType: 'constant', 'linear', 'cosine', ...).")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps of the learning rate.")
    beta: float = Field(0.05, ge=0, description="KL coefficient against the reference model (paper: 0.05); 0 drops the reference model.")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (GRPO group size; paper: 4).")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature for rollouts (paper/GPU: 1.0; CPU: at 1.0 only ~25% of the tiny model's rollouts are well-formed against ~98% greedy, so groups carry little signal).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling for rollouts (1.0 = off).")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs over the training mix (paper: 1).")
    max_steps: int = Field(150, description="Stop after this many optimizer steps; -1 = run the epochs (paper/GPU: -1; CPU: 150 steps of 32 rollouts, ~5.5 min on 2 cores, are about one pass over the 1,170-row balanced mix).")
    per_device_train_batch_size: int = Field(32, ge=1, description="Completions per device per step; world size x this must be a multiple of num_generations (GPU: 1 per GPU x 8 GPUs = 2 prompts; CPU: 32 = 8 prompts: a 2-prompt step is too noisy for the larger CPU learning rate, and batched generation makes 4x the rollouts cost ~2.5x the time).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Gradient accumulation steps (also TRL's steps per generation).")
    max_completion_length: int = Field(128, ge=8, description="Most new tokens per rollout (CPU: 128 covers the longest reference completion of the tiny tokenizer, ~110 tokens; GPU: 512 for 7B reasoning).")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field("grpo", description="TRL loss type; set explicitly because TRL's default changed (1.16: 'dapo'). 'grpo': each completion's token mean, then the mean over completions; 'bnpo': the token mean over all completions of a device (the official RA-RFT script's loss, configs/profiles/gpu8-official.yaml).")
    use_bias_correction_kl: bool = Field(True, description="TRL's use_bias_correction_kl: multiply the KL term by the importance-sampling ratio (the unbiased reverse-KL gradient of DeepSeek-V3.2), which changes the KL gradient whenever beta > 0. Set explicitly because TRL added it (1.16 default: True). Default True keeps today's runs identical to TRL 1.16's default; false gives the KL gradient of TRL releases before the option (the official RA-RFT script's trainer predates it, configs/profiles/gpu8-official.yaml).")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="TRL reward scaling of advantages: 'group' (GRPO), 'batch' or 'none'.")
    bf16: bool = Field(False, description="bfloat16 training (GPU profile: true); false on CPU, where bf16 autocast is slow.")
    answerable_fraction: float = Field(0.5, ge=0, le=1, description="Share of answerable rows in the training mix (the rest are refusable pools; the smaller side is repeated).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory in the policy forward (GPU profile: true).")
    frames_cache_size: int = Field(64, ge=1, description="Frames files kept in memory per process (LRU).")
    logging_steps: int = Field(1, ge=1, description="Log every N steps to DVCLive.")
    seed: int = Field(0, description="Seed of data order, pool draws and sampling.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Processes, machines and DeepSpeed of the run (docs/TRAINING.md).")
    freeze_vision_tower: bool = Field(True, description="Train only the language model and the vision merger; the vision transformer blocks stay frozen (GPU profile: true, as in RA-RFT / Video-R1).")
    freeze_vision_merger: bool = Field(True, description="Keep the vision merger (the layer that makes the video tokens) fixed as well. With freeze_vision_tower and freeze_input_embeddings it keeps the whole path by which the tiny model sees: its tower was pretrained to put video tokens near the input embeddings of what they show, and GRPO at the CPU learning rate wore that down (docs/MODEL.md).")
    freeze_input_embeddings: bool = Field(True, description="Keep the input word embeddings fixed (with tied embeddings, the output head too).")
    checkpoint_steps: int = Field(50, ge=0, description="Save a resumable checkpoint every N optimizer steps into the scratch folder (stage argument --checkpoints; not a DVC output); a rerun resumes from the newest complete one. 0 = none.")
    checkpoint_keep: int = Field(2, ge=1, description="Checkpoints kept per run (older ones are deleted); all are deleted when the run completes.")
    gpu_memory_gib: float = Field(0.0, ge=0, description="Memory per GPU for the fit check made before loading the model; 0 = read it from the first CUDA device (no check on CPU).")
    use_vllm: bool = Field(False, description="Generate rollouts with vLLM (TRL colocate mode) when vLLM is installed; HF generate otherwise (a warning says so).")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description="Share of each GPU's memory vLLM reserves for its weights and KV cache in colocate mode (the rest is for training).")


# --------------------------------------------------------------------------- evaluate
class ControlsParams(Section):
    blind: bool = Field(True, description="Also run every model on a constant grey video of the same length, size and fps as each record's video (same video token count, no information); adds control.blind (the whole metric block) and visual_gain.relevance.{accuracy,f1_macro,balanced_accuracy} (true - blind) per model.")
    swapped: bool = Field(True, description="Also run every model on each answerable record with its video replaced by another test video whose queries do not include it (seeded derangement over videos; on synthetic data also checked against the event log); the right output is a refusal. Adds control.swapped.{refusal_rate,n} per model.")
    seed: int = Field(0, description="Seed of the swapped control's derangement of videos (donor video per record).")


class EvaluateParams(Section):
    max_new_tokens: int = Field(128, ge=8, description="Most new tokens per greedy prediction (CPU: 128 covers the longest reference completion of the tiny tokenizer).")
    batch_size: int = Field(16, ge=1, description="Prompts per generate call (queries of one video are batched together).")
    max_items: int = Field(0, ge=0, description="Evaluate at most this many test items (the first ones in the file); 0 = all.")
    torch_threads: int = Field(1, ge=0, description="CPU threads torch may use while generating; 0 = torch's default (all cores). The tiny model's matrices are too small to gain from threads: 1 thread ran ~6x faster than 2 on a busy 2-core machine.")
    iou_thresholds: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7], description="IoU thresholds for R@k metrics.")
    threshold_op: Literal[">=", ">"] = Field(">=", description="How R@k compares an IoU with k: '>=' (IoU of exactly k counts; the usual R1@k) or '>'. Recorded in metrics.json under conventions.threshold_op.")
    protocol: Literal["rarft", "official"] = Field("rarft", description="'rarft': the rule-based metrics only (the default; its block is the same either way). 'official': also an 'official' block per model following the official evaluator where it differs (first <answer> after removing <think>, R@k in percent, explanation similarity on all-mpnet-base-v2 from $RARFT_MPNET_PATH or skipped with the reason); docs/METRICS.md, 'Official protocol'.")
    judge: bool = Field(False, description="Also score completions with an LLM judge (OpenAI-compatible endpoint from RARFT_JUDGE_BASE_URL / RARFT_JUDGE_MODEL / RARFT_JUDGE_API_KEY; never from params). Adds a 'judge' block per model.")
    judge_workers: int = Field(4, ge=1, description="Concurrent judge requests.")
    judge_retries: int = Field(2, ge=0, description="Extra attempts per judge request after a timeout, HTTP or connection error (replies that do not parse are not retried; they count as failures).")
    controls: ControlsParams = Field(default_factory=ControlsParams, description="Video controls run for each model on the same records (each about 1x the evaluation's generation time): blind (grey frames) and swapped (another video); see docs/EVALUATION.md.")


class Params(Section):
    download: DownloadParams = Field(default_factory=DownloadParams, description="Stage download.")
    frames: FramesParams = Field(default_factory=FramesParams, description="Stage extract_frames.")
    riq: RiqParams = Field(default_factory=RiqParams, description="Stage build_riq.")
    model: ModelParams = Field(default_factory=ModelParams, description="Stage make_model.")
    train: TrainParams = Field(default_factory=TrainParams, description="Stage train.")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams, description="Stage evaluate.")
    profile: str = Field("cpu", description="Profile last applied with `rarft profile NAME` (configs/profiles/NAME.yaml over the defaults); a label for `dvc exp show`: the values that run are the ones in this file.")


def _first_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "<root>"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return f"{source}: {key}: {err['msg']}{shown}{more}"


def parse_params(data: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as exc:
        raise InputError(_first_error(exc, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path), str(path))
