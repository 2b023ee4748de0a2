"""The suite exposes the bias it was made to expose: a tiny baseline trained on the biased train split
describes actions well on usual videos and hallucinates on unusual-context and scene-only ones."""

from __future__ import annotations

import pytest

from zoo.evaluation.benchmark import evaluate
from zoo.config.recipe import load_recipe
from zoo.training.trainer import Trainer

pytestmark = pytest.mark.slow


def test_a_tiny_baseline_hallucinates_where_the_scene_misleads(tmp_path):
    suite = tmp_path / "suite"
    recipe = load_recipe("recipes/tiny/baseline.yaml", [
        f"data.synthetic.out={suite}", f"data.train={suite}/train.json", "data.eval={}",
        "train.max_steps=350", "train.progress_bar=false",
    ])
    trainer = Trainer(recipe, output_dir=tmp_path / "run", device="cpu")
    trainer.fit()
    results = evaluate(trainer.model.eval(), suite / "test_open.json", max_samples=96)["open_ended"]
    usual, unusual, scene_only = results["usual.action"], results["unusual.action"], results["scene_only.action"]
    assert usual >= 2.5, results  # it learned the actions where scene and action agree
    assert unusual <= usual - 1.5 and scene_only <= usual - 1.5, results  # and leans on the scene elsewhere
