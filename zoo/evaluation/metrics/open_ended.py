"""UNSCENE open-ended answers ("Describe the video in detail") scored 0-5 for action and scene.

MASH-VLM asks GPT-3.5 to score a description against the ground-truth action and scene
labels, each on 0-5, with "no action" as the ground truth of scene-only videos, whose
action score alone is reported (Section 4.2). ``OpenEndedJudge`` is that interface, so a
GPT or local-LLM judge can be plugged in; ``KeywordJudge`` is an offline, deterministic
stand-in that knows the suite's vocabulary of actions and scenes (with synonyms).

KeywordJudge, per aspect:

* a label is *asserted* when one of its terms (its name, underscores read as spaces, or a
  synonym; whole words, case-insensitive, an optional plural "s"/"es") appears and is not
  negated. Negated: a negator ("not", "no", "never", "nobody", "without", "n't" ...) among
  the three words before it in the same clause (clauses end at , ; : . ! ? and at "but",
  "however", "whereas", "while", "although", "though"), or the term follows "instead of",
  "rather than" or "other than". Overlapping terms keep the longest, so "basketball
  court" (a scene) does not also assert "basketball" (an action);
* "nobody" is asserted for the action aspect by phrases such as "no one", "nobody", "no
  person", "there are no people", "empty", "deserted", "no activity", "without any
  people" (themselves subject to negation: "not empty");
* the rating: 5 when the right label is asserted and no wrong one; max(1, 4 - wrong) when
  the right one comes with ``wrong`` wrong ones (3, 2, then 1); 0 when only wrong ones
  are asserted; 1 when the answer asserts nothing for that aspect (it neither matches
  nor contradicts the reference); an empty answer scores 0 on both. For a scene-only
  video (``target_action`` None) the right "label" is nobody and every asserted action is
  wrong; for a video with an actor, asserting nobody counts as one wrong label.

The judge only knows the vocabulary: a hallucinated action outside it goes unseen.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Protocol

from zoo.evaluation.metrics.unscene import PAPER_COLUMNS

NOBODY = None  # the action label of "nobody is in the video"

_NEGATORS = {"not", "no", "never", "nobody", "neither", "nor", "without", "none", "cannot", "nothing",
             "noone", "lacks", "lacking", "absent"}
_CLAUSE_BREAK = re.compile(r"[,;:.!?\n]|\b(?:but|however|whereas|while|although|though)\b", re.IGNORECASE)
_EXCLUDING = re.compile(r"\b(?:instead\s+of|rather\s+than|other\s+than|apart\s+from|except(?:\s+for)?)"
                        r"(?:\s+(?:a|an|the|any|some))?\s*$", re.IGNORECASE)
_NEGATION_WINDOW = 3  # words before a term that may negate it

_NOBODY_PHRASES = [
    r"\bno[\s-]?one\b(?!\s+else)", r"\bnobody\b(?!\s+else)",
    r"\bnot\s+(?:a\s+single|any)\s+(?:one|person|people|soul)\b",
    r"\bno\s+(?:other\s+)?(?:person|persons|people|humans?|human\s+beings?|individuals?|figures?|actors?|players?"
    r"|men|women|man|woman|living\s+beings?|signs?\s+of\s+(?:people|life|humans?|activity))\b",
    r"\bno\s+(?:human\s+)?(?:activity|activities|action|actions|movement|motion)\b",
    r"\b(?:is|are|was|were)(?:\s+not|n't)\s+(?:anyone|anybody|any\s+(?:people|persons?|humans?))\b",
    r"\bwithout\s+(?:any\s+)?(?:people|persons?|humans?|anyone|anybody)\b",
    r"\bdevoid\s+of\s+(?:people|humans?|persons?|life|activity)\b",
    r"\bempty\b", r"\bdeserted\b", r"\bunoccupied\b", r"\bvacant\b", r"\buninhabited\b",
]


class OpenEndedJudge(Protocol):
    def score(self, answer: str, target_action: str | None, target_scene: str) -> dict[str, int]:
        """{"action": 0..5, "scene": 0..5} for ``answer`` against the reference labels."""
        ...


def label_terms(name: str, synonyms: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The words that name a label: its name with underscores as spaces, and its synonyms, lower case."""
    terms = {name.replace("_", " ").strip().lower()} | {s.replace("_", " ").strip().lower() for s in synonyms}
    return sorted(t for t in terms if t)


def term_pattern(term: str) -> re.Pattern:
    words = [re.escape(word) for word in term.split()]
    return re.compile(r"(?<!\w)" + r"[\s-]+".join(words) + r"(?:s|es)?(?!\w)", re.IGNORECASE)


def vocabulary_labels(section) -> dict[str, list[str]]:
    """{label: terms} from a vocabulary section given as {name: [synonyms]} or as a list of names."""
    if isinstance(section, dict):
        return {name: label_terms(name, synonyms or ()) for name, synonyms in section.items()}
    return {name: label_terms(name) for name in section or ()}


