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

from zoo.data.writer import write_video  # noqa: E402

from tests.helpers import moving_square_frames, tiny_recipe  # noqa: E402


@pytest.fixture
def build_tiny():
    from zoo.model.video_llm import build_model
    from zoo.config.recipe import recipe_from_dict

    def build(**kwargs):
        torch.manual_seed(0)
        return build_model(recipe_from_dict(tiny_recipe(**kwargs)))

    return build


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
