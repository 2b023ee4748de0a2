"""Expectations of an experiment file: validated when the file loads, judged on evidence by hand-built cases."""

from __future__ import annotations

import pytest
import yaml

from components.config import RecipeError
from tests.evaluation.test_bootstrap import choices, items_of
from tests.helpers import REPO
from zoo.config.experiment import Expectation, load_experiment
from zoo.runs.expectations import Estimates, judge, verdict_table

COLUMN = "mc.multiple_choice.accuracy"


def judged(expectation, seeds, chance, replicates):
    return judge(expectation, Estimates({"mc": seeds}, [COLUMN], replicates), chance)


@pytest.fixture
def seeds(tmp_path):
    """Three 'variants' on 300 four-way questions: right on 90%, on 25% (chance), and on another 24% (chance too)."""
    entries = choices(300, 4)

    def variant(name, right, offset=0):
        return {seed: items_of(entries, {e["id"]: "(A)" if (i + seed + offset) % 100 < right else "(B)"
                                         for i, e in enumerate(entries)}, tmp_path, f"{name}{seed}") for seed in (0, 1)}
    return {"good": variant("good", 90), "guess": variant("guess", 25), "guess2": variant("guess2", 24, offset=50)}


@pytest.mark.parametrize("expect,than,held", [
    ("above", "guess", True), ("below", "guess", False), ("above", "guess2", True),
    ("chance", None, False), ("above_chance", None, True),
])
def test_the_good_variant(seeds, expect, than, held):
    verdict = judged(Expectation("good", COLUMN, expect, than), seeds, 25.0, 300)
    assert verdict.held is held, verdict.evidence


def test_guessing_is_at_chance_and_two_guessers_are_not_told_apart(seeds):
    assert judged(Expectation("guess", COLUMN, "chance", margin=7.5), seeds, 25.0, 300).held is True
    # 300 items put the interval about +-4.9 points around 25: not within +-3, so no evidence of "at chance".
    assert judged(Expectation("guess", COLUMN, "chance", margin=3.0), seeds, 25.0, 300).held is False
    assert judged(Expectation("guess", COLUMN, "above_chance"), seeds, 25.0, 300).held is False
    # 25% against another 24%: the interval of the difference straddles 0, so neither "above" nor "below" holds.
    above = judged(Expectation("guess", COLUMN, "above", "guess2"), seeds, 25.0, 300)
    assert above.held is False and above.evidence.startswith("guess - guess2 = 1.00 [")
    assert judged(Expectation("guess", COLUMN, "below", "guess2"), seeds, 25.0, 300).held is False


def test_what_cannot_be_measured_is_said_so(seeds):
    assert judged(Expectation("absent", COLUMN, "chance"), seeds, 25.0, 50).held is None
    assert judged(Expectation("good", COLUMN, "chance"), seeds, None, 50).evidence == f"{COLUMN} has no chance level"
    table = verdict_table([judged(Expectation("good", COLUMN, "above_chance", why="it reads the answer"), seeds, 25.0, 50)])
    assert "1 of 1 held" in table and "| good above chance on mc.multiple_choice.accuracy | held | good = 90.00 [" in table


def write(tmp_path, expectations, columns=(COLUMN,)):
    data = yaml.safe_load((REPO / "experiments" / "mash_vlm_table5.yaml").read_text())
    data.update({"base": str(REPO / "recipes/mash_vlm.yaml"), "tiny": str(REPO / "recipes/tiny/mash_vlm.yaml"),
                 "columns": list(columns), "expectations": expectations})
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("expectation,words", [
    ({"variant": "nope", "column": COLUMN, "expect": "chance"}, r"expectations\[0\]: no variant 'nope'"),
    ({"variant": "temporal_causal.spatial_causal", "column": COLUMN, "expect": "above"}, r"'expect: above' needs 'than: VARIANT'"),
    ({"variant": "temporal_causal.spatial_causal", "column": COLUMN, "expect": "chance",
      "than": "temporal_causal.spatial_bidirectional"}, r"'expect: chance' takes no 'than:'"),
    ({"variant": "temporal_causal.spatial_causal", "column": "unscene.binary.avg", "expect": "chance"},
     r"column 'unscene\.binary\.avg' is not among the experiment's columns"),
    ({"variant": "temporal_causal.spatial_causal", "column": COLUMN, "expect": "higher"}, r"expectations\[0\]\.expect"),
])
def test_a_wrong_expectation_is_refused_when_the_file_loads(tmp_path, expectation, words):
    with pytest.raises(RecipeError, match=words):
        load_experiment(write(tmp_path, [expectation]))


def test_a_paired_comparison_tells_apart_what_unpaired_means_could_not(seeds, tmp_path):
    """Right on the same 24 items plus one more of every hundred: a 1-point gain on 300 items, told apart only
    because the pairing removes the items both get right."""
    entries = choices(300, 4)
    nested = {seed: items_of(entries, {e["id"]: "(A)" if (i + seed) % 100 < 24 else "(B)" for i, e in enumerate(entries)},
                             tmp_path, f"nested{seed}") for seed in (0, 1)}
    verdict = judged(Expectation("guess", COLUMN, "above", "nested"), {**seeds, "nested": nested}, 25.0, 300)
    assert verdict.held is True, verdict.evidence
