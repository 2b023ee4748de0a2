"""One run path: `stzoo train`, `stzoo sweep` and `ray job submit ... ray_jobs.train` of the same staged
recipe (tiny LLaVA-ST, three stages, the middle one ending by epochs) give one MLflow run each with the
same params, metric keys and artifact paths, and steps that run on across the stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, submit_job
from zoo.config.experiment import load_experiment
from zoo.data.action_scene import generate_suite
from zoo.runs.sweep import children

pytestmark = pytest.mark.slow

EXPERIMENT = "one-run-path"
# Stage 2 ends by epochs: data.max_samples 8 at batch 4 is 2 steps an epoch.
STAGES = [("content_alignment", {"train.max_steps": 2}),
          ("coordinate_alignment", {"train.max_steps": None, "train.epochs": 1}),
          ("multitask", {"train.max_steps": 3})]
EXPECTED_STAGES = [{"stage": "content_alignment", "first_step": 1, "last_step": 2},
                   {"stage": "coordinate_alignment", "first_step": 3, "last_step": 4},
                   {"stage": "multitask", "first_step": 5, "last_step": 7}]


def write_recipe(root: Path) -> Path:
    """The tiny LLaVA-ST recipe with its own small suite (absolute paths, so a Ray job finds them) and short stages."""
    suite = root / "suite"
    generate_suite(suite, seed=0, videos=24)
    tiny = yaml.safe_load((REPO / "recipes/tiny/llava_st.yaml").read_text())
    stages = []
    for (name, steps), stage in zip(STAGES, tiny["train"]["stages"]):
        assert stage["name"] == name
        files = stage["set"]["data.train"]
        files = [str(suite / Path(f).name) for f in files] if isinstance(files, list) else str(suite / Path(files).name)
        stages.append({**stage, "set": {**stage["set"], "data.train": files, **steps}})
    recipe = {
        "extends": str(REPO / "recipes/tiny/llava_st.yaml"),
        "data": {"synthetic": {"out": str(suite), "seed": 0, "videos": 24}, "max_samples": 8,
                 "train": [str(suite / "train.json"), str(suite / "train_grounding.json")],
                 "eval": {name: str(suite / Path(path).name) for name, path in tiny["data"]["eval"].items()}},
        "train": {"stages": stages, "log_every": 1, "progress_bar": False},
        "eval": {"max_samples": 2, "max_new_tokens": 4},
        "tracking": {"experiment": EXPERIMENT},
    }
    path = root / "llava_st_short.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def stzoo(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=900, env=env)


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def layout(client, run, scratch: Path) -> dict:
    """What a researcher reads off a run. Left out: the recipe's name and tracking.* (a sweep names its
    children and their experiment), and system/* metrics (sampled every 10 s, so a short run may have none)."""
    run_id = run.info.run_id
    scratch.mkdir(parents=True, exist_ok=True)
    children = client.search_runs([run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    return {
        "params": {k: v for k, v in run.data.params.items() if k != "name" and not k.startswith("tracking.")},
        "metrics": sorted(k for k in run.data.metrics if not k.startswith("system/")),
        "artifacts": sorted(artifact_paths(client, run_id)),
        "loss steps": [p.step for p in client.get_metric_history(run_id, "loss")],
        "stages": json.loads(Path(client.download_artifacts(run_id, "stages.json", str(scratch))).read_text()),
        "child runs": len(children),
        "status": run.info.status,
    }


def run_named(client, experiment: str, name: str):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`stzoo.run_name` = '{name}'")
    assert len(runs) == 1, f"{len(runs)} runs named {name} in {experiment}"
    return runs[0]


def test_train_sweep_and_ray_job_log_the_same_run(cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    recipe = write_recipe(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": cluster.mlflow_url, "HF_HUB_OFFLINE": "1",
           "STZOO_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    trained = stzoo("train", str(recipe), "--run-name", f"{EXPERIMENT}.train", "--output", str(tmp_path / "train"), env=env)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert "trained tiny_llava_st stage multitask: 3 steps" in trained.stdout

    experiment = tmp_path / "one_run_path.yaml"
    experiment.write_text(yaml.safe_dump({"name": EXPERIMENT, "base": str(recipe), "tiny": str(recipe), "seeds": [0],
                                          "variants": {"short": {"set": {}}}}))
    swept = stzoo("sweep", str(experiment), "--scale", "tiny", "--output", str(tmp_path / "sweep"), env=env)
    assert swept.returncode == 0 and "finished: 1" in swept.stdout, swept.stdout[-2000:] + swept.stderr[-3000:]

    submitted = submit_job(cluster, recipe, f"{EXPERIMENT}.ray")
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-2000:]

    client = MlflowClient(cluster.mlflow_url)
    layouts = {
        launcher: layout(client, run_named(client, EXPERIMENT, name), Path(tmp_path / launcher.replace(" ", "_")))
        for launcher, name in (("stzoo train", f"{EXPERIMENT}.train"),
                               ("stzoo sweep", children(load_experiment(experiment), "tiny")[0].name),
                               ("ray_jobs.train", f"{EXPERIMENT}.ray"))
    }
    reference = layouts["stzoo train"]
    assert reference["loss steps"] == list(range(1, 8)) and reference["stages"] == EXPECTED_STAGES
    assert reference["child runs"] == 0 and reference["status"] == "FINISHED"
    assert {"recipe.yaml", "stages.json", "model/MLmodel", "plots/training_loss.png", "eval/counts.json",
            "eval/grounding/results.json", "eval/mc/predictions.jsonl"} <= set(reference["artifacts"])
    # the model is an MLflow model around the checkpoint: one copy of the weights
    assert [a for a in reference["artifacts"] if a.endswith("model.safetensors")] == ["model/artifacts/checkpoint/model.safetensors"]
    assert {"loss", "loss/ce", "lr", "mc.multiple_choice.accuracy"} <= set(reference["metrics"])
    for launcher, found in layouts.items():
        for part, value in reference.items():
            assert found[part] == value, f"{launcher} differs from stzoo train in {part}"
