"""A ratio between two timed paths as the benchmarks state it: the median of per-round ratios (both paths timed in
the same round, so a slow spell of this shared machine falls on both alike) with a distribution-free interval for
that median. One median of a few rounds moved by +-0.05 from run to run here; a target is read against the interval."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class MedianInterval:
    median: float
    low: float
    high: float
    coverage: float  # the probability that [low, high] holds the true median

    def __str__(self) -> str:
        return self.rounded(3)

    def rounded(self, digits: int) -> str:
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def median_interval(values: list[float], level: float = 0.95) -> MedianInterval:
    """The median of ``values`` and the order statistics x_(k), x_(n+1-k) around it for the largest k whose
    coverage 1 - 2 P(Binomial(n, 1/2) < k) is at least ``level`` (15 values: the 4th and the 12th, 96.5%); with
    too few values for ``level``, the least and the greatest, and their coverage."""
    ordered, n = sorted(values), len(values)
    coverage = lambda k: 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n  # noqa: E731
    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return MedianInterval(statistics.median(values), ordered[k - 1], ordered[n - k], coverage(k))


def paired_ratio(numerators: list[float], denominators: list[float], level: float = 0.95) -> MedianInterval:
    """Round by round numerator / denominator (two paths timed in the same rounds), as a median with its interval."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired rounds differ in number: {len(numerators)} and {len(denominators)}")
    return median_interval([a / b for a, b in zip(numerators, denominators)], level)
