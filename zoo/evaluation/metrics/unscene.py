"""UNSCENE binary questions scored with MASH-VLM's dual validation (Section 4.2).

Each video has, per aspect (action or scene), a pair of yes/no questions sharing a
``pair_id``: one naming the ground truth (answer "yes") and one naming a plausible
hallucination (answer "no"). A pair scores 1 only when every question in it is answered
correctly, so a model that always says "yes" (or always "no") scores 0.

Columns are "<split>.<question_type>": Table 2 of the paper reports ``scene_only.action``,
``unusual.action`` and ``unusual.scene`` and their mean ``avg`` (the mean of those of the three
the data has); a ``usual`` split, when the data has one, adds ``usual.action`` /
``usual.scene`` (reported, not averaged, so ``avg`` stays comparable with the paper).
``pairs`` gives each column's number of pairs. ``single_question_accuracy`` scores each question alone,
to tell a model that misses one side of the pairs from one that misses both. All values
are percentages (0-100).

A question with no prediction, or one whose answer is neither a yes nor a no
(``zoo.evaluation.metrics.answers.parse_yes_no``), counts as wrong; ``missing`` counts the pairs with at
least one missing prediction and ``unparsed`` the questions whose answer could not be read.
"""

from __future__ import annotations

from collections import defaultdict

from zoo.evaluation.metrics.answers import parse_yes_no

PAPER_COLUMNS = ("scene_only.action", "unusual.action", "unusual.scene")


def column_of(entry: dict) -> str:
    return f"{entry['split']}.{entry['question_type']}"


def question_result(entry: dict, prediction: str | None) -> dict:
    """One question: what was read from the prediction and whether it matches the reference answer."""
    if prediction is None:
        return {"parsed": None, "correct": False, "missing": True}
    parsed = parse_yes_no(prediction)
    expected = str(entry["answer"]).strip().lower() == "yes"
    return {"parsed": None if parsed is None else ("yes" if parsed else "no"),
            "correct": parsed is not None and parsed == expected, "missing": False}


def group_pairs(entries: list[dict]) -> dict[str, list[dict]]:
    """pair_id -> its questions; a pair whose questions disagree on split or question type is a data error."""
    pairs: dict[str, list[dict]] = defaultdict(list)
    for entry in entries:
        pairs[str(entry["pair_id"])].append(entry)
    for pair_id, members in pairs.items():
        columns = {column_of(member) for member in members}
        if len(columns) > 1:
            raise ValueError(f"UNSCENE pair {pair_id!r} mixes columns {sorted(columns)}; "
                             f"both questions of a pair must share split and question_type")
    return pairs


def percent(hits: int, total: int) -> float:
    return 100.0 * hits / total if total else 0.0


def score_binary(entries: list[dict], predictions: dict[str, str | None]) -> tuple[dict, dict[str, dict]]:
    """(metrics, per-question results by id) for the ``binary`` entries."""
    samples = {entry["id"]: question_result(entry, predictions.get(entry["id"])) for entry in entries}
    return aggregate_binary(entries, samples), samples


def aggregate_binary(entries: list[dict], samples: dict[str, dict]) -> dict:
    """The metrics of per-question results (``question_result``); a bootstrap calls it on resampled pairs."""
    pair_hits: dict[str, list[bool]] = defaultdict(list)
    question_hits: dict[str, list[bool]] = defaultdict(list)
    missing_pairs = 0
    for members in group_pairs(entries).values():
        column = column_of(members[0])
        results = [samples[member["id"]] for member in members]
        both_right = all(result["correct"] for result in results)
        missing_pairs += any(result["missing"] for result in results)
        pair_hits[column].append(both_right)
        question_hits[column].extend(result["correct"] for result in results)
        for result in results:
            result["pair_correct"] = both_right

    metrics: dict = {column: percent(sum(hits), len(hits)) for column, hits in sorted(pair_hits.items())}
    paper = [metrics[column] for column in PAPER_COLUMNS if column in metrics]
    if paper:
        metrics["avg"] = sum(paper) / len(paper)
    metrics["single_question_accuracy"] = {
        column: percent(sum(hits), len(hits)) for column, hits in sorted(question_hits.items())
    }
    metrics["pairs"] = {column: len(hits) for column, hits in sorted(pair_hits.items())}
    metrics["questions"] = len(entries)
    metrics["missing"] = missing_pairs
    results = [samples[entry["id"]] for entry in entries]
    metrics["unparsed"] = sum(1 for r in results if not r["missing"] and r["parsed"] is None)
    return metrics
