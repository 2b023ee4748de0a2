"""One entry point for every benchmark task: score predictions, write them out, flatten for logging.

``score`` groups the entries by ``task`` and returns one dict with a group per task present
(``binary``, ``open_ended``, ``multiple_choice``, ``temporal_grounding``,
``spatial_grounding``, ``spatiotemporal_grounding``), a ``coverage`` group (``entries``,
``answered``: how many had a prediction, ``unknown_ids``: predictions naming no entry, which
when non-zero usually means predictions made for another annotation file), and ``samples``: the per-entry
results by id, which ``write_results`` puts into predictions.jsonl (beside each annotation entry) and
``flatten_metrics`` leaves out. ``aggregate`` recomputes the task metrics from those results alone. ``conversation`` entries (training data) are not scored.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from zoo.evaluation.metrics.grounding import (aggregate_spatial_grounding, aggregate_spatiotemporal_grounding,
                                              aggregate_temporal_grounding, score_spatial_grounding,
                                              score_spatiotemporal_grounding, score_temporal_grounding)
from zoo.evaluation.metrics.multiple_choice import aggregate_multiple_choice, score_multiple_choice
from zoo.evaluation.metrics.open_ended import KeywordJudge, OpenEndedJudge, aggregate_open_ended, score_open_ended
from zoo.evaluation.metrics.unscene import aggregate_binary, score_binary

SCORED_TASKS = ("binary", "open_ended", "multiple_choice", "temporal_grounding", "spatial_grounding",
                "spatiotemporal_grounding")
UNSCORED_TASKS = ("conversation",)
# Each task's metrics from its per-entry results alone (no parsing, no judge): what a bootstrap recomputes.
AGGREGATORS = {"binary": aggregate_binary, "open_ended": aggregate_open_ended, "multiple_choice": aggregate_multiple_choice,
               "temporal_grounding": aggregate_temporal_grounding, "spatial_grounding": aggregate_spatial_grounding,
               "spatiotemporal_grounding": aggregate_spatiotemporal_grounding}


def entries_by_task(entries: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for index, entry in enumerate(entries):
        task = entry.get("task")
        if task in UNSCORED_TASKS:
            continue
        if task not in SCORED_TASKS:
            raise ValueError(f"entry {index} (id {entry.get('id')!r}) has task {task!r}, which is not one of "
                             f"{', '.join(SCORED_TASKS + UNSCORED_TASKS)}")
        grouped.setdefault(task, []).append(entry)
    return {task: grouped[task] for task in SCORED_TASKS if task in grouped}


def score(entries: list[dict], predictions: dict[str, str | None], vocabulary: dict | None = None, *,
          judge: OpenEndedJudge | None = None, bins: int = 100) -> dict:
    """Metrics per task for ``predictions`` (entry id -> generated text) against ``entries``.

    Open-ended entries are judged by ``judge``, or else by a ``KeywordJudge`` over
    ``vocabulary`` (the synthetic suite's manifest["vocabulary"]). ``bins`` is the number of
    coordinate tokens per axis when predictions use LLaVA-ST-style coordinate tokens.
    """
    results: dict = {}
    samples: dict[str, dict] = {}
    for task, task_entries in entries_by_task(entries).items():
        if task == "binary":
            metrics, task_samples = score_binary(task_entries, predictions)
        elif task == "open_ended":
            if judge is None and vocabulary is None:
                raise ValueError("open_ended entries need a judge or a vocabulary (the suite manifest's 'vocabulary')")
            metrics, task_samples = score_open_ended(task_entries, predictions, judge or KeywordJudge(vocabulary))
        elif task == "multiple_choice":
            metrics, task_samples = score_multiple_choice(task_entries, predictions)
        elif task == "temporal_grounding":
            metrics, task_samples = score_temporal_grounding(task_entries, predictions, bins)
        elif task == "spatial_grounding":
            metrics, task_samples = score_spatial_grounding(task_entries, predictions, bins)
        else:
            metrics, task_samples = score_spatiotemporal_grounding(task_entries, predictions, bins)
        results[task] = metrics
        samples.update(task_samples)
    ids = {entry["id"] for entry in entries}
    results["coverage"] = {
        "entries": len(entries),
        "answered": sum(1 for entry in entries if predictions.get(entry["id"]) is not None),
        "unknown_ids": sum(1 for key in predictions if key not in ids),
    }
    results["samples"] = samples
    return results


def aggregate(entries: list[dict], samples: dict[str, dict]) -> dict:
    """The task metrics ``score`` gives, from the per-entry results it made (``samples``, by entry id)."""
    return {task: AGGREGATORS[task](task_entries, samples) for task, task_entries in entries_by_task(entries).items()}


def first_turn(entry: dict, speaker: str) -> str | None:
    return next((turn["value"] for turn in entry.get("conversations", []) if turn.get("from") == speaker), None)


def write_results(results: dict, predictions: dict[str, str | None], entries: list[dict],
                  out_dir: str | Path, provenance: dict | None = None) -> tuple[Path, Path]:
    """results.json (the metrics, and beside them what they were measured on) and predictions.jsonl (one line
    per entry) in ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = results.get("samples", {})
    metrics_path = out / "results.json"
    written = {**{k: v for k, v in results.items() if k != "samples"}, **(provenance or {})}
    metrics_path.write_text(json.dumps(written, indent=2) + "\n")
    predictions_path = out / "predictions.jsonl"
    with predictions_path.open("w") as handle:
        for entry in entries:
            line = {"id": entry["id"], "task": entry.get("task"), "split": entry.get("split"),
                    "question": first_turn(entry, "human"), "reference": first_turn(entry, "gpt"),
                    "prediction": predictions.get(entry["id"]), "score": samples.get(entry["id"]),
                    "entry": entry}  # the annotation as scored: with "score", what a bootstrap re-aggregates
            handle.write(json.dumps(line) + "\n")
    return metrics_path, predictions_path


# Counts that say how a score was computed (entries, answers missing or unparsed, questions, pairs per column,
# videos skipped), not scores to compare: runs keep them in eval/counts.json, so the metrics a run page and the
# compare view list are the losses, rates, throughput and benchmark columns.
BOOKKEEPING_GROUPS = ("coverage", "pairs", "skipped_videos")
BOOKKEEPING_LEAVES = ("count", "missing", "unparsed", "questions")


def is_bookkeeping(name: str) -> bool:
    """Whether a flattened metric name ("binary.pairs.usual.action", "multiple_choice.count") is a count."""
    parts = name.split(".")
    return parts[-1] in BOOKKEEPING_LEAVES or any(part in BOOKKEEPING_GROUPS for part in parts)


_MLFLOW_UNSAFE = re.compile(r"[^\w./\- ]")  # MLflow metric names allow only these characters


def flatten_metrics(results: dict, prefix: str = "") -> dict[str, float]:
    """Dotted names to numbers ("binary.unusual.action": 38.4), ready for mlflow.log_metrics; samples left out."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        if not prefix and key == "samples":
            continue
        name = _MLFLOW_UNSAFE.sub("_", f"{prefix}{key}")
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            flat[name] = float(value)
    return flat
