"""Chance level of a benchmark column (what a model answering at random scores) and the number of test items
the column counts, from the entries themselves.

- UNSCENE pair columns (``binary.<split>.<aspect>``, ``binary.avg``): a pair scores only when each of its
  yes/no questions is right, so a coin per question scores 0.5^questions per pair (25 for pairs of two);
  ``binary.single_question_accuracy.*``: 50.
- Multiple choice: 1/candidates per question, averaged as the column averages (over questions for
  ``accuracy`` and per task type, over task types for ``mean_task_accuracy``).
- Open-ended ratings and grounding IoUs have no chance level a coin defines (a rating depends on what a
  random description happens to name, an IoU on the span a random guess draws): None, shown as such.
"""

from __future__ import annotations

from statistics import mean

from zoo.evaluation.metrics.unscene import PAPER_COLUMNS, column_of, group_pairs


def binary_chance(entries: list[dict], rest: str) -> float | None:
    binary = [entry for entry in entries if entry.get("task") == "binary"]
    if not binary:
        return None
    if rest.startswith("single_question_accuracy."):
        column = rest[len("single_question_accuracy."):]
        return 50.0 if any(column_of(entry) == column for entry in binary) else None
    by_column: dict[str, list[float]] = {}
    for members in group_pairs(binary).values():
        by_column.setdefault(column_of(members[0]), []).append(100.0 * 0.5 ** len(members))
    if rest == "avg":
        paper = [mean(by_column[column]) for column in PAPER_COLUMNS if column in by_column]
        return mean(paper) if paper else None
    return mean(by_column[rest]) if rest in by_column else None


def multiple_choice_chance(entries: list[dict], rest: str) -> float | None:
    questions = [entry for entry in entries if entry.get("task") == "multiple_choice"]
    by_type: dict[str, list[float]] = {}
    for entry in questions:
        by_type.setdefault(entry.get("task_type") or "unspecified", []).append(100.0 / len(entry["candidates"]))
    if not by_type:
        return None
    if rest == "accuracy":
        return mean(value for values in by_type.values() for value in values)
    if rest == "mean_task_accuracy":
        return mean(mean(values) for values in by_type.values())
    if rest.startswith("by_task_type."):
        values = by_type.get(rest[len("by_task_type."):])
        return mean(values) if values else None
    return None


def chance_level(entries: list[dict], column: str) -> float | None:
    """``column`` as flatten_metrics names it without the benchmark prefix (``binary.avg``)."""
    task, _, rest = column.partition(".")
    if task == "binary":
        return binary_chance(entries, rest)
    if task == "multiple_choice":
        return multiple_choice_chance(entries, rest)
    return None


def column_items(entries: list[dict], column: str) -> int:
    """How many test items ``column`` (without the benchmark prefix) is computed over: UNSCENE pairs for a pair
    column (the paper's three for ``avg``), questions for the others, within the column's split or type."""
    task, _, rest = column.partition(".")
    mine = [entry for entry in entries if entry.get("task") == task]
    if task == "binary":
        questions = rest.startswith("single_question_accuracy.")
        name = rest.removeprefix("single_question_accuracy.")
        wanted = set(PAPER_COLUMNS) if name == "avg" else {name}
        chosen = [entry for entry in mine if column_of(entry) in wanted]
        return len(chosen) if questions else len({entry.get("pair_id") for entry in chosen})
    if task == "multiple_choice" and rest.startswith("by_task_type."):
        return sum((entry.get("task_type") or "unspecified") == rest[len("by_task_type."):] for entry in mine)
    if task == "open_ended" and rest.count(".") == 1:
        split, aspect = rest.split(".")
        return sum(entry.get("split", "all") == split and (aspect == "action" or entry["targets"].get("action") is not None)
                   for entry in mine)
    return len(mine)
