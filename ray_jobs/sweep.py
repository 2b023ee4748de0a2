"""Run an experiment file as a Ray job: every variant x seed a Ray Train run and a child MLflow run.

    ray job submit --working-dir . -- python -m ray_jobs.sweep experiments/mash_vlm_table7.yaml --scale tiny

Children run in parallel as the cluster's resources allow (each as a Ray task that starts its
own TorchTrainer), at most --max-parallel at once; see zoo.sweep for failures and re-runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from zoo.experiment import load_experiment
from zoo.schema import RecipeError
from zoo.sweep import Child, child_tags, run_sweep


def main(argv: list[str] | None = None) -> int:
    import ray

    from ray_jobs.train import connect_ray, train_recipe

    parser = argparse.ArgumentParser(prog="python -m ray_jobs.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--scale", choices=["paper", "tiny"], default="paper")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    parser.add_argument("--variants", help="comma-separated variant names (default: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-parallel", type=int, default=0, help="children at once (default: as CPUs allow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        experiment = load_experiment(args.experiment)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    connect_ray()

    def train_child(child: Child, parent: str, uri: str) -> None:
        train_recipe(child.recipe, child.name, parent_run_id=parent, extra_tags=child_tags(experiment, child, args.scale))

    @ray.remote(num_cpus=0)
    def remote_work(work, child):
        work(child)

    def as_ray_tasks(work, todo: list[Child]) -> list[Exception | None]:
        if not todo:
            return []
        per_child = max(1.0, todo[0].recipe.scaling.num_workers * todo[0].recipe.scaling.cpus_per_worker)
        limit = args.max_parallel or max(1, int(ray.cluster_resources().get("CPU", 1) // per_child))
        errors: list[Exception | None] = [None] * len(todo)
        running: dict = {}
        for index, child in enumerate(todo):
            while len(running) >= limit:
                done, _ = ray.wait(list(running), num_returns=1)
                errors[running.pop(done[0])] = _error_of(done[0])
            running[remote_work.remote(work, child)] = index
        for reference, index in running.items():
            errors[index] = _error_of(reference)
        return errors

    outcome = run_sweep(experiment, args.scale, train_child, seeds=_ints(args.seeds), variants=_names(args.variants),
                        extra=args.overrides, map_children=as_ray_tasks)
    for state, names in outcome.items():
        print(f"{state}: {len(names)}" + (f" ({', '.join(names)})" if names and state == "failed" else ""))
    return 1 if outcome["failed"] else 0


def _error_of(reference) -> Exception | None:
    import ray

    try:
        ray.get(reference)
        return None
    except Exception as error:  # the child's failure, recorded by the sweep
        return error


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",")] if text else None


def _names(text: str | None) -> list[str] | None:
    return text.split(",") if text else None


if __name__ == "__main__":
    sys.exit(main())
