"""95% intervals for benchmark metrics and for differences between models, by resampling test items.

The unit drawn is what a metric scores as one: an UNSCENE pair (its two questions together), any other
entry alone. Units are drawn with replacement within each stratum (task, split, question kind or task type), so
every column keeps its number of items. Each draw is re-aggregated by the evaluation's own code
(``zoo.evaluation.metrics.scoring.aggregate``) from the per-entry results saved in predictions.jsonl:
nothing is parsed or judged again, and every column the evaluation logs has an interval.

Two models evaluated on the same items are compared on the same draws (paired): the items' own
difficulty cancels out of the difference. Seeds are scored on the same test items, so one draw of the
items applies to every seed; each draw's value (or difference) is averaged across the seeds, and the
interval is the 2.5 and 97.5 percentiles of that mean:
it says how much the test items alone could move the result; the spread between seeds is reported
beside it as a standard deviation, not folded in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.evaluation.chance import column_items
from zoo.evaluation.metrics.scoring import aggregate, flatten_metrics

REPLICATES = 1000


@dataclass
class ScoredItems:
    """One evaluation's entries and per-entry results, as predictions.jsonl keeps them."""

    entries: list[dict]
    samples: dict[str, dict]

    @classmethod
    def read(cls, path: str | Path) -> "ScoredItems | None":
        """None when the file predates per-entry annotations (no "entry" field): no interval can be drawn."""
        entries, samples = [], {}
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            if "entry" not in record or record.get("score") is None:
                return None
            entries.append(record["entry"])
            samples[record["id"]] = record["score"]
        return cls(entries, samples)

    def units(self) -> dict[str, list[dict]]:
        """unit key -> its entries, in file order."""
        units: dict[str, list[dict]] = {}
        for entry in self.entries:
            units.setdefault(unit_key(entry), []).append(entry)
        return units

    def metrics(self) -> dict[str, float]:
        return flatten_metrics(aggregate(self.entries, self.samples))


def unit_key(entry: dict) -> str:
    if entry.get("task") == "binary" and entry.get("pair_id") is not None:
        return f"pair:{entry['pair_id']}"
    return f"id:{entry['id']}"


def stratum(entry: dict) -> tuple:
    """What a column counts over: task, split, and the question kind (binary) or task type (multiple choice)."""
    return (entry.get("task"), entry.get("split"), entry.get("question_type"), entry.get("task_type"))


def strata(unit_entries: dict[str, list[dict]]) -> list[list[str]]:
    """The unit keys of each stratum, sorted, so one draw means the same items for every model and seed."""
    grouped: dict[tuple, list[str]] = {}
    for key, members in unit_entries.items():
        grouped.setdefault(stratum(members[0]), []).append(key)
    return [sorted(keys) for _, keys in sorted(grouped.items(), key=lambda item: str(item[0]))]


def draws(common: list[list[str]], replicates: int, seed: int) -> list[list[str]]:
    """``replicates`` lists of unit keys, each stratum drawn with replacement to its own size."""
    rng = np.random.default_rng(seed)
    return [[keys[i] for keys in common for i in rng.integers(0, len(keys), len(keys))] for _ in range(replicates)]


def resampled_items(items: ScoredItems, units: dict[str, list[dict]], draw: list[str]) -> ScoredItems:
    """The drawn units as entries of their own: the k-th copy of a unit gets ids (and pair id) suffixed ~k."""
    entries, samples, copies = [], {}, {}
    for key in draw:
        k = copies[key] = copies.get(key, -1) + 1
        for entry in units[key]:
            copy = {**entry, "id": f"{entry['id']}~{k}"}
            if "pair_id" in entry:
                copy["pair_id"] = f"{entry['pair_id']}~{k}"
            entries.append(copy)
            samples[copy["id"]] = items.samples[entry["id"]]
    return ScoredItems(entries, samples)


