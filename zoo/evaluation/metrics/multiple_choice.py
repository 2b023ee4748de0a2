"""Multiple-choice accuracy (MVBench style), overall and per ``task_type``, as percentages.

MVBench's reported "Avg" is the mean of its 20 per-task accuracies (ST-LLM Table 1: "the
average of all 20 metrics"), which equals the overall accuracy only when every task has the
same number of questions; both are reported: ``accuracy`` over all questions and
``mean_task_accuracy`` over task types. Answers are read with ``zoo.evaluation.metrics.answers.parse_choice``;
a missing or unreadable answer is wrong.
"""

from __future__ import annotations

import string
from collections import defaultdict

from zoo.evaluation.metrics.answers import parse_choice


def reference_index(entry: dict) -> int:
    """The correct option: ``answer_letter`` when present, otherwise the position of ``answer``."""
    letter = entry.get("answer_letter")
    if letter:
        return string.ascii_uppercase.index(letter.strip().strip("()").upper())
    return entry["candidates"].index(entry["answer"])


def score_multiple_choice(entries: list[dict], predictions: dict[str, str | None]) -> tuple[dict, dict[str, dict]]:
    """(metrics, per-question results by id)."""
    samples: dict[str, dict] = {}
    for entry in entries:
        prediction = predictions.get(entry["id"])
        chosen = parse_choice(prediction, entry["candidates"]) if prediction is not None else None
        correct = chosen is not None and chosen == reference_index(entry)
        samples[entry["id"]] = {"chosen": None if chosen is None else string.ascii_uppercase[chosen],
                                "correct": correct, "missing": prediction is None}
    return aggregate_multiple_choice(entries, samples), samples


def aggregate_multiple_choice(entries: list[dict], samples: dict[str, dict]) -> dict:
    """The metrics of per-question results; a bootstrap calls it on resampled questions."""
    by_type: dict[str, list[bool]] = defaultdict(list)
    missing = unparsed = 0
    for entry in entries:
        result = samples[entry["id"]]
        missing += result["missing"]
        unparsed += not result["missing"] and result["chosen"] is None
        by_type[entry.get("task_type") or "unspecified"].append(result["correct"])
    per_type = {name: 100.0 * sum(hits) / len(hits) for name, hits in sorted(by_type.items())}
    total = sum(len(hits) for hits in by_type.values())
    metrics = {
        "accuracy": 100.0 * sum(sum(hits) for hits in by_type.values()) / total if total else 0.0,
        "mean_task_accuracy": sum(per_type.values()) / len(per_type) if per_type else 0.0,
        "by_task_type": per_type,
        "count": len(entries),
        "missing": missing,
        "unparsed": unparsed,
    }
    return metrics
