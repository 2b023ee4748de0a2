"""Train a recipe as a Ray job, tracked in MLflow:

    ray job submit --working-dir . -- python -m ray_jobs.train RECIPE [--set key=value ...] [--run-name NAME]

The driver resolves the recipe, creates (or, for a run name seen before, continues) the
MLflow run, and runs a Ray Train TorchTrainer with the recipe's scaling. Every worker runs
the same training loop as ``stzoo train`` (DDP on gloo/NCCL, or DeepSpeed); rank 0 logs
metrics to MLflow and the job log. Checkpoints go through ``ray.train.report``: a killed
worker group restarts from the latest one (scaling.max_failures), and a resubmitted job
with the same run name resumes from it. At the end the final model is logged as the run's
``model`` artifact and evaluated on the recipe's benchmarks.

A recipe with ``train.stages`` runs them in order, each its own child run under a parent
run for the recipe, each starting from the previous stage's weights with LoRA merged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from zoo.recipe import Recipe, StageSpec, load_recipe, recipe_from_dict
from zoo.schema import RecipeError
from zoo import tracking

logger = logging.getLogger("stzoo.job")


def say(line: str) -> None:
    """A job-log line from a worker. Written to the process's own stderr: Ray Train patches print()
    into its loggers, whose console handlers end up streamed to the job log twice."""
    sys.__stderr__.write(line + "\n")
    sys.__stderr__.flush()


class JobLog:
    """One line per logged step in the job log: step, loss, throughput, ETA."""

    def __init__(self, name: str, total_steps_fn):
        self.name = name
        self.total_steps_fn = total_steps_fn
        self.started = time.time()
        self.first_step: int | None = None

    def log_metrics(self, metrics: dict, step: int) -> None:
        total = self.total_steps_fn()
        if self.first_step is None:
            self.first_step, self.started = step - 1, time.time() - metrics.get("step_seconds", 0.0)
        done = step - self.first_step
        per_step = (time.time() - self.started) / max(done, 1)
        eta = time.strftime("%H:%M:%S", time.gmtime(per_step * max(total - step, 0)))
        extras = " ".join(f"{k} {metrics[k]:.4f}" for k in ("ce", "mvm") if k in metrics)
        say(f"[{self.name}] step {step}/{total} loss {metrics['loss']:.4f} {extras} lr {metrics['lr']:.2e} "
            f"{metrics.get('samples_per_second', 0):.2f} samples/s {metrics.get('tokens', 0) / max(metrics.get('step_seconds', 1e-9), 1e-9):.0f} tokens/s "
            f"eta {eta}")


def worker_loop(config: dict) -> None:
    """What every Ray Train worker runs."""
    import ray.train
    from ray.train import Checkpoint

    from zoo.train import Trainer

    # No logging set-up here: Ray Train routes print() through the root logger it configures, and a
    # second root handler would print every line twice.
    context = ray.train.get_context()
    rank, world, local = context.get_world_rank(), context.get_world_size(), context.get_local_rank()
    recipe = recipe_from_dict(config["recipe"], source=config["source"])
    device = torch.device(f"cuda:{local}") if recipe.scaling.use_gpu else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = None
    if config.get("stage") is not None:
        from zoo.stages import build_stage_model

        stage = StageSpec(**config["stage"])
        handoff = Path(config["handoff"]) if config.get("handoff") else None
        model = build_stage_model(recipe, stage, handoff)
    # Local scratch for this attempt; ray.train.report has copied each checkpoint to storage when it returns.
    scratch = tempfile.TemporaryDirectory(prefix=f"stzoo-{recipe.name}-rank{rank}-")
    output = Path(scratch.name)
    metrics_sink = monitor = None
    loggers: list = []

    def on_checkpoint(directory, metrics, final):
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        clean["final"] = float(final)
        ray.train.report(clean, checkpoint=Checkpoint.from_directory(str(directory)) if directory else None)

    trainer = Trainer(recipe, model=model, rank=rank, world_size=world, device=device, output_dir=output,
                      progress=False, on_checkpoint=on_checkpoint)
    if rank == 0:
        loggers.append(JobLog(recipe.name, lambda: getattr(trainer, "total_steps", 0)))
        unsent = tracking.stzoo_home() / "unsent_metrics" / f"{config['run_id']}.jsonl"  # outlives the scratch dir
        metrics_sink = tracking.MLflowMetrics(config["tracking_uri"], config["run_id"], unsent)
        loggers.append(metrics_sink)
        monitor = start_system_metrics(config["tracking_uri"], config["run_id"])
    trainer.loggers = loggers
    checkpoint = ray.train.get_checkpoint()
    try:
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                say(f"[{recipe.name}] resuming from {checkpoint.path}")
                trainer.fit(resume_from=Path(directory))
        else:
            trainer.fit()
    finally:
        if metrics_sink is not None:
            metrics_sink.close()
        if monitor is not None:
            monitor.finish()
        scratch.cleanup()


def start_system_metrics(uri: str, run_id: str):
    """CPU, memory (and GPU, where pynvml sees one) every 10 s into the run; none if MLflow cannot start it."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=10, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as error:  # system metrics are a nicety; training must not depend on them
        logger.warning("system metrics are off: %s", error)
        return None


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


