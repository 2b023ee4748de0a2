"""The stzoo_suite_mc task's functions: STZoo entries as lmms-eval docs, scored with STZoo's multiple-choice metric.

Each answer is read and judged by zoo.evaluation.metrics.multiple_choice.score_multiple_choice and the task's
numbers are aggregate_multiple_choice's over those per-question results, so ``accuracy`` and
``mean_task_accuracy`` are the very numbers ``stzoo eval`` reports under multiple_choice.
"""

from __future__ import annotations

from pathlib import Path

from zoo.data.dataset import resolve_video
from zoo.evaluation.metrics.multiple_choice import aggregate_multiple_choice, score_multiple_choice
from zoo.evaluation.metrics.scoring import first_turn


def doc_to_visual(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> list[str]:
    """The entry's video, a relative path taken from the task's video_dir (the annotation file's folder)."""
    folder = Path((lmms_eval_specific_kwargs or {}).get("video_dir") or ".")
    return [str(resolve_video(doc, folder, None).absolute())]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The entry's question turn as written (its <video> mark and options); the model's recipe adds the template."""
    return first_turn(doc, "human")


def doc_to_target(doc: dict) -> str:
    return first_turn(doc, "gpt") or ""


def process_results(doc: dict, results: list) -> dict:
    """The question's result as STZoo scores it, under each metric of the task (aggregated below)."""
    prediction = results[0] if results else None
    _, samples = score_multiple_choice([doc], {doc["id"]: prediction})
    record = {"id": doc["id"], "task_type": doc.get("task_type"), "video": doc["video"],
              "score": 100.0 if samples[doc["id"]]["correct"] else 0.0, **samples[doc["id"]]}
    return {"accuracy": record, "mean_task_accuracy": record}


def stzoo_metrics(records: list[dict]) -> dict:
    entries = [{"id": record["id"], "task_type": record["task_type"]} for record in records]
    return aggregate_multiple_choice(entries, {record["id"]: record for record in records})


def accuracy(records: list[dict]) -> float:
    """Percent of questions answered right (multiple_choice.accuracy of ``stzoo eval``)."""
    return stzoo_metrics(records)["accuracy"]


def mean_task_accuracy(records: list[dict]) -> float:
    """The mean of the per-task-type accuracies (multiple_choice.mean_task_accuracy of ``stzoo eval``)."""
    return stzoo_metrics(records)["mean_task_accuracy"]
