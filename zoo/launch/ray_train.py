"""The Ray Train launcher: each stage of a run as a TorchTrainer over the recipe's ``scaling``.

Every worker runs the same training loop as ``stzoo train`` (DDP on gloo/NCCL, or DeepSpeed);
rank 0 logs metrics to the run's MLflow run and one line per step to the job log. Checkpoints
go through ``ray.train.report``: a killed worker group restarts from the latest one
(``scaling.max_failures``), and a resubmitted job with the same run name resumes from it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs
import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from components.config import RecipeError
from zoo.config.recipe import Recipe, StageSpec, recipe_from_dict
import zoo.runs.tracking as tracking
from zoo.runs.run_recipe import StageResult
from zoo.training.stages import Stage
from zoo.training.trainer import Trainer
from zoo.runtime.threads import apply_thread_policy, ceiling_of, release_threads


def say(line: str) -> None:
    """A job-log line from a worker. Written to the process's own stderr: Ray Train patches print()
    into its loggers, whose console handlers end up streamed to the job log twice."""
    sys.__stderr__.write(line + "\n")
    sys.__stderr__.flush()


class JobLog:
    """One line per logged step in the job log: step, loss and its terms, throughput, ETA."""

    def __init__(self, name: str, total_steps_fn):
        self.name = name
        self.total_steps_fn = total_steps_fn  # the run's last step, known once the trainer has prepared
        self.started = time.time()
        self.first_step: int | None = None

    def log_metrics(self, metrics: dict, step: int) -> None:
        total = self.total_steps_fn()
        if self.first_step is None:
            self.first_step, self.started = step - 1, time.time() - metrics.get("step_seconds", 0.0)
        per_step = (time.time() - self.started) / max(step - self.first_step, 1)
        eta = time.strftime("%H:%M:%S", time.gmtime(per_step * max(total - step, 0)))
        terms = " ".join(f"{k.removeprefix('loss/')} {v:.4f}" for k, v in metrics.items() if k.startswith("loss/"))
        tokens_per_second = metrics.get("tokens", 0) / max(metrics.get("step_seconds", 1e-9), 1e-9)
        say(f"[{self.name}] step {step}/{total} loss {metrics['loss']:.4f} {terms} lr {metrics['lr']:.2e} "
            f"{metrics.get('samples_per_second', 0):.2f} samples/s {tokens_per_second:.0f} tokens/s eta {eta}")


def worker_trainer(config: dict, rank: int, world: int, device: torch.device) -> Trainer:
    """The stage's trainer on this worker; checkpoints are reported to Ray Train with the run's step."""
    recipe = recipe_from_dict(config["recipe"], source=config["source"])
    stage = Stage(recipe, StageSpec(**config["stage"]) if config["stage"] else None, config.get("run_fingerprint"))
    handoff = Path(config["handoff"]) if config["handoff"] else None

    def on_checkpoint(directory, metrics, final):
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        clean["final"] = float(final)
        ray.train.report(clean, checkpoint=Checkpoint.from_directory(str(directory)) if directory else None)

    # Local scratch for this attempt; ray.train.report has copied each checkpoint to storage when it returns.
    scratch = tempfile.mkdtemp(prefix=f"stzoo-{recipe.name}-rank{rank}-")
    return Trainer(recipe, model=stage.build_model(handoff), rank=rank, world_size=world, device=device,
                   output_dir=scratch, progress=False, on_checkpoint=on_checkpoint, step_offset=config["first_step"])


def worker_loop(config: dict) -> None:
    """What every Ray Train worker runs."""
    # No logging set-up here: Ray Train routes print() through the root logger it configures, and a
    # second root handler would print every line twice.
    apply_thread_policy(ceiling=ceiling_of(ray.get_runtime_context().get_assigned_resources().get("CPU")))
    context = ray.train.get_context()
    rank, world, local = context.get_world_rank(), context.get_world_size(), context.get_local_rank()
    device = torch.device(f"cuda:{local}") if config["recipe"]["scaling"]["use_gpu"] else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    trainer = worker_trainer(config, rank, world, device)
    name = trainer.recipe.name
    sink = monitor = None
    if rank == 0:
        sink = tracking.MLflowMetrics(config["tracking_uri"], config["run_id"], tracking.unsent_metrics_file(config["run_id"]))
        trainer.loggers = [JobLog(name, lambda: trainer.step_offset + getattr(trainer, "total_steps", 0)), sink]
        monitor = tracking.start_system_metrics(config["tracking_uri"], config["run_id"])
    checkpoint = ray.train.get_checkpoint()
    try:
        if checkpoint is None:
            trainer.fit()
        else:
            with checkpoint.as_directory() as directory:
                say(f"[{name}] resuming from {checkpoint.path}")
                trainer.fit(resume_from=Path(directory))
    finally:
        if sink is not None:
            sink.close()
        if monitor is not None:
            monitor.finish()
        shutil.rmtree(trainer.output_dir, ignore_errors=True)
        release_threads()


def storage_path(recipe: Recipe) -> str:
    path = recipe.scaling.storage_path or str(tracking.stzoo_home() / "ray_results")
    if "://" not in path:
        Path(path).mkdir(parents=True, exist_ok=True)
        path = str(Path(path).resolve())
    return path


def claim_run_directory(recipe: Recipe, name: str) -> None:
    """Ray resumes a run name from its checkpoints; refuse when they were made by a different recipe."""
    directory = Path(storage_path(recipe)) / name
    marker = directory / "stzoo_recipe_fingerprint"
    fingerprint = recipe.fingerprint()
    if marker.is_file() and marker.read_text().strip() != fingerprint:
        raise RecipeError(
            f"run name {name!r} already has checkpoints in {directory} from a different recipe "
            f"(fingerprint {marker.read_text().strip()}, now {fingerprint}); choose another --run-name, "
            "or delete that directory to start over"
        )
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)


def connect_ray() -> None:
    if not ray.is_initialized():
        # Inside `ray job submit` this joins the job's cluster; run directly, it starts or joins a local one.
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)


class RayLauncher:
    """Each stage a TorchTrainer named ``<run name>[.<stage>]`` in the recipe's Ray storage."""

    def __init__(self, name: str):
        self.name = name

    def train_stage(self, stage: Stage, run: tracking.TrackedRun, handoff: Path | None, first_step: int) -> StageResult:
        name = f"{self.name}.{stage.name}" if stage.name else self.name
        recipe = stage.recipe
        claim_run_directory(recipe, name)
        spec = stage.spec
        result = self.torch_trainer(recipe, name, {
            "recipe": recipe.to_dict(), "source": recipe.source, "tracking_uri": run.uri, "run_id": run.run_id,
            "stage": None if spec is None else {"name": spec.name, "set": spec.set, "trainable": spec.trainable},
            "handoff": str(handoff) if handoff else None, "first_step": first_step,
            "run_fingerprint": stage.run_fingerprint,
        }).fit()
        # The hand-off beside the stage's checkpoints: storage every node sees (scaling.storage_path on a cluster).
        return StageResult(stage.name, self.local_copy(result.checkpoint, name) / "model", first_step,
                           int(result.metrics["step"]), Path(storage_path(recipe)) / name / "handoff")

    def torch_trainer(self, recipe: Recipe, name: str, config: dict) -> TorchTrainer:
        scaling = recipe.scaling
        resources = {"CPU": scaling.cpus_per_worker, **({"GPU": 1} if scaling.use_gpu else {})}
        return TorchTrainer(
            worker_loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
            run_config=RunConfig(name=name, storage_path=storage_path(recipe),
                                 failure_config=FailureConfig(max_failures=scaling.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )

    @staticmethod
    def local_copy(checkpoint: Checkpoint, name: str) -> Path:
        """The final checkpoint on this machine: in place on local storage, else downloaded once."""
        if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
            return Path(checkpoint.path)
        return Path(checkpoint.to_directory(str(tracking.stzoo_home() / "ray_models" / name)))
