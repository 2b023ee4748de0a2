"""Every experiment file's columns name metrics its runs log (issue 17: 11 of 15 printed tables of '-').

The names a run logs come from the evaluation code: each benchmark of the variant's tiny recipe is
scored (with no answers) on a small suite drawn here, and named as run_recipe names them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.config import RecipeError
from tests.helpers import REPO
from zoo.config.experiment import load_experiment
from zoo.data.action_scene import SuiteOptions, generate_suite
from zoo.evaluation.metrics.scoring import flatten_metrics, score
from zoo.runs.compare import check_columns
from zoo.runs.run_recipe import flat_metrics

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suite")
    generate_suite(out, seed=3, videos=40, options=SuiteOptions(train_share=0.0, height=32, width=32, seconds=0.5),
                   calibration_videos=20)
    return out


def logged_names(experiment, suite: Path) -> set[str]:
    vocabulary = json.loads((suite / "manifest.json").read_text())["vocabulary"]
    names = set()
    for variant in experiment.variants:
        recipe = experiment.recipe(variant, scale="tiny")
        results = {}
        for benchmark, path in recipe.data.eval.items():
            entries = json.loads((suite / Path(path).name).read_text())
            results[benchmark] = flatten_metrics(score(entries, {}, vocabulary))
        names |= set(flat_metrics(results))
    return names


def test_there_are_experiment_files():
    assert len(EXPERIMENTS) >= 15


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_column_names_a_metric_the_variants_log(path, suite):
    experiment = load_experiment(path)
    assert experiment.columns, f"{path.name} lists no columns"
    check_columns(experiment, experiment.columns, logged_names(experiment, suite))


def test_a_column_without_its_benchmark_is_refused_naming_the_logged_name(suite):
    experiment = load_experiment(REPO / "experiments" / "mash_vlm_table5.yaml")
    logged = logged_names(experiment, suite)
    with pytest.raises(RecipeError, match=r"mash_vlm_table5\.yaml: columns: 'binary\.avg' matches no metric the runs "
                                          r"logged; the runs logged unscene\.binary\.avg"):
        check_columns(experiment, ["binary.avg"], logged)
    with pytest.raises(RecipeError, match=r"'mc\.multiple_choice\.acuracy' matches no metric the runs logged; the runs "
                                          r"logged mc\.multiple_choice\.accuracy"):
        check_columns(experiment, ["mc.multiple_choice.acuracy"], logged)
