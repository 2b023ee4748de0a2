"""MASH-VLM Fig. 6: the share of the answers' attention on each token kind, per question type."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_recipe
from zoo.data.action_scene import SuiteOptions, generate_suite
from zoo.evaluation.attention_share import answer_attention, write_attention_report
from zoo.model.video_llm import build_model
from zoo.config.recipe import recipe_from_dict


def test_answer_attention_splits_by_question_type_and_kind(tmp_path):
    generate_suite(tmp_path, seed=4, videos=12, options=SuiteOptions(train_share=0.0, seconds=1.0))
    data = tiny_recipe(frames=8, compressor="mash_pooling", mask="dst", position="harmonic_rope")
    torch.manual_seed(0)
    model = build_model(recipe_from_dict(data))
    shares = answer_attention(model, tmp_path / "test_binary.json", max_samples=16)
    assert set(shares) == {"action", "scene"}
    for kinds in shares.values():
        assert {"text", "spatial", "temporal"} <= set(kinds)
        assert sum(kinds.values()) == pytest.approx(1.0, abs=1e-4)  # every key the answers can see, once
        assert 0 < kinds["spatial"] < 1 and 0 < kinds["temporal"] < 1
    assert model.llm.attn_implementation == "sdpa"  # switched to eager for the measurement only
    files = write_attention_report(shares, tmp_path / "report", "tiny MASH-VLM")
    assert all(f.stat().st_size > 0 for f in files)
