"""The suite's questions and reference answers, per video, in the STZoo schema (docs/data_format.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data.action_scene.vocabulary import ACTIONS, SCENES, USUAL_ACTION
from zoo.data.grounding import DECIMAL

ACTION_QUESTIONS = ["What is the person doing?", "What activity is shown in the video?", "What is happening in this video?"]
SCENE_QUESTIONS = ["Where does this take place?", "What is the setting of the video?", "Where is this video filmed?"]
DESCRIBE = "Describe the video in detail."
NOBODY = "No one is in the video."
YES_NO_SUFFIX = " Answer yes or no."


@dataclass
class Clip:
    """What a question needs to know about one rendered video."""

    id: str
    video: str  # path relative to the annotation files
    split: str
    scene: str
    action: str | None
    span: tuple[float, float] | None  # normalised [start, end) of the actor's time on screen
    boxes: list  # (time, box) of the frames where the actor is visible
    meta: dict

    @property
    def article_scene(self) -> str:
        return f"a {self.scene}" if not self.scene[0] in "aeiou" else f"an {self.scene}"


def describe(clip: Clip) -> str:
    if clip.action is None:
        return f"An empty {clip.scene}; no one is in the video."
    return f"A person is {ACTIONS[clip.action]['phrase']} in {clip.article_scene}."


def _entry(clip: Clip, suffix: str, task: str, question: str, reply: str, **extra) -> dict:
    return {"id": f"{clip.id}.{suffix}", "video": clip.video, "task": task, "split": clip.split, "meta": dict(clip.meta),
            "conversations": [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": reply}], **extra}


def other_action(rng: np.random.Generator, *avoid: str | None) -> str:
    return str(rng.choice([a for a in ACTIONS if a not in avoid]))


def other_scene(rng: np.random.Generator, *avoid: str) -> str:
    return str(rng.choice([s for s in SCENES if s not in avoid]))


def hallucination_labels(clip: Clip, rng: np.random.Generator) -> tuple[str, str | None]:
    """The 'no' labels: what this scene suggests (its usual action) and what this action suggests (its usual scene)."""
    if clip.split == "usual" or clip.split == "train":
        return other_action(rng, clip.action), (other_scene(rng, clip.scene) if clip.action else None)
    action_label = USUAL_ACTION[clip.scene]
    if action_label == clip.action:
        action_label = other_action(rng, clip.action)
    scene_label = ACTIONS[clip.action]["usual_scene"] if clip.action else None
    return action_label, scene_label


def binary_entries(clip: Clip, rng: np.random.Generator) -> list[dict]:
    """UNSCENE dual-validation pairs: per aspect a 'yes' question (truth) and a 'no' question (hallucination)."""
    wrong_action, wrong_scene = hallucination_labels(clip, rng)
    if clip.action is None:  # scene-only: two action questions
        pair = f"{clip.id}.action"
        return [
            _entry(clip, "action.yes", "binary", f"Is this an empty {clip.scene} with no one in it?{YES_NO_SUFFIX}", "Yes",
                   pair_id=pair, question_type="action", answer="yes", label="no action"),
            _entry(clip, "action.no", "binary", f"Is someone {wrong_action} in this video?{YES_NO_SUFFIX}", "No",
                   pair_id=pair, question_type="action", answer="no", label=wrong_action),
        ]
    return [
        _entry(clip, "action.yes", "binary", f"Is the person {clip.action} in this video?{YES_NO_SUFFIX}", "Yes",
               pair_id=f"{clip.id}.action", question_type="action", answer="yes", label=clip.action),
        _entry(clip, "action.no", "binary", f"Is the person {wrong_action} in this video?{YES_NO_SUFFIX}", "No",
               pair_id=f"{clip.id}.action", question_type="action", answer="no", label=wrong_action),
        _entry(clip, "scene.yes", "binary", f"Does this video take place in {clip.article_scene}?{YES_NO_SUFFIX}", "Yes",
               pair_id=f"{clip.id}.scene", question_type="scene", answer="yes", label=clip.scene),
        _entry(clip, "scene.no", "binary", f"Does this video take place in a {wrong_scene}?{YES_NO_SUFFIX}", "No",
               pair_id=f"{clip.id}.scene", question_type="scene", answer="no", label=wrong_scene),
    ]


def open_entry(clip: Clip) -> dict:
    return _entry(clip, "describe", "open_ended", DESCRIBE, describe(clip), targets={"action": clip.action, "scene": clip.scene})


def choice_entry(clip: Clip, rng: np.random.Generator, task_type: str) -> dict:
    """Four options; on unusual videos the scene's usual action (or the action's usual scene) is a distractor."""
    if task_type == "action":
        truth = clip.action or "nothing, no one is there"
        tempting = USUAL_ACTION[clip.scene]
        pool = [a for a in ACTIONS if a not in (clip.action, tempting)]
        question = "What is the person doing?"
    else:
        truth = clip.scene
        tempting = ACTIONS[clip.action]["usual_scene"] if clip.action else other_scene(rng, clip.scene)
        pool = [s for s in SCENES if s not in (clip.scene, tempting)]
        question = "Where does this take place?"
    distractors = [tempting] if tempting != truth else []
    distractors += [str(x) for x in rng.choice(pool, size=3 - len(distractors), replace=False)]
    options = [truth] + distractors
    order = rng.permutation(len(options))
    candidates = [options[i] for i in order]
    letter = "ABCD"[candidates.index(truth)]
    listed = " ".join(f"({'ABCD'[i]}) {c}" for i, c in enumerate(candidates))
    return _entry(clip, f"mc.{task_type}", "multiple_choice", f"{question} {listed}", f"({letter}) {truth}",
                  candidates=candidates, answer=truth, answer_letter=letter, task_type=task_type)


def grounding_entries(clip: Clip, rng: np.random.Generator) -> list[dict]:
    if clip.action is None or not clip.boxes:
        return []
    start, end = clip.span
    middle_time, middle_box = clip.boxes[len(clip.boxes) // 2]
    picks = [clip.boxes[i] for i in sorted({0, len(clip.boxes) // 2, len(clip.boxes) - 1})]
    return [
        _entry(clip, "when", "temporal_grounding", "When is the person in the video? Give the start and end.",
               DECIMAL.span(start, end), target={"span": [start, end]}),
        _entry(clip, "where", "spatial_grounding", f"Where is the person at {middle_time:.2f} of the video? Give the box.",
               DECIMAL.box(middle_box), target={"time": middle_time, "box": list(middle_box)}),
        _entry(clip, "tube", "spatiotemporal_grounding", "When and where is the person? Give the span and boxes.",
               DECIMAL.tube(start, end, picks), target={"span": [start, end], "boxes": [[t, list(b)] for t, b in picks]}),
    ]


def yes_no_turns(clip: Clip, rng: np.random.Generator) -> list[tuple[str, str]]:
    """One action and one scene yes/no question, each 'yes' or 'no' at random, worded as the test asks."""
    if clip.action is None:
        action_turn = (f"Is someone {other_action(rng)} in this video?{YES_NO_SUFFIX}", "No")
    elif rng.random() < 0.5:
        action_turn = (f"Is the person {clip.action} in this video?{YES_NO_SUFFIX}", "Yes")
    else:
        action_turn = (f"Is the person {other_action(rng, clip.action)} in this video?{YES_NO_SUFFIX}", "No")
    if rng.random() < 0.5:
        scene_turn = (f"Does this video take place in {clip.article_scene}?{YES_NO_SUFFIX}", "Yes")
    else:
        scene_turn = (f"Does this video take place in a {other_scene(rng, clip.scene)}?{YES_NO_SUFFIX}", "No")
    return [action_turn, scene_turn]


def training_conversation(clip: Clip, rng: np.random.Generator) -> dict:
    """Every question format of the test sets about one training video, in a random order, so that an
    answer can only come from reading its question (not from its place in the conversation)."""
    action_answer = NOBODY if clip.action is None else f"The person is {clip.action}."
    turns = [
        (str(rng.choice(ACTION_QUESTIONS)), action_answer),
        (str(rng.choice(SCENE_QUESTIONS)), f"This is {clip.article_scene}."),
        *yes_no_turns(clip, rng),
        (DESCRIBE, describe(clip)),
    ]
    for task_type in ("action", "scene"):
        choice = choice_entry(clip, rng, task_type)
        turns.append((choice["conversations"][0]["value"].removeprefix("<video>\n"), choice["conversations"][1]["value"]))
    order = rng.permutation(len(turns))
    conversations = []
    for position, index in enumerate(order):
        question, answer = turns[index]
        prefix = "<video>\n" if position == 0 else ""
        conversations += [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
    return {"id": f"{clip.id}.chat", "video": clip.video, "task": "conversation", "split": clip.split,
            "meta": dict(clip.meta), "conversations": conversations}
