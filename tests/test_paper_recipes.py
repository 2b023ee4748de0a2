"""Paper-scale recipes check out on the meta device in seconds: parameters and visual tokens as the papers say."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

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
