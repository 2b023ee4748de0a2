"""Paper-scale recipes check out on the meta device in seconds: parameters and visual tokens as the papers say."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

# recipe -> (visual tokens per sample, parameters in billions (low, high))
EXPECTED = {
    "baseline": (16 * 576, (6.8, 7.3)),          # Vicuna-7B + CLIP-L/14-336 (23 of 24 layers) + MLP
    "mash_vlm": (576 + 47, (6.8, 7.3)),          # N = 576 spatial + M = 3T - 1 = 47 temporal
    "st_llm": (16 * 32, (7.6, 8.2)),             # + EVA ViT-g and Q-Former
    "st_llm_long": (16 * 32, (7.6, 8.2)),        # 16 local frames of 32 queries (64 global frames averaged in)
    "llava_st": (900 + 1620, (8.0, 8.7)),        # Qwen2-7B + SigLIP so400m + packer + LoRA r128
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_meta_build_reports_the_papers_sizes(name):
    result = subprocess.run([sys.executable, "-m", "zoo.cli", "build", f"recipes/{name}.yaml", "--meta", "--json"],
                            capture_output=True, text=True, cwd=REPO, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    tokens, (low, high) = EXPECTED[name]
    assert summary["visual_tokens"] == tokens
    assert low * 1e9 < summary["params"]["total"] < high * 1e9
    assert summary["build_seconds"] < 60
    assert summary["sequence_length"] == tokens + summary["text_tokens"]["count"]
    cost = summary["cost"]
    trained = summary["params"]["trainable"]
    # At least 6 FLOPs per trained weight and token (forward 2, backward 4), and ZeRO-3 shards what ZeRO-2 keeps whole.
    assert cost["train_flops_per_sample"] > 6 * trained * tokens
    assert 0 < cost["zero3_model_states_gib_per_gpu"] < cost["zero2_model_states_gib_per_gpu"]


def test_step_cost_on_a_hand_counted_model():
    from tests.helpers import tiny_recipe
    from zoo.model.cost import training_step_cost
    from zoo.model.video_llm import build_model
    from zoo.config.recipe import recipe_from_dict

    model = build_model(recipe_from_dict(tiny_recipe(frames=4)))
    cost = training_step_cost(model, world_size=2, gradient_checkpointing=False)
    llm = sum(p.numel() for p in model.llm.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    rest = sum(p.numel() for p in model.projector.parameters())
    tokens = 64 + 4 * 16
    expected = (2 * llm * tokens + 4 * tokens**2 * 64 * 2) + (4 * llm * tokens + 8 * tokens**2 * 64 * 2) \
        + 2 * encoder * 4 * 17 + 6 * rest * 4 * 16
    assert cost.tokens == tokens and cost.flops == pytest.approx(expected)
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert cost.zero2_gib == pytest.approx((2 * total + 14 * trained / 2) / 1024**3)
