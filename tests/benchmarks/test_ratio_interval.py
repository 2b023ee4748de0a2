"""The interval the benchmarks state beside each ratio, against hand-computed order statistics."""

import random

import pytest

from benchmarks.ratio_interval import median_interval, paired_ratio


def test_fifteen_rounds_give_the_4th_and_12th_values_at_96_5_percent():
    values = [float(v) for v in range(1, 16)]
    random.Random(0).shuffle(values)
    interval = median_interval(values)
    # P(Binomial(15, 1/2) < 4) = (1 + 15 + 105 + 455) / 2^15; the 5th and 11th would cover only 88.2%.
    assert (interval.median, interval.low, interval.high) == (8.0, 4.0, 12.0)
    assert interval.coverage == pytest.approx(1 - 2 * 576 / 2**15)


def test_too_few_rounds_fall_back_to_the_extremes_and_say_their_coverage():
    interval = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (interval.low, interval.high) == (1.0, 5.0)
    assert interval.coverage == pytest.approx(1 - 2 / 32)  # below 95%: five rounds cannot reach it


def test_ratios_are_paired_round_by_round():
    # Round 2 was slow for both paths alike: paired, the ratio is 1.1 in every round.
    interval = paired_ratio([1.1, 2.2, 1.1, 1.1, 1.1, 1.1, 1.1], [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert interval.median == pytest.approx(1.1) and interval.high == pytest.approx(1.1)
    assert str(interval) == "1.100 [1.100, 1.100]"
    with pytest.raises(ValueError, match="differ in number"):
        paired_ratio([1.0, 2.0], [1.0])
