"""The tiny LLaVA-ST learns temporal grounding: held-out mean temporal IoU clearly above predicting
the training set's mean span for every video."""

from __future__ import annotations

import json

import pytest

from evals.grounding import temporal_iou
from videodata.action_scene import SuiteOptions, generate_suite
from zoo.evaluation import evaluate
from zoo.recipe import load_recipe
from zoo.train import Trainer

pytestmark = pytest.mark.slow


def test_tiny_llava_st_localises_the_actor_in_time(tmp_path):
    suite = tmp_path / "suite"
    generate_suite(suite, seed=5, videos=240, options=SuiteOptions(train_share=0.75, seconds=2.0))
    entries = json.loads((suite / "test_grounding.json").read_text())
    temporal = [e for e in entries if e["task"] == "temporal_grounding"]
    (suite / "test_temporal.json").write_text(json.dumps(temporal))
    recipe = load_recipe("recipes/tiny/llava_st.yaml", [
        "train.stages=[]", f"data.train={suite}/train_grounding.json", "data.train_tasks=[temporal_grounding]",
        "data.eval={}", "data.synthetic=null", "train.max_steps=300", "train.progress_bar=false",
    ])
    trainer = Trainer(recipe, output_dir=tmp_path / "run", device="cpu")
    trainer.fit()
    results = evaluate(trainer.model.eval(), suite / "test_temporal.json", max_samples=40, max_new_tokens=24)
    learned = results["temporal_grounding"]["miou"]

    training = [e["target"]["span"] for e in json.loads((suite / "train_grounding.json").read_text())
                if e["task"] == "temporal_grounding"]
    constant = (sum(s for s, _ in training) / len(training), sum(e for _, e in training) / len(training))
    baseline = 100 * sum(temporal_iou(constant, tuple(e["target"]["span"])) for e in temporal[:40]) / len(temporal[:40])
    assert learned > baseline + 10, (learned, baseline)
