"""Writing the suite: splits, videos (H.264 mp4) and annotation files, deterministic from the seed.

Splits: train (actions in their usual scene with probability usual_bias, a share of
scene-only videos), and the UNSCENE-style test splits usual, unusual (an action in
another scene) and scene_only (no actor). Each video draws from its own RNG seeded by
(seed, index), so the files are the same whether written by one process or several.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zoo.data.action_scene.calibration import CROSSING, CROSSING_SPAN, calibration_conversation, calibration_entries
from zoo.data.action_scene.questions import (
    Clip, binary_entries, choice_entry, grounding_entries, open_entry, training_conversation,
)
from zoo.data.action_scene.render import render
from zoo.data.action_scene.vocabulary import ACTIONS, SCENES, judge_vocabulary
from zoo.data.writer import write_video

TEST_SPLITS = ("usual", "unusual", "scene_only")
CALIBRATION_SPLITS = ("calibration_train", "calibration_test")
# Bumped whenever drawing or annotations change: a suite on disk of another version is refused,
# never silently reused (2: actors large enough for a 32 x 32 encoder input). Not bumped for the calibration
# clips: they leave the suite's own files as they were (tested), and a suite records how many it holds
# (data.synthetic.calibration_videos), so one drawn without them is refused where they are asked for.
GENERATOR_VERSION = 3  # 3: the calibration files


@dataclass
class SuiteOptions:
    train_share: float = 0.6
    usual_bias: float = 0.9  # share of train videos with an actor whose scene is the action's usual one
    train_scene_only_share: float = 0.05
    height: int = 96
    width: int = 96
    fps: int = 8
    seconds: float = 3.0
    # The actor's time on screen as a share of the clip, drawn uniformly in this range; short
    # spans make temporal grounding a real localisation task (a constant guess scores low).
    span_range: tuple[float, float] = (0.25, 1.0)
    workers: int = 1

    def __post_init__(self):
        for name in ("train_share", "usual_bias", "train_scene_only_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"SuiteOptions.{name} must be in [0, 1], got {value}")
        low, high = self.span_range
        if not 0 < low <= high <= 1:
            raise ValueError(f"SuiteOptions.span_range must satisfy 0 < low <= high <= 1, got {self.span_range}")
        if self.height < 16 or self.width < 16 or self.height % 2 or self.width % 2:
            raise ValueError(f"SuiteOptions height and width must be even numbers of at least 16 pixels (H.264, and room "
                             f"for the actor), got {self.width}x{self.height}")
        for name, low in (("fps", 1), ("seconds", 0.25), ("workers", 1)):
            if not getattr(self, name) >= low:
                raise ValueError(f"SuiteOptions.{name} must be at least {low}, got {getattr(self, name)}")

    @property
    def frames(self) -> int:
        return max(2, round(self.fps * self.seconds))


@dataclass
class Plan:
    index: int
    split: str
    scene: str
    action: str | None
    stream: int = 1  # the video's random stream is (seed, stream, index): calibration clips draw from their own
    span_range: tuple[float, float] | None = None  # the actor's time on screen (None: SuiteOptions.span_range)
    span_at: str | None = None  # "start" or "end": the span begins or ends the clip (None: drawn anywhere)


def plan_videos(count: int, seed: int, options: SuiteOptions) -> list[Plan]:
    """Which split, scene and action each video gets."""
    rng = np.random.default_rng([seed, 0])
    actions = list(ACTIONS)
    scenes = list(SCENES)
    train = round(count * options.train_share)
    test = count - train
    splits = ["train"] * train + [TEST_SPLITS[i % 3] for i in range(test)]
    plans = []
    for index, split in enumerate(splits):
        if split == "scene_only" or (split == "train" and rng.random() < options.train_scene_only_share):
            plans.append(Plan(index, split, str(rng.choice(scenes)), None))
            continue
        action = str(rng.choice(actions))
        usual = ACTIONS[action]["usual_scene"]
        unusual = split == "unusual" or (split == "train" and rng.random() >= options.usual_bias)
        scene = str(rng.choice([s for s in scenes if s != usual])) if unusual else usual
        plans.append(Plan(index, split, scene, action))
    return plans


def plan_calibration_videos(count: int, seed: int, options: SuiteOptions) -> list[Plan]:
    """Clips made for the calibration families (zoo.data.action_scene.calibration): half with no one in any
    scene, half an actor crossing most of the frame in the first or the last part of the clip, split into train
    and test by ``options.train_share``."""
    rng = np.random.default_rng([seed, 4])
    train = round(count * options.train_share)
    plans = []
    for index in range(count):
        action = None if rng.random() < 0.5 else str(rng.choice(CROSSING))
        plans.append(Plan(index, CALIBRATION_SPLITS[index >= train], str(rng.choice(list(SCENES))), action,
                          stream=4, span_range=CROSSING_SPAN if action else None,
                          span_at=str(rng.choice(["start", "end"])) if action else None))
    return plans


def make_clip(plan: Plan, seed: int, options: SuiteOptions, out: Path) -> Clip:
    """Render and write one video; returns what its questions need."""
    rng = np.random.default_rng([seed, plan.stream, plan.index])
    frames = options.frames
    span = None
    if plan.action is not None:
        low, high = plan.span_range or options.span_range
        shortest = max(2, round(low * frames))
        length = int(rng.integers(shortest, max(shortest, round(high * frames)) + 1))
        first = int(rng.integers(0, frames - length + 1))  # drawn even where span_at fixes it: the same stream
        first = {"start": 0, "end": frames - length}.get(plan.span_at, first)
        last = first + length
        span = (first, last)
    video, boxes = render(plan.scene, plan.action, rng, frames, options.height, options.width, options.seconds, span)
    relative = f"videos/{plan.split}/{plan.index:05d}.mp4"
    write_video(out / relative, video, fps=options.fps)
    timed = [((t + 0.5) / frames, box) for t, box in enumerate(boxes) if box is not None]
    normalised_span = (span[0] / frames, span[1] / frames) if span else None
    meta = {"action": plan.action, "scene": plan.scene, "frames": frames, "fps": options.fps,
            "duration": frames / options.fps, "start": normalised_span[0] if span else None,
            "end": normalised_span[1] if span else None}
    return Clip(f"{plan.split}{plan.index:05d}", relative, plan.split, plan.scene, plan.action, normalised_span,
                [(round(t, 4), tuple(round(v, 4) for v in box)) for t, box in timed], meta)


def _make_clip_job(arguments) -> Clip:
    return make_clip(*arguments)


def generate_suite(out: str | Path, seed: int = 0, videos: int = 120, options: SuiteOptions | None = None,
                   progress=None, calibration_videos: int = 0) -> dict:
    """Write ``videos`` videos and the annotation files under ``out``, and ``calibration_videos`` clips with
    the calibration files (none: no calibration files); returns the manifest."""
    options = options or SuiteOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_videos(videos, seed, options) + plan_calibration_videos(calibration_videos, seed, options)
    jobs = [(plan, seed, options, out) for plan in plans]
    if options.workers > 1:
        with ProcessPoolExecutor(options.workers) as pool:
            clips = list(pool.map(_make_clip_job, jobs, chunksize=8))
    else:
        clips = []
        for job in jobs:
            clips.append(make_clip(*job))
            if progress is not None:
                progress(len(clips), len(jobs))
    calibration = [c for c in clips if c.split in CALIBRATION_SPLITS]
    clips = clips[:len(clips) - len(calibration)]
    files = write_annotations(clips, seed, out, calibration)
    train = [c for c in clips if c.split == "train"]
    with_actor = [c for c in train if c.action is not None]
    manifest = {
        "name": "synthetic action-scene suite",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "videos": videos,
        "calibration_videos": calibration_videos,
        "options": asdict(options),
        "vocabulary": judge_vocabulary(),
        "usual_scene": {action: spec["usual_scene"] for action, spec in ACTIONS.items()},
        "phrases": {action: spec["phrase"] for action, spec in ACTIONS.items()},
        "splits": {split: sum(1 for c in clips + calibration if c.split == split)
                   for split in ("train", *TEST_SPLITS, *(CALIBRATION_SPLITS if calibration else ()))},
        "train_usual_share": (sum(1 for c in with_actor if ACTIONS[c.action]["usual_scene"] == c.scene) / len(with_actor)
                              if with_actor else None),
        "train_scene_only": sum(1 for c in train if c.action is None),
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def write_annotations(clips: list[Clip], seed: int, out: Path, calibration: list[Clip] = ()) -> dict[str, int]:
    rng = np.random.default_rng([seed, 2])  # question wording and distractors, in video order
    files: dict[str, list[dict]] = {name: [] for name in (
        "train.json", "train_grounding.json", "test_binary.json", "test_open.json", "test_mc.json", "test_grounding.json")}
    for clip in clips:
        if clip.split == "train":
            files["train.json"].append(training_conversation(clip, rng))
            files["train_grounding.json"] += grounding_entries(clip, rng)
            continue
        files["test_binary.json"] += binary_entries(clip, rng)
        files["test_open.json"].append(open_entry(clip))
        files["test_mc.json"].append(choice_entry(clip, rng, "scene"))
        if clip.action is not None:
            files["test_mc.json"].append(choice_entry(clip, rng, "action"))
        files["test_grounding.json"] += grounding_entries(clip, rng)
    if calibration:
        files.update(calibration_files(calibration, seed))
    for name, entries in files.items():
        (out / name).write_text(json.dumps(entries, indent=1, sort_keys=True))
    return {name: len(entries) for name, entries in files.items()}


def calibration_files(clips: list[Clip], seed: int) -> dict[str, list[dict]]:
    """The calibration families (zoo.data.action_scene.calibration), from a random stream of their own."""
    rng = np.random.default_rng([seed, 3])
    files: dict[str, list[dict]] = {"train_calibration.json": [], "test_calibration.json": []}
    for clip in clips:
        if clip.split == CALIBRATION_SPLITS[0]:
            files["train_calibration.json"].append(calibration_conversation(clip, rng))
        else:
            files["test_calibration.json"] += calibration_entries(clip, rng)
    files["test_calibration.json"] = balanced(files["test_calibration.json"])
    return files


def balanced(entries: list[dict]) -> list[dict]:
    """Per family, as many questions of each answer (the first of each, in video order): answering one option
    always, or the training prior ("yes, someone is there"), then scores chance, not the answers' imbalance."""
    counts: dict[tuple, int] = {}
    for entry in entries:
        counts[(entry["task_type"], entry["answer"])] = counts.get((entry["task_type"], entry["answer"]), 0) + 1
    each = {family: min(n for (f, _), n in counts.items() if f == family) for family, _ in counts}
    kept, taken = [], {}
    for entry in entries:
        key = (entry["task_type"], entry["answer"])
        if taken.get(key, 0) < each[entry["task_type"]]:
            taken[key] = taken.get(key, 0) + 1
            kept.append(entry)
    return kept
