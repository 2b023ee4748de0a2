"""Every variant of every experiment file builds at tiny scale and runs a training step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import REPO
from tests.helpers import make_batch
from zoo.config.experiment import load_experiment
from zoo.model.video_llm import build_model

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
VARIANTS = [(path, variant) for path in EXPERIMENTS for variant in load_experiment(path).variants]


def test_every_paper_table_has_an_experiment_file():
    names = {p.stem for p in EXPERIMENTS}
    for table in ("mash_vlm_table5", "mash_vlm_table6", "mash_vlm_table7", "mash_vlm_table8", "mash_vlm_table9",
                  "mash_vlm_table10", "st_llm_table4", "st_llm_table5", "st_llm_table7", "st_llm_table8",
                  "st_llm_fig4", "llava_st_table7", "llava_st_table8", "headline", "new_mixes"):
        assert table in names


@pytest.mark.parametrize("path, variant", VARIANTS, ids=[f"{p.stem}.{v}" for p, v in VARIANTS])
def test_each_variant_builds_and_runs_a_training_step(path: Path, variant: str):
    experiment = load_experiment(path)
    recipe = experiment.recipe(variant, seed=0, scale="tiny")
    recipe.train.stages = []  # one step of the recipe's model; stages are tested in test_llava_st
    torch.manual_seed(0)
    model = build_model(recipe).train()
    frames = recipe.data.video.frames
    batch = make_batch(model, frames=frames)
    output = model(batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    paper_scale = experiment.recipe(variant, seed=0, scale="paper")
    assert paper_scale.name == recipe.name  # the same variant resolves at paper scale too
