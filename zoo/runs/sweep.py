"""Running an experiment: every variant x seed as a child MLflow run under one parent run.

    stzoo sweep experiments/mash_vlm_table7.yaml --scale tiny            # in this process, in sequence
    ray job submit --working-dir . -- python -m ray_jobs.sweep experiments/mash_vlm_table7.yaml --scale tiny

A child that fails is recorded as FAILED (with the error as a tag) and the sweep goes on. A
child that already FINISHED is skipped, so re-running a sweep completes what is missing. A child is
named by its variant, seed and the fingerprint of what decides its numbers (its recipe's weights and its
evaluation; an evaluation-only child's source's too), so after an edit of the experiment file or of a
recipe it extends, the changed children run again as new runs and the unchanged ones are kept.
Variants with ``evaluate_from`` are not trained: the named variant's model (same seed) is
evaluated under this variant's overrides (inference-time ablations).
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from zoo.config.experiment import Experiment
from zoo.config.recipe import Recipe
from zoo.model.video_llm import VideoLLM
import zoo.runs.tracking as tracking
from zoo.runs.run_recipe import Launcher, log_benchmarks, run_recipe

logger = logging.getLogger("stzoo.sweep")

EXPERIMENT_TAG = "stzoo.experiment"
VARIANT_TAG = "stzoo.variant"
SEED_TAG = "stzoo.seed"
SCALE_TAG = "stzoo.scale"
FINGERPRINT_TAG = "stzoo.results_fingerprint"


@dataclass
class Child:
    variant: str
    seed: int
    recipe: Recipe
    fingerprint: str  # of what decides its numbers (results_fingerprint)
    name: str  # the run name: <experiment>.<scale>.<variant>.seed<k>-<fingerprint>


def results_fingerprint(experiment: Experiment, variant: str, seed: int, scale: str, extra: list[str] | None) -> str:
    """The child's recipe's results fingerprint; an evaluation-only child's also hashes its source's, whose
    training settings its own recipe does not carry."""
    own = experiment.recipe(variant, seed=seed, scale=scale, extra=extra).results_fingerprint()
    source = experiment.variants[variant].evaluate_from
    if source is None:
        return own
    both = own + results_fingerprint(experiment, source, seed, scale, extra)
    return hashlib.sha256(both.encode()).hexdigest()[:8]


def child_of(experiment: Experiment, scale: str, variant: str, seed: int, extra: list[str] | None = None) -> Child:
    recipe = experiment.recipe(variant, seed=seed, scale=scale, extra=extra)
    recipe.tracking.experiment = experiment.name
    fingerprint = results_fingerprint(experiment, variant, seed, scale, extra)
    return Child(variant, seed, recipe, fingerprint, f"{experiment.name}.{scale}.{variant}.seed{seed}-{fingerprint}")


def children(experiment: Experiment, scale: str, seeds: list[int] | None = None, variants: list[str] | None = None,
             extra: list[str] | None = None) -> list[Child]:
    """Trained variants first, so that evaluate_from variants find their model."""
    chosen = variants or list(experiment.variants)
    ordered = sorted(chosen, key=lambda v: experiment.variants[v].evaluate_from is not None)
    return [child_of(experiment, scale, variant, seed, extra) for variant in ordered for seed in seeds or experiment.seeds]


def parent_run(experiment: Experiment, scale: str, uri: str) -> str:
    """The sweep's parent run (found again by name when a sweep is re-run)."""
    client = tracking.client(uri)
    experiment_id = tracking.ensure_experiment(client, experiment.name, uri)
    name = f"{experiment.name}.{scale}"
    existing = tracking.find_run(client, experiment_id, name)
    if existing is not None:
        return existing.info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={
        tracking.RUN_NAME_TAG: name, EXPERIMENT_TAG: experiment.name, SCALE_TAG: scale, "stzoo.role": "sweep",
        "mlflow.note.content": f"{experiment.paper}\n\n{experiment.description}".strip(),
    })
    client.log_text(run.info.run_id, Path(experiment.source).read_text(), "experiment.yaml")
    return run.info.run_id


def child_tags(experiment: Experiment, child: Child, scale: str) -> dict:
    return {EXPERIMENT_TAG: experiment.name, VARIANT_TAG: child.variant, SEED_TAG: str(child.seed), SCALE_TAG: scale,
            FINGERPRINT_TAG: child.fingerprint}


def finished(uri: str, experiment_name: str, name: str) -> bool:
    client = tracking.client(uri)
    found = client.get_experiment_by_name(experiment_name)
    if found is None:
        return False
    run = tracking.find_run(client, found.experiment_id, name)
    return run is not None and run.info.status == "FINISHED"


def in_sequence(work: Callable[[Child], None], todo: list[Child]) -> list[Exception | None]:
    """Run each child in turn; an exception is returned, not raised (the sweep goes on)."""
    errors: list[Exception | None] = []
    for child in todo:
        try:
            work(child)
            errors.append(None)
        except Exception as error:  # recorded as a failed child by the caller
            errors.append(error)
    return errors


