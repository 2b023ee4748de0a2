"""DeepSpeed ZeRO-2 and ZeRO-3 on CPU (DeepSpeed's CPU accelerator, gloo), run as a user runs them: `stzoo train`
in its own process, killed with SIGKILL after a checkpoint, resumed, and compared step by step with an
uninterrupted run (issue 20, item 3). Its resume reads DeepSpeed's files as data only."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_recipe, write_direction_task
from zoo.config.recipe import recipe_from_dict
from components.weights import CheckpointError
from zoo.training.trainer import Trainer

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[2] / "ray_jobs" / "deepspeed"
STEPS, SAVE_EVERY = 100, 25  # about 30 ms a step: the kill lands seconds before the end


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepspeed")
    train_file, _ = write_direction_task(root, train=8, test=2)
    return root, train_file


def write_recipe(root: Path, train_file: Path, stage: int) -> Path:
    data = tiny_recipe(frames=4)
    data["name"] = f"tiny_zero{stage}"
    data["prompt"] = {"system": ""}
    data["data"]["train"] = str(train_file)
    data["train"].update({"max_steps": STEPS, "batch_size": 2, "save_every": SAVE_EVERY, "log_every": 1, "lr": 1e-3})
    data["scaling"] = {"strategy": "deepspeed", "deepspeed_config": str(CONFIGS / f"zero{stage}.json")}
    path = root / f"zero{stage}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def stzoo_train(root: Path, *args: str, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "STZOO_HOME": str(root / "home"), "TORCH_EXTENSIONS_DIR": str(root / "torch_extensions")}
    command = [sys.executable, "-m", "zoo.cli", "train", *args]
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def losses(output: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records(output)]


def rates(output: Path) -> list[float]:
    return [r["lr"] for r in records(output)]


@pytest.mark.parametrize("stage", [2, 3])
def test_a_killed_deepspeed_run_resumes_to_the_uninterrupted_result(task, stage):
    root, train_file = task
    recipe = write_recipe(root, train_file, stage)
    whole = stzoo_train(root, str(recipe), "--output", str(root / f"whole{stage}"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "Traceback" not in whole.stderr and "FutureWarning" not in whole.stderr
    # The rate each step used, as a plain run logs it: cosine from 1e-3, no warmup, step k (from 1) at
    # 1e-3 * (1 + cos(pi * (k - 1) / STEPS)) / 2. DeepSpeed moves the schedule on inside its step.
    cosine = [1e-3 * (1 + math.cos(math.pi * (k - 1) / STEPS)) / 2 for k in range(1, STEPS + 1)]
    assert rates(root / f"whole{stage}") == pytest.approx(cosine, rel=1e-6)  # metrics.jsonl keeps 7 digits
    # DeepSpeed's CPU backend compiled its inference-only shared-memory op here at the first step (40 s to 6 min).
    assert not list((root / "torch_extensions").glob("**/*.so")), "DeepSpeed compiled a C++ op for a training run"

    output = root / f"killed{stage}"
    process = stzoo_train(root, str(recipe), "--output", str(output), wait=False)
    first = output / "checkpoints" / f"step-{SAVE_EVERY:07d}"
    deadline = time.time() + 300
    while not first.is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert first.is_dir() and not (output / "final").exists(), "the run was not killed between a checkpoint and its end"

    checkpoints = sorted(p for p in (output / "checkpoints").glob("step-*") if not p.name.endswith(".partial"))
    assert (checkpoints[-1] / "deepspeed" / "state").is_dir()
    resumed = stzoo_train(root, str(recipe), "--output", str(output), "--resume", str(checkpoints[-1]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(output) == losses(root / f"whole{stage}")  # every step once, each loss bit-identical
    assert len(losses(output)) == STEPS
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(f"tiny_zero{stage}").experiment_id])
    for run in runs:  # the resumed run continued the killed one's MLflow run; the replayed steps appear once
        steps = [point.step for point in client.get_metric_history(run.info.run_id, "loss")]
        assert sorted(steps) == list(range(1, STEPS + 1)), run.info.run_name


@pytest.fixture
def zero2_checkpoint(task, tmp_path):
    """A 2-step ZeRO-2 run by `stzoo train`: its recipe (short.yaml, and as a dict) and its checkpoint."""
    root, train_file = task
    short = yaml.safe_load(write_recipe(root, train_file, 2).read_text())
    short["train"].update({"max_steps": 2, "save_every": 2})
    recipe = tmp_path / "short.yaml"
    recipe.write_text(yaml.safe_dump(short))
    assert stzoo_train(root, str(recipe), "--output", str(tmp_path / "run")).returncode == 0
    return recipe, short, tmp_path / "run" / "checkpoints" / "step-0000002"


def test_a_deepspeed_state_holding_code_is_refused_without_running_it(task, zero2_checkpoint, tmp_path):
    root, _ = task
    recipe, _, checkpoint = zero2_checkpoint
    marker = tmp_path / "the pickle ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for shard in (checkpoint / "deepspeed" / "state").glob("*optim_states.pt"):
        shard.write_bytes(pickle.dumps({"optimizer_state_dict": Payload()}))
    result = stzoo_train(root, str(recipe), "--output", str(tmp_path / "run"), "--resume", str(checkpoint))
    assert result.returncode == 2 and not marker.exists()
    assert "optim_states.pt: unreadable as a DeepSpeed state" in result.stderr and "Traceback" not in result.stderr


def test_a_deepspeed_checkpoint_resumed_under_another_strategy_is_one_sentence(zero2_checkpoint, tmp_path):
    _, short, checkpoint = zero2_checkpoint
    short["scaling"] = {"strategy": "ddp", "deepspeed_config": None}
    with pytest.raises(CheckpointError, match="written as deepspeed-zero2 and this recipe trains as torch"):
        Trainer(recipe_from_dict(short), output_dir=tmp_path / "plain", device="cpu").fit(resume_from=checkpoint)
