"""Shared fixtures: offline hub, tiny recipes, and small real video files written by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from zoo.data.writer import write_video  # noqa: E402

from tests.helpers import moving_square_frames, tiny_recipe  # noqa: E402
import zoo.launch.servers as local  # noqa: E402


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


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A Ray head and an MLflow server on loopback for the session, stopped by PID at the end."""
    home = tmp_path_factory.mktemp("stzoo_home")
    servers = local.LocalServers(home=str(home))
    try:
        local.start_mlflow(servers)
        local.start_ray(servers, num_cpus=2, env={"MLFLOW_TRACKING_URI": servers.mlflow_url, "HF_HUB_OFFLINE": "1",
                                                  "STZOO_HOME": str(home)})
        yield servers
    finally:
        # The head's tree and whatever names its GCS address (the Ray client server is reparented to init).
        started = (set(local.ray_tree(servers)) | local.processes_using(f"--address={servers.ray_address}")
                   | ({servers.mlflow_pid} if servers.mlflow_pid else set()))
        local.stop_ray(servers)
        local.stop_mlflow(servers)
        assert not [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