def run_training(recipe: Recipe, run: tracking.TrackedRun, name: str, stage: StageSpec | None = None,
                 handoff: Path | None = None):
    """One TorchTrainer run; returns the Ray Train result (its checkpoint holds model/ and trainer_state.pt)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    claim_run_directory(recipe, name)
    scaling = recipe.scaling
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "recipe": recipe.to_dict(), "source": recipe.source, "tracking_uri": run.uri, "run_id": run.run_id,
            "stage": None if stage is None else {"name": stage.name, "set": stage.set, "trainable": stage.trainable},
            "handoff": str(handoff) if handoff else None,
        },
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=storage_path(recipe),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def finish_run(recipe: Recipe, run: tracking.TrackedRun, checkpoint_dir: Path) -> dict:
    """Log the final model, evaluate it on the recipe's benchmarks, plot the loss; returns the flat eval metrics."""
    from zoo.evaluation import evaluate_benchmarks
    from zoo.model import VideoLLM
    from zoo.plots import plot_run_history

    model_dir = checkpoint_dir / "model"
    tracking.log_directory(run.uri, run.run_id, model_dir, "model")
    results: dict = {}
    if recipe.data.eval:
        model = VideoLLM.from_pretrained(model_dir, device="cuda" if torch.cuda.is_available() else "cpu")
        with tempfile.TemporaryDirectory() as out:
            per_benchmark = evaluate_benchmarks(model, Path(out))
            mlflow_client = tracking.client(run.uri)
            for benchmark, values in per_benchmark.items():
                for key, value in values.items():
                    results[f"{benchmark}.{key}"] = value
                    mlflow_client.log_metric(run.run_id, f"{benchmark}.{key}", value)
            tracking.log_directory(run.uri, run.run_id, Path(out), "eval")
    with tempfile.TemporaryDirectory() as plots:
        path = plot_run_history(run.uri, run.run_id, Path(plots) / "training_loss.png")
        if path is not None:
            tracking.client(run.uri).log_artifact(run.run_id, str(path), "plots")
    return results


def train_recipe(recipe: Recipe, name: str, parent_run_id: str | None = None, extra_tags: dict | None = None) -> dict:
    from videodata.dataset import ensure_synthetic_suite

    ensure_synthetic_suite(recipe)
    if recipe.train.stages:
        return train_stages(recipe, name, parent_run_id, extra_tags)
    run = tracking.start_or_resume(recipe, name, parent_run_id=parent_run_id, extra_tags=extra_tags)
    print(f"[{name}] MLflow run {run.run_id} ({'continued' if run.resumed else 'new'}) at {run.uri}", flush=True)
    try:
        result = run_training(recipe, run, name)
        with result.checkpoint.as_directory() as directory:
            results = finish_run(recipe, run, Path(directory))
    except BaseException:
        tracking.finish(run.uri, run.run_id, "FAILED")
        raise
    tracking.finish(run.uri, run.run_id)
    return results


def train_stages(recipe: Recipe, name: str, parent_run_id: str | None = None, extra_tags: dict | None = None) -> dict:
    """Each stage a child run of the recipe's run, from the previous stage's weights (LoRA merged)."""
    from zoo.model import VideoLLM
    from zoo.stages import stage_recipe, write_handoff

    parent = tracking.start_or_resume(recipe, name, parent_run_id=parent_run_id, extra_tags=extra_tags)
    handoff: Path | None = None
    results: dict = {}
    try:
        for stage in recipe.train.stages:
            this = stage_recipe(recipe, stage)
            stage_name = f"{name}.{stage.name}"
            run = tracking.start_or_resume(this, stage_name, parent_run_id=parent.run_id, extra_tags={"stzoo.stage": stage.name})
            print(f"[{stage_name}] MLflow run {run.run_id}, starting from {handoff or 'the pretrained weights'}", flush=True)
            result = run_training(this, run, stage_name, stage, handoff)
            with result.checkpoint.as_directory() as directory:
                results = finish_run(this, run, Path(directory))
                model = VideoLLM.from_pretrained(Path(directory) / "model")
                handoff = write_handoff(model, Path(storage_path(recipe)) / stage_name / "handoff")
                last_model = Path(directory) / "model"
                tracking.log_directory(parent.uri, parent.run_id, last_model, "model")  # the recipe's model: the last stage's
            tracking.finish(run.uri, run.run_id)
        mlflow_client = tracking.client(parent.uri)
        for key, value in results.items():
            mlflow_client.log_metric(parent.run_id, key, value)
    except BaseException:
        tracking.finish(parent.uri, parent.run_id, "FAILED")
        raise
    tracking.finish(parent.uri, parent.run_id)
    return results


def connect_ray() -> None:
    import ray

    if not ray.is_initialized():
        # Inside `ray job submit` this joins the job's cluster; run directly, it starts or joins a local one.
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-name", help="the MLflow/Ray run name; the same name resumes "
                                           "(default: the recipe's name and fingerprint, so an unchanged recipe resumes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        name = args.run_name or recipe.tracking.run_name or f"{recipe.name}-{recipe.fingerprint()}"
        connect_ray()
        results = train_recipe(recipe, name)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for key, value in results.items():
        print(f"[{name}] {key} = {value:.2f}")
    print(f"[{name}] done; MLflow: {tracking.tracking_uri(recipe)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
