"""Tables of runs read back from MLflow: one row per run (or per variant, over seeds), benchmark columns."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Column:
    key: str  # the MLflow metric name, e.g. "unscene.binary.avg"
    title: str


def top_level_runs(client, experiment_name: str):
    """The experiment's runs that are not a child of another (stages are children of their recipe's run)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000)
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_cell(values: list[float]) -> str:
    if not values:
        return "missing"  # not logged by any run of this row: never shown as a number
    mean, spread = mean_and_spread(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {spread:.2f}"


def markdown_table(rows: list[tuple[str, dict[str, list[float]]]], columns: list[Column], first: str = "run",
                   best: bool = True, seeds: bool = False) -> str:
    """Rows of (label, {metric key: values over seeds}); the best mean of each column is bold; ``seeds`` adds
    a column with each row's number of seeds."""
    best_of = {}
    if best:
        for column in columns:
            means = [mean_and_spread(values[column.key])[0] for _, values in rows if values.get(column.key)]
            best_of[column.key] = max(means) if means else None
    lines = ["| " + " | ".join([first] + (["seeds"] if seeds else []) + [c.title for c in columns]) + " |",
             "|" + "---|" * (len(columns) + 1 + seeds)]
    for label, values in rows:
        cells = []
        for column in columns:
            cell = format_cell(values.get(column.key, []))
            if best and values.get(column.key) and len(rows) > 1 and mean_and_spread(values[column.key])[0] == best_of[column.key]:
                cell = f"**{cell}**"
            cells.append(cell)
        count = [str(max((len(values.get(c.key, [])) for c in columns), default=0))] if seeds else []
        lines.append("| " + " | ".join([label] + count + cells) + " |")
    return "\n".join(lines)
