"""Intervals and chance levels: hand-computed cases, and the bootstrap against the binomial it estimates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from zoo.evaluation.bootstrap import ScoredItems, draws, metric_intervals, paired_differences, resampled_items, strata
from zoo.evaluation.chance import chance_level, column_items
from zoo.evaluation.metrics.scoring import aggregate, flatten_metrics, score, write_results


def binary_pairs(count: int, split: str = "unusual") -> list[dict]:
    entries = []
    for p in range(count):
        for answer in ("yes", "no"):
            entries.append({"id": f"{split}{p}{answer}", "task": "binary", "split": split, "question_type": "action",
                            "pair_id": f"{split}{p}", "answer": answer,
                            "conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": answer}]})
    return entries


def choices(count: int, options: int, task_type: str = "action") -> list[dict]:
    return [{"id": f"mc{task_type}{i}", "task": "multiple_choice", "split": "unusual", "task_type": task_type,
             "candidates": [f"option {k}" for k in range(options)], "answer": "option 0",
             "conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": "(A)"}]} for i in range(count)]


def items_of(entries, predictions, tmp_path, name="run") -> ScoredItems:
    results = score(entries, predictions)
    write_results(results, predictions, entries, tmp_path / name)
    return ScoredItems.read(tmp_path / name / "predictions.jsonl")


def test_aggregate_gives_what_score_gives_from_the_saved_results(tmp_path):
    entries = binary_pairs(5) + binary_pairs(3, "scene_only") + choices(6, 4)
    predictions = {e["id"]: ("yes" if i % 3 else "no") if e["task"] == "binary" else "(A)" if i % 2 else "(C)"
                   for i, e in enumerate(entries)}
    results = score(entries, predictions)
    items = items_of(entries, predictions, tmp_path)
    assert items.metrics() == flatten_metrics({k: v for k, v in results.items() if k != "coverage"})
    assert flatten_metrics(aggregate(entries, results["samples"])) == items.metrics()


def test_a_pair_is_resampled_whole_and_copies_stay_distinct(tmp_path):
    entries = binary_pairs(3)
    items = items_of(entries, {e["id"]: "yes" for e in entries}, tmp_path)
    units = items.units()
    assert sorted(units) == ["pair:unusual0", "pair:unusual1", "pair:unusual2"] and all(len(u) == 2 for u in units.values())
    drawn = resampled_items(items, units, ["pair:unusual1", "pair:unusual1", "pair:unusual2"])
    assert [e["pair_id"] for e in drawn.entries] == ["unusual1~0", "unusual1~0", "unusual1~1", "unusual1~1", "unusual2~0", "unusual2~0"]
    assert len({e["id"] for e in drawn.entries}) == 6
    assert drawn.metrics()["binary.pairs.unusual.action"] == 3


def test_strata_keep_each_split_at_its_size():
    entries = binary_pairs(4) + binary_pairs(2, "scene_only")
    units = ScoredItems(entries, {}).units()
    groups = strata(units)
    assert sorted(len(g) for g in groups) == [2, 4]
    for draw in draws(groups, 20, seed=1):
        assert sum(k.startswith("pair:scene_only") for k in draw) == 2 and len(draw) == 6


def test_identical_answers_differ_by_exactly_zero(tmp_path):
    entries = binary_pairs(20)
    predictions = {e["id"]: "yes" if i % 3 else "no" for i, e in enumerate(entries)}
    a, b = items_of(entries, predictions, tmp_path, "a"), items_of(entries, predictions, tmp_path, "b")
    found = paired_differences([a], [b], ["binary.unusual.action"], replicates=200)["binary.unusual.action"]
    assert (found.value, found.low, found.high, found.excludes_zero) == (0.0, 0.0, 0.0, False)


def test_the_interval_of_an_accuracy_difference_matches_the_binomial(tmp_path):
    """Model A right on 60% of 400 questions, B right on a disjoint 40%: the difference is +20 points; its
    paired standard error is sqrt(p_discordant / n - (a - b)^2 / n) = sqrt((1.0 - 0.04) / 400) = 4.90 points."""
    entries = choices(400, 4)
    a = {e["id"]: "(A)" if i < 240 else "(B)" for i, e in enumerate(entries)}
    b = {e["id"]: "(A)" if i >= 240 else "(B)" for i, e in enumerate(entries)}
    found = paired_differences([items_of(entries, a, tmp_path, "a")], [items_of(entries, b, tmp_path, "b")],
                               ["multiple_choice.accuracy"], replicates=2000, seed=3)["multiple_choice.accuracy"]
    assert found.value == pytest.approx(20.0)
    half_width = 1.96 * 100 * math.sqrt((1.0 - 0.2**2) / 400)
    assert (found.high - found.low) / 2 == pytest.approx(half_width, rel=0.1)
    assert found.excludes_zero and found.items == 400


def test_seeds_are_averaged_and_a_seed_only_one_side_ran_is_left_out(tmp_path):
    entries = choices(50, 2)
    right = {e["id"]: "(A)" for e in entries}
    wrong = {e["id"]: "(B)" for e in entries}
    half = {e["id"]: "(A)" if i % 2 else "(B)" for i, e in enumerate(entries)}
    ours = [items_of(entries, right, tmp_path, "r0"), items_of(entries, half, tmp_path, "h1")]
    theirs = [items_of(entries, wrong, tmp_path, "w0"), items_of(entries, wrong, tmp_path, "w1")]
    found = paired_differences(ours, theirs, ["multiple_choice.accuracy"], replicates=300)["multiple_choice.accuracy"]
    assert found.value == pytest.approx((100 + 50) / 2) and found.seeds == 2
    assert paired_differences(ours[:1], theirs, ["multiple_choice.accuracy"], replicates=50)["multiple_choice.accuracy"].seeds == 1


def test_a_file_without_entries_has_no_items(tmp_path):
    (tmp_path / "old.jsonl").write_text(json.dumps({"id": "x", "prediction": "yes", "score": {"correct": True}}) + "\n")
    assert ScoredItems.read(tmp_path / "old.jsonl") is None


def test_chance_levels_by_hand():
    entries = binary_pairs(4) + binary_pairs(2, "scene_only") + choices(3, 4) + choices(1, 2, "scene")
    assert chance_level(entries, "binary.unusual.action") == 25.0
    assert chance_level(entries, "binary.avg") == 25.0
    assert chance_level(entries, "binary.single_question_accuracy.unusual.action") == 50.0
    assert chance_level(entries, "multiple_choice.accuracy") == pytest.approx((3 * 25 + 50) / 4)
    assert chance_level(entries, "multiple_choice.mean_task_accuracy") == pytest.approx((25 + 50) / 2)
    assert chance_level(entries, "multiple_choice.by_task_type.scene") == 50.0
    assert chance_level(entries, "open_ended.avg") is None
    assert chance_level(entries, "binary.usual.action") is None  # no such split in the data


def test_a_model_answering_at_random_scores_near_chance(tmp_path):
    rng = np.random.default_rng(0)
    entries = binary_pairs(2000)
    metrics = items_of(entries, {e["id"]: "yes" if rng.random() < 0.5 else "no" for e in entries}, tmp_path).metrics()
    assert abs(metrics["binary.unusual.action"] - chance_level(entries, "binary.unusual.action")) < 3


def test_a_metric_interval_covers_the_binomial(tmp_path):
    entries = choices(400, 4)
    items = items_of(entries, {e["id"]: "(A)" if i < 100 else "(B)" for i, e in enumerate(entries)}, tmp_path)
    found = metric_intervals([items], ["multiple_choice.accuracy"], replicates=2000, seed=5)["multiple_choice.accuracy"]
    half_width = 1.96 * 100 * math.sqrt(0.25 * 0.75 / 400)
    assert found.value == 25.0 and (found.high - found.low) / 2 == pytest.approx(half_width, rel=0.1)


def test_seeds_share_the_draws_of_the_items_they_share(tmp_path):
    """Seeds are scored on the same items: three copies of one seed carry no more evidence than one."""
    entries = choices(200, 2)
    one = items_of(entries, {e["id"]: "(A)" if i % 2 else "(B)" for i, e in enumerate(entries)}, tmp_path)
    alone = metric_intervals([one], ["multiple_choice.accuracy"], replicates=500)["multiple_choice.accuracy"]
    thrice = metric_intervals([one, one, one], ["multiple_choice.accuracy"], replicates=500)["multiple_choice.accuracy"]
    assert (thrice.low, thrice.high) == (alone.low, alone.high) and thrice.seeds == 3


def test_a_rare_task_type_keeps_its_size_in_every_draw_and_columns_count_their_own_items(tmp_path):
    entries = choices(97, 4) + choices(3, 4, "rare")
    items = items_of(entries, {e["id"]: "(A)" if i % 3 else "(B)" for i, e in enumerate(entries)}, tmp_path)
    found = metric_intervals([items], ["multiple_choice.by_task_type.rare", "multiple_choice.accuracy"], replicates=300)
    rare = found["multiple_choice.by_task_type.rare"]
    assert not math.isnan(rare.low) and rare.items == 3 and found["multiple_choice.accuracy"].items == 100
    pairs = binary_pairs(4) + binary_pairs(2, "scene_only")
    assert column_items(pairs, "binary.unusual.action") == 4 and column_items(pairs, "binary.avg") == 6
    assert column_items(pairs, "binary.single_question_accuracy.scene_only.action") == 4
    assert chance_level(pairs, "binary.single_question_accuracy.usual.action") is None
