"""The synthetic action-scene suite: real videos both readers open, schema-valid annotations, the configured bias."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.config import RecipeError

from tests.helpers import REPO
from zoo.data.action_scene import SuiteOptions, generate_suite
from zoo.data.action_scene.calibration import TRAVELLING
from zoo.data.action_scene.render import position, random_actor, render
from zoo.data.action_scene.vocabulary import ACTIONS, SCENES, USUAL_ACTION
from zoo.data.formats import load_entries
from zoo.data.reader import open_reader

FILES = ("train.json", "train_grounding.json", "test_binary.json", "test_open.json", "test_mc.json", "test_grounding.json",
         "train_calibration.json", "test_calibration.json")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    result = subprocess.run([sys.executable, "-m", "zoo.cli", "data", "synth", "--out", str(out), "--seed", "0",
                             "--videos", "120", "--calibration-videos", "60"], capture_output=True, text=True, cwd=REPO,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def test_videos_open_with_decord_and_pyav(suite):
    manifest = json.loads((suite / "manifest.json").read_text())
    videos = sorted((suite / "videos").rglob("*.mp4"))
    assert len(videos) == 120 + 60  # the suite's and the calibration clips
    frames = manifest["options"]["fps"] * manifest["options"]["seconds"]
    for video in videos[::7]:
        for backend in ("decord", "pyav"):
            info = open_reader(backend).info(video)
            assert (info.frames, info.width, info.height) == (frames, 96, 96), (video, backend)
        a = open_reader("decord").read(video, [0, 12])
        b = open_reader("pyav").read(video, [0, 12])
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_every_annotation_passes_the_schema_and_points_at_a_video(suite):
    for name in FILES:
        entries = load_entries(suite / name)  # validates every entry (docs/data_format.md)
        assert entries, name
        assert all((suite / entry["video"]).is_file() for entry in entries)
    binary = load_entries(suite / "test_binary.json")
    pairs = {}
    for entry in binary:
        pairs.setdefault(entry["pair_id"], []).append(entry["answer"])
    assert all(sorted(answers) == ["no", "yes"] for answers in pairs.values())  # dual validation pairs
    per_video = {}
    for entry in binary:
        per_video.setdefault(entry["video"], []).append(entry)
    for entries in per_video.values():
        assert len(entries) == (2 if entries[0]["split"] == "scene_only" else 4)


def test_split_statistics_match_the_configured_bias(tmp_path):
    options = SuiteOptions(train_share=1.0, usual_bias=0.8, train_scene_only_share=0.1, height=32, width=32, seconds=0.5)
    manifest = generate_suite(tmp_path, seed=3, videos=400, options=options)
    with_actor = 400 - manifest["train_scene_only"]
    # Binomial standard errors: 4 sigma bounds, so the test fails only if the sampling is wrong.
    assert abs(manifest["train_usual_share"] - 0.8) < 4 * math.sqrt(0.8 * 0.2 / with_actor)
    assert abs(manifest["train_scene_only"] / 400 - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 400)
    test = generate_suite(tmp_path / "t", seed=3, videos=30, options=SuiteOptions(train_share=0.0, height=32, width=32, seconds=0.5))
    assert test["splits"] == {"train": 0, "usual": 10, "unusual": 10, "scene_only": 10}


def test_synth_options_from_the_command_line(tmp_path):
    out = tmp_path / "short"
    command = [sys.executable, "-m", "zoo.cli", "data", "synth", "--out", str(out), "--videos", "40", "--seed", "1",
               "--size", "48", "32", "--fps", "8", "--seconds", "2", "--span-range", "0.2", "0.4", "--usual-bias", "1.0"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["span_range"] == [0.2, 0.4] and manifest["train_usual_share"] == 1.0
    spans = [e["target"]["span"] for e in load_entries(out / "train_grounding.json") if e["task"] == "temporal_grounding"]
    # 16 frames: 0.2 and 0.4 of the clip round to 3 and 6 frames.
    assert spans and all(3 / 16 - 1e-6 <= end - start <= 6 / 16 + 1e-6 for start, end in spans)
    info = open_reader("pyav").info(next((out / "videos").rglob("*.mp4")))
    assert (info.width, info.height, info.frames) == (48, 32, 16)
    bad = subprocess.run(command + ["--span-range", "0.5", "0.3"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "span_range" in bad.stderr and "Traceback" not in bad.stderr


def test_test_splits_are_what_they_claim(suite):
    for entry in load_entries(suite / "test_open.json"):
        action, scene = entry["meta"]["action"], entry["meta"]["scene"]
        if entry["split"] == "usual":
            assert ACTIONS[action]["usual_scene"] == scene
        elif entry["split"] == "unusual":
            assert action is not None and ACTIONS[action]["usual_scene"] != scene
        else:
            assert action is None
    # The hallucination label of an unusual video is the usual action of its scene.
    for entry in load_entries(suite / "test_binary.json"):
        if entry["split"] == "unusual" and entry["question_type"] == "action" and entry["answer"] == "no":
            assert entry["label"] == USUAL_ACTION[entry["meta"]["scene"]]


def test_same_seed_same_files_and_frames(tmp_path):
    options = SuiteOptions(height=32, width=32, seconds=1.0)
    generate_suite(tmp_path / "a", seed=5, videos=12, options=options, calibration_videos=6)
    generate_suite(tmp_path / "b", seed=5, videos=12, options=SuiteOptions(height=32, width=32, seconds=1.0, workers=2),
                   calibration_videos=6)
    generate_suite(tmp_path / "c", seed=6, videos=12, options=options, calibration_videos=6)
    generate_suite(tmp_path / "d", seed=5, videos=12, options=options)  # no calibration clips
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    for name in FILES:
        assert digest(tmp_path / "a" / name) == digest(tmp_path / "b" / name)
        if "calibration" not in name:  # the calibration clips draw from streams of their own
            assert digest(tmp_path / "a" / name) == digest(tmp_path / "d" / name)
    assert not (tmp_path / "d" / "test_calibration.json").exists()
    assert digest(tmp_path / "a" / "test_binary.json") != digest(tmp_path / "c" / "test_binary.json")
    for video in sorted((tmp_path / "a" / "videos").rglob("*.mp4")):
        twin = tmp_path / "b" / video.relative_to(tmp_path / "a")
        assert digest(video) == digest(twin)  # the same bytes, not only the same decoded frames


def test_the_actor_is_on_screen_only_during_its_span_and_inside_the_frame():
    rng = np.random.default_rng(0)
    video, boxes = render("beach", "jumping", rng, 24, 64, 64, 3.0, (5, 18))
    assert [b is not None for b in boxes] == [5 <= t < 18 for t in range(24)]
    assert all(0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 for x1, y1, x2, y2 in (b for b in boxes if b))
    empty, none = render("beach", None, np.random.default_rng(0), 24, 64, 64, 3.0, None)
    assert all(b is None for b in none)
    # Scene-only frames are the drifting background: neighbouring frames nearly equal.
    assert np.abs(empty[1].astype(int) - empty[0].astype(int)).mean() < 12


def test_actions_differ_in_motion_not_in_looks():
    trajectories = {}
    for action in ACTIONS:
        actor = random_actor(np.random.default_rng(1))  # the same look, whatever the action
        trajectories[action] = np.array([position(action, actor, u, 2.0) for u in np.linspace(0, 1, 16)])
    looks = {action: random_actor(np.random.default_rng(1)) for action in ACTIONS}
    assert len({(a.color, a.size) for a in looks.values()}) == 1
    names = list(ACTIONS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(trajectories[a] - trajectories[b]).max() > 0.02, (a, b)
    assert set(USUAL_ACTION) <= set(SCENES)


def test_an_existing_suite_is_never_written_over(tmp_path):
    """A suite is drawn where none exists; one drawn otherwise (an older generator, a user's own options)
    is refused with what differs, and a wrong data path beside a complete suite is named as such."""
    from zoo.config.recipe import load_recipe
    from zoo.data.action_scene import GENERATOR_VERSION, SuiteOptions, generate_suite
    from zoo.data.dataset import ensure_synthetic_suite

    out = tmp_path / "suite"
    recipe = load_recipe("recipes/tiny/baseline.yaml", [
        f"data.synthetic.out={out}", "data.synthetic.videos=6", f"data.train={out}/train.json", "data.eval={}"])
    ensure_synthetic_suite(recipe)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator_version"] == GENERATOR_VERSION and manifest["videos"] == 6
    first = (out / "train.json").stat().st_mtime_ns
    ensure_synthetic_suite(recipe)  # the same suite: kept as it is
    assert (out / "train.json").stat().st_mtime_ns == first

    manifest["generator_version"] = GENERATOR_VERSION - 1  # as an older STZoo left it
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecipeError, match=rf"{out} holds a suite drawn with generator_version {GENERATOR_VERSION - 1} where "
                                          rf"this recipe asks for generator_version {GENERATOR_VERSION}; it is never replaced"):
        ensure_synthetic_suite(recipe)
    assert (out / "train.json").stat().st_mtime_ns == first

    # The reported case: a user's own suite (64x48, 10 fps, bias 0.95) and a recipe with a mistyped data.train.
    custom = tmp_path / "custom"
    generate_suite(custom, seed=0, videos=6, options=SuiteOptions(width=64, height=48, fps=10, usual_bias=0.95))
    before = {f.name: f.stat().st_mtime_ns for f in custom.rglob("*") if f.is_file()}
    mistyped = load_recipe("recipes/tiny/baseline.yaml", [
        f"data.synthetic.out={custom}", "data.synthetic.videos=6", f"data.train={custom}/trian.json", "data.eval={}"])
    with pytest.raises(RecipeError) as error:
        ensure_synthetic_suite(mistyped)
    assert "options.usual_bias 0.95" in str(error.value) and "options.width 64" in str(error.value)
    assert {f.name: f.stat().st_mtime_ns for f in custom.rglob("*") if f.is_file()} == before
    matching = load_recipe("recipes/tiny/baseline.yaml", [
        f"data.synthetic.out={out}", "data.synthetic.videos=6", f"data.train={out}/trian.json", "data.eval={}"])
    manifest["generator_version"] = GENERATOR_VERSION
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RecipeError, match=rf"data: {out}/trian.json does not exist \(the synthetic suite in {out} is complete"):
        ensure_synthetic_suite(matching)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    elsewhere = load_recipe("recipes/tiny/baseline.yaml", [f"data.synthetic.out={tmp_path / 'notes'}", "data.eval={}"])
    with pytest.raises(RecipeError, match="holds files but no suite manifest.json"):
        ensure_synthetic_suite(elsewhere)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("action", ["swimming", "running", "walking"])
def test_a_travelling_clip_played_backwards_is_a_clip_of_the_other_direction(action):
    """The order family's premise (zoo.data.action_scene.calibration): position(d, u) equals position(-d, 1 - u)
    with swimming's wave phase mirrored, p' = pi - 2 pi 1.2 s - p; so a time average cannot tell the directions."""
    seconds = 2.0
    actor = random_actor(np.random.default_rng(3))
    actor.direction = 1
    mirrored = random_actor(np.random.default_rng(3))
    mirrored.direction = -1
    mirrored.phase = math.pi - 2 * math.pi * 1.2 * seconds - actor.phase
    for u in np.linspace(0, 1, 17):
        assert position(action, actor, u, seconds) == pytest.approx(position(action, mirrored, 1 - u, seconds), abs=1e-9)


def test_skiing_reversed_is_never_drawn_so_it_has_no_order_question():
    actor = random_actor(np.random.default_rng(3))
    start, end = position("skiing", actor, 0.0, 2.0), position("skiing", actor, 1.0, 2.0)
    assert end[1] > start[1]  # it always descends: the reversal (climbing) is no skiing clip


def test_calibration_files_have_known_answers_and_balanced_families(suite):
    test = json.loads((suite / "test_calibration.json").read_text())
    binary = json.loads((suite / "test_binary.json").read_text())
    families = {family: [e for e in test if e["task_type"] == family] for family in ("order", "when", "presence", "control")}
    assert all(families.values()) and len(test) == sum(map(len, families.values()))
    assert all(e["task"] == "multiple_choice" and len(e["candidates"]) == 2 and e["answer"] in e["candidates"] for e in test)
    assert all(e["meta"]["action"] in TRAVELLING for e in families["order"])
    for family, options in (("presence", ("yes", "no")), ("control", ("yes", "no")), ("order", ("to the left", "to the right")),
                            ("when", ("at the start", "at the end"))):
        answers = [e["answer"] for e in families[family]]
        assert answers.count(options[0]) == answers.count(options[1]) > 0, family
    assert all((e["answer"] == "no") == (e["meta"]["action"] is None) for e in families["presence"])
    # Order and when answers agree with the pixels: where the actor is (what differs from the clip's median frame,
    # the empty scene: the actor is on screen for less than half the clip) in its first and last frames on screen,
    # and in which half of the clip those frames are.
    for entry in families["order"] + families["when"]:
        frames = open_reader("pyav").read(suite / entry["video"], list(range(24))).astype(float).mean(axis=-1)
        moving = np.abs(frames - np.median(frames, axis=0)) > 40
        seen = [t for t, frame in enumerate(moving) if frame.sum() > 20]
        columns = [np.nonzero(moving[t].any(axis=0))[0].mean() for t in seen]
        if entry["task_type"] == "order":
            assert entry["answer"] == ("to the right" if columns[-1] > columns[0] else "to the left"), entry["id"]
        else:
            assert entry["answer"] == ("at the start" if seen[-1] < 12 else "at the end") and (seen[0] >= 12) == (
                entry["answer"] == "at the end"), entry["id"]
    # Clips of their own: the suite's other files never name them.
    assert not {e["video"] for e in binary} & {e["video"] for e in test}
    train = json.loads((suite / "train_calibration.json").read_text())
    manifest = json.loads((suite / "manifest.json").read_text())
    assert len(train) == manifest["splits"]["calibration_train"] == 36 and manifest["calibration_videos"] == 60
    assert all(e["task"] == "conversation" and len(e["conversations"]) in (4, 8) for e in train)
