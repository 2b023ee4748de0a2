"""The actions and scenes of the synthetic suite: names, synonyms, and each action's usual scene.

An action is a motion pattern of the actor (rendered in render.py); a scene is a static
background. The synonyms are what the open-ended judge accepts for each label.
"""

from __future__ import annotations

ACTIONS: dict[str, dict] = {
    "skiing": {"usual_scene": "snowy mountain", "phrase": "skiing down a slope",
               "synonyms": ["skiing", "ski", "skis", "skier", "skiing down"]},
    "boxing": {"usual_scene": "boxing ring", "phrase": "boxing",
               "synonyms": ["boxing", "boxer", "punching", "punches", "box"]},
    "swimming": {"usual_scene": "swimming pool", "phrase": "swimming",
                 "synonyms": ["swimming", "swim", "swimmer", "swims"]},
    "dribbling": {"usual_scene": "basketball court", "phrase": "dribbling a ball",
                  "synonyms": ["dribbling", "dribble", "dribbles", "bouncing a ball"]},
    "running": {"usual_scene": "soccer field", "phrase": "running",
                "synonyms": ["running", "run", "runs", "runner", "sprinting", "sprint"]},
    "jumping": {"usual_scene": "beach", "phrase": "jumping up and down",
                "synonyms": ["jumping", "jump", "jumps", "hopping", "leaping"]},
    "walking": {"usual_scene": "library", "phrase": "walking slowly",
                "synonyms": ["walking", "walk", "walks", "strolling", "stroll"]},
    "cooking": {"usual_scene": "kitchen", "phrase": "stirring a pot",
                "synonyms": ["cooking", "cook", "cooks", "stirring", "stir"]},
}

SCENES: dict[str, dict] = {
    "snowy mountain": {"synonyms": ["snowy mountain", "mountain", "snow", "slope", "ski resort", "snowy"]},
    "boxing ring": {"synonyms": ["boxing ring", "ring", "boxing arena"]},
    "swimming pool": {"synonyms": ["swimming pool", "pool", "water"]},
    "basketball court": {"synonyms": ["basketball court", "court", "gym", "gymnasium"]},
    "soccer field": {"synonyms": ["soccer field", "football field", "pitch", "field", "grass"]},
    "beach": {"synonyms": ["beach", "sand", "seaside", "shore", "sea"]},
    "library": {"synonyms": ["library", "bookshelves", "books", "bookshelf"]},
    "kitchen": {"synonyms": ["kitchen", "stove", "counter"]},
}

USUAL_ACTION = {spec["usual_scene"]: action for action, spec in ACTIONS.items()}


def judge_vocabulary() -> dict:
    """The shape zoo.evaluation.metrics.open_ended.KeywordJudge reads: {"actions": {name: [synonyms]}, "scenes": {...}}."""
    return {
        "actions": {name: list(spec["synonyms"]) for name, spec in ACTIONS.items()},
        "scenes": {name: list(spec["synonyms"]) for name, spec in SCENES.items()},
    }
