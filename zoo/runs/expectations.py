"""An experiment's expectations checked against its runs: held, not held, or not measured, with the evidence.

``above`` / ``below``: the 95% interval of the paired difference (variant minus ``than``, over the seeds
both ran) lies wholly above / below 0. ``chance``: the variant's own 95% interval lies within the column's
chance level +- ``margin`` points (so too few items cannot pass it). ``above_chance``: that interval lies
wholly above it. An interval too wide to decide is "not held", never "held": a calibration passes only on
evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.config.experiment import Expectation
from zoo.evaluation.bootstrap import REPLICATES, Interval, metric_intervals, paired_differences


@dataclass
class Verdict:
    expectation: Expectation
    held: bool | None  # None: not measured (no runs, or no per-entry results kept)
    evidence: str

    @property
    def word(self) -> str:
        return {True: "held", False: "NOT HELD", None: "not measured"}[self.held]


def interval_text(interval: Interval) -> str:
    return f"{interval.value:.2f} [{interval.low:.2f}, {interval.high:.2f}] over {interval.seeds} seeds x {interval.items} items"


class Estimates:
    """Bootstrap intervals, computed once per (variant, other variant, benchmark) for all of the benchmark's
    columns and read column by column: the difference table and the expectations share them."""

    def __init__(self, seeds: dict[str, dict[str, dict]], columns: list[str], replicates: int = REPLICATES):
        self.seeds = seeds  # benchmark -> variant -> {seed: ScoredItems}, for the runs that kept per-entry results
        self.columns = columns
        self.replicates = replicates
        self.cache: dict[tuple, dict[str, Interval]] = {}

    def rests(self, benchmark: str) -> list[str]:
        return [column.split(".", 1)[1] for column in self.columns if column.startswith(benchmark + ".")]

    def difference(self, variant: str, than: str, column: str) -> Interval | None:
        """``variant`` minus ``than`` over the seeds both kept; None when they share none."""
        benchmark, rest = column.split(".", 1)
        key = (variant, than, benchmark)
        if key not in self.cache:
            mine, theirs = self.seeds.get(benchmark, {}).get(variant, {}), self.seeds.get(benchmark, {}).get(than, {})
            shared = sorted(set(mine) & set(theirs), key=str)
            self.cache[key] = paired_differences([mine[s] for s in shared], [theirs[s] for s in shared],
                                                 self.rests(benchmark), self.replicates) if shared else {}
        return self.cache[key].get(rest)

    def value(self, variant: str, column: str) -> Interval | None:
        benchmark, rest = column.split(".", 1)
        key = (variant, None, benchmark)
        if key not in self.cache:
            mine = self.seeds.get(benchmark, {}).get(variant, {})
            self.cache[key] = metric_intervals([mine[s] for s in sorted(mine, key=str)], self.rests(benchmark),
                                               self.replicates) if mine else {}
        return self.cache[key].get(rest)


def judge(expectation: Expectation, estimates: Estimates, chance: float | None) -> Verdict:
    column, variant = expectation.column, expectation.variant
    if expectation.expect in ("above", "below"):
        found = estimates.difference(variant, expectation.than, column)
        if found is None:
            return Verdict(expectation, None, f"no seed where both {variant} and {expectation.than} kept per-entry "
                                              f"results with {column}")
        held = found.low > 0 if expectation.expect == "above" else found.high < 0
        return Verdict(expectation, held, f"{variant} - {expectation.than} = {interval_text(found)}")
    if chance is None:
        return Verdict(expectation, None, f"{column} has no chance level")
    found = estimates.value(variant, column)
    if found is None:
        return Verdict(expectation, None, f"{variant} has no finished runs with per-entry results with {column}")
    if expectation.expect == "chance":
        held = chance - expectation.margin <= found.low and found.high <= chance + expectation.margin
        return Verdict(expectation, held, f"{variant} = {interval_text(found)}; chance {chance:.2f} +- {expectation.margin:g}")
    return Verdict(expectation, found.low > chance, f"{variant} = {interval_text(found)}; chance {chance:.2f}")


def statement(expectation: Expectation) -> str:
    than = {"above": f"above {expectation.than}", "below": f"below {expectation.than}", "chance": "at chance",
            "above_chance": "above chance"}[expectation.expect]
    return f"{expectation.variant} {than} on {expectation.column}"


def verdict_table(verdicts: list[Verdict]) -> str:
    held = sum(v.held is True for v in verdicts)
    lines = [f"Expectations ({held} of {len(verdicts)} held; 95% intervals from the bootstrap over test items):", "",
             "| expectation | result | evidence | why |", "|---|---|---|---|"]
    lines += [f"| {statement(v.expectation)} | {v.word} | {v.evidence} | {v.expectation.why} |" for v in verdicts]
    return "\n".join(lines)
