"""Calibration questions: families whose right answer, and whose chance level, are known by construction.

Each is a two-option multiple-choice question (chance 50%), ``task_type`` naming the family:

- ``order``: "Which way does the person move across the frame?" for the clips whose actor travels
  (``TRAVELLING``). For these actions a right-going clip played backwards is a left-going clip the suite
  draws just as often (render.position: the same path; swimming's wave with the mirrored phase), so a
  model that averages over time sees inputs of the same distribution for both answers and must sit at
  chance; one that keeps frame order need not. Skiing is left out: its actor always descends, so the
  reversed clip (climbing) is never drawn and a time average could tell the directions apart.
- ``when``: "When is the person in the video?", at the start or at the end: the actor is on screen only in
  the first or only in the last part of the clip, drawn equally often. Played backwards, a start clip is an
  end clip of the other direction (the premise of ``order``), so a time average must sit at chance here too;
  a model that keeps frame order needs only to tell frames with the actor from frames without (tiny MASH-VLM
  learnt it on 2 of 3 seeds in 1500 steps; no tiny model learnt direction, which also needs where the actor is).
- ``presence``: "Is there a person in the video?" (scene-only clips: no).
- ``control``: a question about something no video shows ("Was this filmed on a weekday?"), its answer
  drawn at random: every model must sit at chance, and one above it learns the answer from elsewhere (the
  text, the position of the question, a leak).

The questions are asked of clips made for them (``data.synthetic.calibration_videos``; suite.py): half show no
one, half an actor running or swimming across most of the frame in the first or the last 35-50% of the clip, so
that a direction spans several patches of a tiny encoder's input (the suite's own clips travel as little as a
tenth of the width, and too few of them travel for a tiny model to learn direction from). The test file keeps,
per family, as many questions of each answer, so that always giving one answer scores chance. Clips, questions
and files (train_calibration.json, test_calibration.json) come from random streams of their own, so the suite's
other files are the same as without them.
"""

from __future__ import annotations

import numpy as np

from zoo.data.action_scene.questions import Clip, _entry

DIRECTIONS = ("to the left", "to the right")
CONTROL_QUESTIONS = ("Was this video filmed on a weekday?", "Was this video filmed in the morning?",
                     "Is the camera made in Japan?")
TRAVELLING = ("swimming", "running", "walking")  # actions whose reversed clip is a clip of the other direction
CROSSING = ("running", "swimming")  # the travelling actions that cross most of the frame (0.84 and 0.7 of it)
CROSSING_SPAN = (0.35, 0.5)  # a calibration actor's time on screen, as a share of the clip: at its start or its end
TIMES = ("at the start", "at the end")
MIN_TRAVEL = 0.1  # net horizontal travel (share of the width) below which a clip has no direction to ask about


def direction(clip: Clip) -> str | None:
    """Where the actor's box centre goes from its first frame on screen to its last, if it travels."""
    if clip.action not in TRAVELLING or len(clip.boxes) < 2:
        return None
    first, last = clip.boxes[0][1], clip.boxes[-1][1]
    travel = (last[0] + last[2]) / 2 - (first[0] + first[2]) / 2
    if abs(travel) < MIN_TRAVEL:
        return None
    return DIRECTIONS[int(travel > 0)]


def appearance(clip: Clip) -> str | None:
    """Whether the actor is on screen only in the first or only in the last half of the clip."""
    if clip.span is None:
        return None
    start, end = clip.span
    return TIMES[0] if end <= 0.5 else TIMES[1] if start >= 0.5 else None


def two_way(clip: Clip, rng: np.random.Generator, family: str, question: str, truth: str, options: tuple[str, str]) -> dict:
    candidates = list(options) if rng.random() < 0.5 else list(reversed(options))
    letter = "AB"[candidates.index(truth)]
    listed = " ".join(f"({'AB'[i]}) {c}" for i, c in enumerate(candidates))
    # The reply is the option itself, not its letter: the letter's place is random, and a tiny model that has to
    # look the letter up in the question measures that lookup instead of what it saw.
    return _entry(clip, f"cal.{family}", "multiple_choice", f"{question} {listed}", truth,
                  candidates=candidates, answer=truth, answer_letter=letter, task_type=family)


def calibration_entries(clip: Clip, rng: np.random.Generator) -> list[dict]:
    """The clip's calibration questions (order only when its actor travels)."""
    entries = []
    moving = direction(clip)
    if moving is not None:
        entries.append(two_way(clip, rng, "order", "Which way does the person move across the frame?", moving, DIRECTIONS))
    when = appearance(clip)
    if when is not None:
        entries.append(two_way(clip, rng, "when", "When is the person in the video?", when, TIMES))
    present = "no" if clip.action is None else "yes"
    entries.append(two_way(clip, rng, "presence", "Is there a person in the video?", present, ("yes", "no")))
    question = CONTROL_QUESTIONS[int(rng.integers(len(CONTROL_QUESTIONS)))]
    entries.append(two_way(clip, rng, "control", question, ("yes", "no")[int(rng.integers(2))], ("yes", "no")))
    return entries


def calibration_conversation(clip: Clip, rng: np.random.Generator) -> dict:
    """A training video's calibration questions as one conversation, in a random order."""
    entries = calibration_entries(clip, rng)
    turns = [(e["conversations"][0]["value"].removeprefix("<video>\n"), e["conversations"][1]["value"]) for e in entries]
    order = rng.permutation(len(turns))
    conversations = []
    for position, index in enumerate(order):
        question, answer = turns[index]
        conversations += [{"from": "human", "value": ("<video>\n" if position == 0 else "") + question},
                          {"from": "gpt", "value": answer}]
    return {"id": f"{clip.id}.cal", "video": clip.video, "task": "conversation", "split": clip.split,
            "meta": dict(clip.meta), "conversations": conversations}