def replicate_values(items: ScoredItems, columns: list[str], sampled: list[list[str]]) -> np.ndarray:
    """(replicates, columns): each column (a flat metric name) on each draw; NaN where a draw lacks it."""
    units = items.units()
    values = np.full((len(sampled), len(columns)), np.nan)
    for r, draw in enumerate(sampled):
        metrics = resampled_items(items, units, draw).metrics()
        values[r] = [metrics.get(column, np.nan) for column in columns]
    return values


@dataclass
class Interval:
    """A value over seeds (a metric, or a variant minus another) and its 95% bootstrap interval."""

    value: float
    low: float
    high: float
    seeds: int
    items: int  # test items the column counts, shared by every seed compared

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


class SeedEstimates:
    """Per column: the value on each seed's items and its values on the shared draws; then combined."""

    def __init__(self, columns: list[str]):
        self.columns = columns
        self.point: dict[str, list[float]] = {column: [] for column in columns}
        self.replicated: dict[str, list[np.ndarray]] = {column: [] for column in columns}
        self.entries: list[dict] = []  # the shared items, to count each column's own

    def add(self, values: dict[str, float], replicated: np.ndarray) -> None:
        for c, column in enumerate(self.columns):
            if column in values:
                self.point[column].append(values[column])
                self.replicated[column].append(replicated[:, c])

    def intervals(self) -> dict[str, Interval]:
        """The mean over seeds and the 2.5 / 97.5 percentiles of the draws' means over seeds; no interval for a
        column some draw lacks."""
        found = {}
        for column in self.columns:
            if not self.point[column]:
                continue
            means = np.mean(np.stack(self.replicated[column]), axis=0)
            if np.isnan(means).any():
                continue
            low, high = np.percentile(means, [2.5, 97.5])
            found[column] = Interval(float(np.mean(self.point[column])), float(low), float(high),
                                     len(self.point[column]), column_items(self.entries, column))
        return found


def restricted(items: ScoredItems, keys: list[str]) -> ScoredItems:
    units = items.units()
    return ScoredItems([entry for key in keys for entry in units[key]], items.samples)


def shared_units(seeds: list[ScoredItems]) -> list[str]:
    """The units every one of ``seeds`` was scored on (all of them, when the test set is the same)."""
    common = set(seeds[0].units())
    for items in seeds[1:]:
        common &= set(items.units())
    return sorted(common)


def paired_differences(variant: list[ScoredItems], reference: list[ScoredItems], columns: list[str],
                       replicates: int = REPLICATES, seed: int = 0) -> dict[str, Interval]:
    """Each column's difference, variant minus reference (one ScoredItems per seed, the same seed order), on the
    items all of them share; a column missing from either side's metrics gets none."""
    if not variant or not reference:
        return {}
    keys = shared_units(list(variant) + list(reference))
    if not keys:
        return {}
    ours_all = [restricted(items, keys) for items in variant]
    sampled = draws(strata(ours_all[0].units()), replicates, seed)
    estimates = SeedEstimates(columns)
    estimates.entries = ours_all[0].entries
    for ours, theirs in zip(ours_all, (restricted(items, keys) for items in reference)):
        a, b = ours.metrics(), theirs.metrics()
        differences = {column: a[column] - b[column] for column in columns if column in a and column in b}
        estimates.add(differences, replicate_values(ours, columns, sampled) - replicate_values(theirs, columns, sampled))
    return estimates.intervals()


def metric_intervals(seeds: list[ScoredItems], columns: list[str], replicates: int = REPLICATES,
                     seed: int = 0) -> dict[str, Interval]:
    """Each column's mean over seeds with its 95% interval, on the items every seed shares."""
    if not seeds:
        return {}
    keys = shared_units(seeds)
    kept = [restricted(items, keys) for items in seeds]
    sampled = draws(strata(kept[0].units()), replicates, seed)
    estimates = SeedEstimates(columns)
    estimates.entries = kept[0].entries
    for items in kept:
        estimates.add(items.metrics(), replicate_values(items, columns, sampled))
    return estimates.intervals()
