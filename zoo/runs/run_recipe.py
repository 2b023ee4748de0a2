"""One path for every way a recipe runs: train every stage, log the model, evaluate, log the metrics.

``stzoo train`` and ``stzoo sweep`` (in this process) and ``ray_jobs.train`` / ``ray_jobs.sweep``
(Ray Train workers) differ only in the launcher that trains a stage, so one recipe gets one
MLflow layout whichever starts it:

    run <name>            params: the flattened recipe; tags: components, recipe, run name
      metrics             loss, the loss terms (ce, mvm, ...), lr, grad_norm, throughput per step;
                          steps continue across stages; <benchmark>.<task>.<column> at the end
      artifacts           recipe.yaml, stages.json (staged recipes), model/, eval/<benchmark>/, plots/
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from zoo.config.recipe import Recipe
from zoo.data.dataset import ensure_synthetic_suite
from zoo.evaluation.benchmark import evaluate_benchmarks
from zoo.evaluation.metrics.scoring import is_bookkeeping
from zoo.model.video_llm import VideoLLM
import zoo.runs.tracking as tracking
from zoo.runs.mlflow_model import write_mlflow_model
from zoo.runs.outbox import RunOutbox, send_pending
from zoo.training.stages import Stage, plan_stages, write_handoff

@dataclass
class StageResult:
    """What a launcher hands back after training one stage."""

    name: str | None
    model_dir: Path  # the stage's final model, save_pretrained form, on this machine
    first_step: int  # the run's step count before this stage
    last_step: int  # ... and after it
    handoff_dir: Path  # where the next stage's starting weights go: a place its workers read
    losses: tuple[float, float] | None = None  # first and last logged loss, when the launcher saw them
    skipped_samples: int = 0


class Launcher(Protocol):
    """Trains one stage of a run somewhere (this process, Ray Train workers), metrics into ``run``."""

    def train_stage(self, stage: Stage, run: tracking.TrackedRun, handoff: Path | None, first_step: int) -> StageResult: ...


@dataclass
class RecipeRun:
    run: tracking.TrackedRun
    stages: list[StageResult] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # flat evaluation metrics, as logged

    @property
    def model_dir(self) -> Path:
        return self.stages[-1].model_dir


def run_recipe(recipe: Recipe, launcher: Launcher, name: str | None = None, parent_run_id: str | None = None,
               extra_tags: dict | None = None, resume: bool = True) -> RecipeRun:
    """Train every stage, log the model, evaluate, log the metrics; the run is FAILED if any step fails.

    ``name`` defaults to the recipe's name and fingerprint; an existing run of that name is continued
    unless ``resume`` is false (training from scratch then gets a run of its own).
    """
    ensure_synthetic_suite(recipe)
    run = tracking.start_or_resume(recipe, name, parent_run_id=parent_run_id, extra_tags=extra_tags, resume=resume)
    print(f"[{name or recipe.name}] MLflow run {run.run_id} ({'continued' if run.resumed else 'new'}): "
          f"{tracking.ui_link(run.uri, run.experiment_id, run.run_id) if run.uri.startswith('http') else run.uri}", flush=True)
    if run.resumed and send_pending(run.run_id):
        print(f"[{name or recipe.name}] sent what an earlier attempt kept while MLflow was away", flush=True)
    outbox = RunOutbox(run)  # from here on, a lost tracking server costs nothing but a later `stzoo sync`
    try:
        result = RecipeRun(run, train_stages(recipe, launcher, run, outbox))
        with tempfile.TemporaryDirectory() as folder:  # an MLflow model around the checkpoint: registrable, a pyfunc
            outbox.log_directory(write_mlflow_model(result.model_dir, Path(folder) / "model"), "model", copy_if_kept=True)
        result.metrics = evaluate_into_run(result.model_dir, outbox, recipe.plugins) if recipe.data.eval else {}
        outbox.log_loss_plot()
    except BaseException:
        outbox.finish("FAILED")
        raise
    outbox.finish()
    return result


def train_stages(recipe: Recipe, launcher: Launcher, run: tracking.TrackedRun, outbox: RunOutbox) -> list[StageResult]:
    """Every stage in order, each from the previous stage's weights (LoRA merged); steps run on across stages."""
    stages = plan_stages(recipe)
    results: list[StageResult] = []
    handoff: Path | None = None
    for index, stage in enumerate(stages):
        first_step = results[-1].last_step if results else 0
        results.append(launcher.train_stage(stage, run, handoff, first_step))
        if index + 1 < len(stages):
            previous = VideoLLM.from_pretrained(results[-1].model_dir, plugins=recipe.plugins)
            handoff = write_handoff(previous, results[-1].handoff_dir)
    if recipe.train.stages:
        boundaries = [{"stage": r.name, "first_step": r.first_step + 1, "last_step": r.last_step} for r in results]
        outbox.log_text(json.dumps(boundaries, indent=2), "stages.json")
    return results


def evaluate_into_run(model_dir: Path, outbox: RunOutbox, plugins: list[str]) -> dict[str, float]:
    """The final model on its recipe's benchmarks (data.eval and eval as its last stage set them):
    metrics and result files into the run (or its outbox, while the server is away)."""
    model = VideoLLM.from_pretrained(model_dir, device="cuda" if torch.cuda.is_available() else "cpu", plugins=plugins)
    with tempfile.TemporaryDirectory() as out:
        results = evaluate_benchmarks(model, Path(out))
        write_counts(results, Path(out))
        outbox.log_metrics(flat_metrics(results))
        outbox.log_directory(Path(out), "eval", copy_if_kept=True)
    return flat_metrics(results)


def flat_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """``<benchmark>.<task>.<column>``, as runs log them: the scores, without the counts beside them."""
    return {f"{benchmark}.{key}": value for benchmark, values in results.items() for key, value in values.items()
            if not is_bookkeeping(key)}


def write_counts(results: dict[str, dict[str, float]], out: Path) -> None:
    """counts.json: what each score was computed over (entries, answers missing, pairs...), logged as an artifact
    beside the benchmarks' files instead of as metrics."""
    counts = {benchmark: {key: value for key, value in values.items() if is_bookkeeping(key)}
              for benchmark, values in results.items()}
    (out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")


def log_benchmarks(model: VideoLLM, uri: str, run_id: str | None, benchmarks: dict[str, str] | None = None) -> dict[str, float]:
    """Evaluate ``model`` on ``benchmarks`` (default: its recipe's data.eval); with a run, the
    ``<benchmark>.<task>.<column>`` metrics and the eval/<benchmark>/ files go into it."""
    with tempfile.TemporaryDirectory() as out:
        results = evaluate_benchmarks(model, Path(out), benchmarks)
        write_counts(results, Path(out))
        flat = flat_metrics(results)
        if run_id is not None:
            tracking.log_metrics_once(uri, run_id, flat)
            tracking.log_directory(uri, run_id, Path(out), "eval")
    return flat