def run_sweep(experiment: Experiment, scale: str, launcher_for: Callable[[Child], Launcher],
              seeds: list[int] | None = None, variants: list[str] | None = None, extra: list[str] | None = None,
              map_children=in_sequence) -> dict:
    """Every child through ``run_recipe`` with the launcher ``launcher_for(child)`` gives (this process for
    ``stzoo sweep``, Ray Train for ray_jobs.sweep); ``map_children(work, children)`` runs ``work`` over
    children (in sequence here, as Ray tasks in ray_jobs.sweep) and returns their errors."""
    todo = children(experiment, scale, seeds, variants, extra)
    uri = tracking.tracking_uri(todo[0].recipe if todo else None)
    parent = parent_run(experiment, scale, uri)
    outcome: dict[str, list[str]] = {"finished": [], "skipped": [], "failed": []}
    pending = []
    for child in todo:
        if finished(uri, experiment.name, child.name):
            outcome["skipped"].append(child.name)
            logger.info("%s: already finished, skipped", child.name)
        else:
            pending.append(child)
    trained = [c for c in pending if not experiment.variants[c.variant].evaluate_from]
    evaluated = [c for c in pending if experiment.variants[c.variant].evaluate_from]
    phases = (
        (trained, lambda child: run_recipe(child.recipe, launcher_for(child), child.name, parent_run_id=parent,
                                           extra_tags=child_tags(experiment, child, scale))),
        # After every trained child: an evaluation-only child needs its source's model.
        (evaluated, lambda child: evaluate_child(experiment, child, scale, parent, uri, extra)),
    )
    for group, work in phases:
        for child, error in zip(group, map_children(work, group)):
            if error is None:
                outcome["finished"].append(child.name)
            else:
                record_failure(experiment, child, scale, parent, uri, error)
                outcome["failed"].append(child.name)
    status = "FAILED" if outcome["failed"] and not outcome["finished"] and not outcome["skipped"] else "FINISHED"
    tracking.finish(uri, parent, status)
    return outcome


def record_failure(experiment: Experiment, child: Child, scale: str, parent: str, uri: str, error: Exception) -> None:
    logger.error("%s failed: %s", child.name, error)
    run = tracking.start_or_resume(child.recipe, child.name, parent_run_id=parent, extra_tags=child_tags(experiment, child, scale))
    client = tracking.client(uri)
    client.set_tag(run.run_id, "stzoo.error", f"{type(error).__name__}: {error}"[:4000])
    client.log_text(run.run_id, "".join(traceback.format_exception(error)), "error.txt")
    tracking.finish(uri, run.run_id, "FAILED")


def model_of(experiment: Experiment, source: Child, uri: str) -> Path:
    """The trained model of another child, downloaded from its MLflow run."""
    client = tracking.client(uri)
    found = client.get_experiment_by_name(experiment.name)
    run = tracking.find_run(client, found.experiment_id, source.name)
    if run is None or run.info.status != "FINISHED":
        raise RuntimeError(f"variant {source.variant!r} (seed {source.seed}) has no finished run {source.name} to "
                           "evaluate from (none of the experiment file as it is now); run it first")
    return tracking.download_model_artifact(f"runs:/{run.info.run_id}", uri)


def evaluate_child(experiment: Experiment, child: Child, scale: str, parent: str, uri: str, extra: list[str] | None) -> None:
    """An evaluation-only child: the source variant's weights under this variant's overrides."""
    source_variant = experiment.variants[child.variant].evaluate_from
    directory = model_of(experiment, child_of(experiment, scale, source_variant, child.seed, extra), uri)
    overrides = dict(experiment.variants[child.variant].set)
    model = VideoLLM.from_pretrained(directory, overrides=overrides, plugins=child.recipe.plugins)
    model.recipe.data.eval = child.recipe.data.eval
    model.recipe.eval = child.recipe.eval
    run = tracking.start_or_resume(child.recipe, child.name, parent_run_id=parent,
                                   extra_tags={**child_tags(experiment, child, scale), "stzoo.evaluated_from": source_variant})
    log_benchmarks(model, run.uri, run.run_id)
    tracking.finish(uri, run.run_id)


def add_selection_arguments(parser) -> None:
    """The arguments ``stzoo sweep`` and ``ray_jobs.sweep`` share: the experiment and which children to run."""
    parser.add_argument("experiment")
    parser.add_argument("--scale", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    parser.add_argument("--variants", help="comma-separated variants (default: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def selection(args) -> dict:
    """``run_sweep``'s seeds, variants and extra overrides from those arguments."""
    return {"seeds": [int(x) for x in args.seeds.split(",")] if args.seeds else None,
            "variants": args.variants.split(",") if args.variants else None, "extra": args.overrides}


def print_outcome(outcome: dict) -> int:
    """One line per state (finished, skipped, failed); the exit status is 1 when a child failed."""
    for state, names in outcome.items():
        print(f"{state}: {len(names)}" + (f" ({', '.join(names)})" if names and state == "failed" else ""))
    return 1 if outcome["failed"] else 0