def is_negated(text: str, start: int) -> bool:
    """Whether a mention starting at ``start`` is denied by the words just before it in its clause."""
    before = text[:start]
    if _EXCLUDING.search(before):
        return True
    breaks = list(_CLAUSE_BREAK.finditer(before))
    clause = before[breaks[-1].end():] if breaks else before
    words = re.findall(r"[\w']+", clause.lower())[-_NEGATION_WINDOW:]
    return any(word in _NEGATORS or word.endswith("n't") for word in words)


Pattern = tuple[re.Pattern, str, str | None]  # (pattern, aspect, label); label None is "nobody"


class KeywordJudge:
    """Offline judge: asserted labels found by keyword, scored as described in the module notes."""

    def __init__(self, vocabulary: dict):
        if not isinstance(vocabulary, dict) or "actions" not in vocabulary or "scenes" not in vocabulary:
            raise ValueError("a KeywordJudge vocabulary needs 'actions' and 'scenes' ({name: [synonyms]} each)")
        self.labels = {"action": vocabulary_labels(vocabulary["actions"]),
                       "scene": vocabulary_labels(vocabulary["scenes"])}
        self.patterns: list[Pattern] = [
            (term_pattern(term), aspect, label)
            for aspect, named in self.labels.items() for label, terms in named.items() for term in terms
        ] + [(re.compile(phrase, re.IGNORECASE), "action", NOBODY) for phrase in _NOBODY_PHRASES]

    def patterns_for(self, target_action: str | None, target_scene: str) -> list[Pattern]:
        """The vocabulary's patterns, plus a reference label's own name when the vocabulary lacks it."""
        extra = [(term_pattern(term), aspect, label)
                 for aspect, label in (("action", target_action), ("scene", target_scene))
                 if label is not None and label not in self.labels[aspect]
                 for term in label_terms(label)]
        return self.patterns + extra

    def assertions(self, answer: str, patterns: list[Pattern] | None = None) -> dict[str, set]:
        """{"action": labels asserted (None for nobody), "scene": labels asserted}."""
        mentions = []
        for pattern, aspect, label in patterns or self.patterns:
            for match in pattern.finditer(answer):
                mentions.append((match.start(), match.end(), aspect, label))
        # Longest mention first, so "basketball court" claims its words before "basketball" can.
        mentions.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        taken: list[tuple[int, int]] = []
        asserted: dict[str, set] = {"action": set(), "scene": set()}
        for start, end, aspect, label in mentions:
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            taken.append((start, end))
            if not is_negated(answer, start):
                asserted[aspect].add(label)
        return asserted

    def score(self, answer: str, target_action: str | None, target_scene: str) -> dict[str, int]:
        if not answer or not answer.strip():
            return {"action": 0, "scene": 0}  # nothing described: no credit, unlike a description silent on one aspect
        asserted = self.assertions(answer, self.patterns_for(target_action, target_scene))
        return {"action": rating(asserted["action"], target_action), "scene": rating(asserted["scene"], target_scene)}


def rating(asserted: set, target) -> int:
    right = target in asserted
    wrong = len(asserted - {target})
    if right and not wrong:
        return 5
    if right:
        return max(1, 4 - wrong)
    return 0 if wrong else 1


def score_open_ended(entries: list[dict], predictions: dict[str, str | None],
                     judge: OpenEndedJudge) -> tuple[dict, dict[str, dict]]:
    """(metrics, per-entry scores by id): mean 0-5 scores per "<split>.action" / "<split>.scene".

    Scene scores are averaged over videos with an actor only: for scene-only videos the paper
    reports the action score alone. A missing prediction scores 0 on both aspects.
    """
    samples: dict[str, dict] = {}
    for entry in entries:
        targets = entry["targets"]
        prediction = predictions.get(entry["id"])
        if prediction is None:
            samples[entry["id"]] = {"action": 0, "scene": 0, "missing": True}
        else:
            samples[entry["id"]] = {**judge.score(prediction, targets.get("action"), targets["scene"]), "missing": False}
    return aggregate_open_ended(entries, samples), samples


def aggregate_open_ended(entries: list[dict], samples: dict[str, dict]) -> dict:
    """The metrics of per-entry ratings; a bootstrap calls it on resampled entries."""
    columns: dict[str, list[int]] = defaultdict(list)
    missing = 0
    for entry in entries:
        targets, result = entry["targets"], samples[entry["id"]]
        missing += result["missing"]
        split = entry.get("split", "all")
        columns[f"{split}.action"].append(result["action"])
        if targets.get("action") is not None:
            columns[f"{split}.scene"].append(result["scene"])
    metrics: dict = {column: sum(scores) / len(scores) for column, scores in sorted(columns.items())}
    paper = [metrics[column] for column in PAPER_COLUMNS if column in metrics]
    if paper:
        metrics["avg"] = sum(paper) / len(paper)
    metrics["count"] = len(entries)
    metrics["missing"] = missing
    return metrics
