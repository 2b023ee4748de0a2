"""Shared fixtures: offline hub, tiny recipes, and small real video files written by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from videodata.writer import write_video  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

TINY_LLM = {
    "llama": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 2048},
    "qwen2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 2048, "use_sliding_window": False},
}
TINY_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8}
TINY_ENCODERS = {
    "clip": {"name": "clip", "config": TINY_VIT},
    "siglip": {"name": "siglip", "config": TINY_VIT},
    "blip2_qformer": {"name": "blip2_qformer", "instruction_tokenizer": "byte", "config": {
        "vision": TINY_VIT, "num_query_tokens": 4,
        "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                    "cross_attention_frequency": 1, "vocab_size": 260, "max_position_embeddings": 64}}},
    "timm": {"name": "timm", "model_name": "vit_tiny_patch16_224",
             "model_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}},
}


def tiny_recipe(encoder: str = "clip", llm: str = "llama", frames: int = 4, **model_overrides) -> dict:
    """A tiny recipe as a dict (for recipe_from_dict): every mechanism, CPU size."""
    model = {
        "encoder": dict(TINY_ENCODERS[encoder]),
        "projector": "mlp2x_gelu",
        "compressor": "all_tokens",
        "position": "rope",
        "mask": "causal",
        "llm": {"name": llm, "config": dict(TINY_LLM[llm]), "tokenizer": "byte", "attn_implementation": "sdpa"},
    }
    model.update(model_overrides)
    return {"name": f"tiny_{encoder}_{llm}", "model": model, "data": {"video": {"frames": frames}},
            "train": {"lr": 3e-3, "warmup_ratio": 0.0, "batch_size": 2, "max_steps": 10, "progress_bar": False}}


@pytest.fixture
def build_tiny():
    from zoo.model import build_model
    from zoo.recipe import recipe_from_dict

    def build(**kwargs):
        torch.manual_seed(0)
        return build_model(recipe_from_dict(tiny_recipe(**kwargs)))

    return build


def moving_square_frames(direction: str, frames: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """A bright square moving left or right over a textured background: a task only motion can solve."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 90, size=(size, size, 3), dtype=np.uint8)
    out = np.repeat(background[None], frames, axis=0).copy()
    start = rng.integers(2, 6) if direction == "right" else size - 10 - rng.integers(2, 6)
    for t in range(frames):
        x = start + (2 * t if direction == "right" else -2 * t)
        y = 12 + rng.integers(-1, 2)
        out[t, y : y + 8, x : x + 8] = (230, 200, 60)
    return out


@pytest.fixture
def direction_dataset(tmp_path):
    """Real mp4 files plus LLaVA-format annotations: 'Which way does the square move?' -> left / right."""

    def make(count: int = 16, frames: int = 8) -> Path:
        entries = []
        for i in range(count):
            direction = "left" if i % 2 else "right"
            video = tmp_path / "videos" / f"{i:03d}.mp4"
            write_video(video, moving_square_frames(direction, frames=frames, seed=i), fps=8)
            entries.append({
                "id": f"clip{i:03d}", "video": f"videos/{i:03d}.mp4", "task": "conversation", "split": "train",
                "meta": {"direction": direction},
                "conversations": [{"from": "human", "value": "<video>\nWhich way does the square move?"},
                                  {"from": "gpt", "value": direction}],
            })
        path = tmp_path / "train.json"
        path.write_text(json.dumps(entries))
        return path

    return make
