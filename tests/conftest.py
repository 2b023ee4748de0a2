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
from xdist.scheduler import LoadFileScheduling  # noqa: E402

from zoo.data.writer import write_video  # noqa: E402

from tests.helpers import moving_square_frames, tiny_recipe  # noqa: E402
import zoo.launch.servers as local  # noqa: E402
from zoo.runtime.threads import usable_cores  # noqa: E402

# Under pytest-xdist (`make test`), each worker takes its share of the cores: two workers at torch's default
# of one thread per core spin-wait against each other (zoo/runtime/threads.py has the measurement).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, usable_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


# The test modules on the session's Ray head (the ``cluster`` fixture): under xdist they share one worker, which
# starts the head once (two heads would also each take two CPUs of a two-core machine).
RAY_CLUSTER_MODULES = {"tests/launch/test_ray_jobs.py", "tests/runs/test_run_recipe.py"}


class FileScheduling(LoadFileScheduling):
    """pytest-xdist's loadfile (a module's tests on one worker, so module fixtures are built once), with the Ray
    modules as one unit. xdist's own ``xdist_group`` cannot do it on pytest 9: xdist 3.8 appends the group to
    ``item._nodeid``, which pytest 9's node ids no longer read."""

    def _split_scope(self, nodeid: str) -> str:
        module = super()._split_scope(nodeid)
        return "ray_cluster" if module in RAY_CLUSTER_MODULES else module


def pytest_xdist_make_scheduler(config, log):
    return FileScheduling(config, log)


def pytest_collection_modifyitems(items):
    """A module that uses the Ray head but is not in RAY_CLUSTER_MODULES would start a second head on another
    worker: refused at collection, naming the module."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if "cluster" in getattr(item, "fixturenames", ()) and module not in RAY_CLUSTER_MODULES:
            raise pytest.UsageError(f"{module} uses the `cluster` fixture: add it to RAY_CLUSTER_MODULES in tests/conftest.py")


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
