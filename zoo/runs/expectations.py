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


def judge(expectation: Expectation, seeds: dict[str, list], chance: float | None, replicates: int = REPLICATES) -> Verdict:
    """``seeds``: variant -> {seed: ScoredItems of the column's benchmark}, for the variants that ran."""
    rest = expectation.column.split(".", 1)[1]
    mine = seeds.get(expectation.variant) or {}
    if not mine:
        return Verdict(expectation, None, f"{expectation.variant} has no finished runs with per-entry results")
    if expectation.expect in ("above", "below"):
        theirs = seeds.get(expectation.than) or {}
        shared = sorted(set(mine) & set(theirs), key=str)
        if not shared:
            return Verdict(expectation, None, f"no seed where both {expectation.variant} and {expectation.than} ran")
        found = paired_differences([mine[s] for s in shared], [theirs[s] for s in shared], [rest], replicates).get(rest)
        if found is None:
            return Verdict(expectation, None, f"{expectation.column} is not among their metrics")
        held = found.low > 0 if expectation.expect == "above" else found.high < 0
        return Verdict(expectation, held, f"{expectation.variant} - {expectation.than} = {interval_text(found)}")
    if chance is None:
        return Verdict(expectation, None, f"{expectation.column} has no chance level")
    found = metric_intervals([mine[s] for s in sorted(mine, key=str)], [rest], replicates).get(rest)
    if found is None:
        return Verdict(expectation, None, f"{expectation.column} is not among {expectation.variant}'s metrics")
    if expectation.expect == "chance":
        held = chance - expectation.margin <= found.low and found.high <= chance + expectation.margin
        return Verdict(expectation, held, f"{expectation.variant} = {interval_text(found)}; chance {chance:.2f} "
                                          f"+- {expectation.margin:g}")
    return Verdict(expectation, found.low > chance, f"{expectation.variant} = {interval_text(found)}; chance {chance:.2f}")


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
