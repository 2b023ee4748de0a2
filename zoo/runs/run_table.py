"""A table of single runs (one row each, e.g. the demo's four recipes): each cell the run's score with its 95%
interval from a bootstrap over the test items, and rows giving each column's chance level and test items.

With one run per row there is no spread over seeds to show: the interval says how much the test items alone
move the score, so two rows whose intervals overlap are not told apart by this table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from zoo.evaluation.bootstrap import Interval, ScoredItems, metric_intervals
from zoo.runs.compare import chance_and_items, scored_items
from zoo.runs.tables import Column, format_number

REPLICATES = 500  # a demo's table: percentiles of 500 draws move by well under a point


def kept_items(uri: str, run, benchmarks: list[str], scratch: Path) -> dict[str, ScoredItems]:
    """Benchmark -> the run's per-entry results, for the benchmarks whose results the run kept."""
    found = {benchmark: scored_items(uri, run, benchmark, scratch / run.info.run_id / benchmark) for benchmark in benchmarks}
    return {benchmark: items for benchmark, items in found.items() if items is not None}


def run_intervals(kept: dict[str, ScoredItems], columns: list[Column], replicates: int) -> dict[str, Interval]:
    """Column key -> the run's score and its interval."""
    found: dict[str, Interval] = {}
    for benchmark, items in kept.items():
        rests = [c.key.split(".", 1)[1] for c in columns if c.key.startswith(benchmark + ".")]
        found.update({f"{benchmark}.{rest}": interval for rest, interval in metric_intervals([items], rests, replicates).items()})
    return found


def cell(run, column: Column, intervals: dict[str, Interval]) -> str:
    if column.key in intervals:
        found = intervals[column.key]
        return f"{found.value:.2f} [{found.low:.2f}, {found.high:.2f}]"
    value = run.data.metrics.get(column.key)
    return "missing" if value is None else f"{value:.2f} (no interval: no per-entry results kept)"


def run_table(uri: str, rows: list[tuple[str, object]], columns: list[Column], first: str = "run",
              replicates: int = REPLICATES) -> str:
    """``rows``: (label, MLflow run) pairs. Markdown: one row per run, then the chance and test-item rows."""
    benchmarks = sorted({c.key.split(".", 1)[0] for c in columns if "." in c.key})
    lines = ["| " + " | ".join([first] + [c.title for c in columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    with tempfile.TemporaryDirectory() as scratch:
        kept_by_row = [kept_items(uri, run, benchmarks, Path(scratch)) for _, run in rows]
    for (label, run), kept in zip(rows, kept_by_row):
        intervals = run_intervals(kept, columns, replicates)
        lines.append("| " + " | ".join([label] + [cell(run, c, intervals) for c in columns]) + " |")
    first_kept: dict[str, ScoredItems] = {}
    for kept in kept_by_row:
        for benchmark, items in kept.items():
            first_kept.setdefault(benchmark, items)
    chance, items = chance_and_items(columns, first_kept)
    lines.append("| chance | " + " | ".join(format_number(chance.get(c.key)) if c.key in items else "?" for c in columns) + " |")
    lines.append("| test items | " + " | ".join(str(items.get(c.key, "?")) for c in columns) + " |")
    return "\n".join(lines)
