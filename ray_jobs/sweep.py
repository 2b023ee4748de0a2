"""Run an experiment file as a Ray job: every variant x seed a Ray Train run and a child MLflow run.

    ray job submit --working-dir . -- python -m ray_jobs.sweep experiments/mash_vlm_table7.yaml --scale tiny

Children run in parallel as the cluster's resources allow (each as a Ray task that starts its
own TorchTrainer), at most --max-parallel at once; see zoo.runs.sweep for failures and re-runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from components.config import RecipeError
from zoo.config.experiment import load_experiment
from zoo.launch.ray_sweep import as_ray_tasks
from zoo.launch.ray_train import RayLauncher, connect_ray
from zoo.runs.sweep import add_selection_arguments, print_outcome, run_sweep, selection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.sweep", description=__doc__.splitlines()[0])
    add_selection_arguments(parser)
    parser.add_argument("--max-parallel", type=int, default=0, help="children at once (default: as CPUs allow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        experiment = load_experiment(args.experiment)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    connect_ray()
    outcome = run_sweep(experiment, args.scale, lambda child: RayLauncher(child.name), **selection(args),
                        map_children=as_ray_tasks(args.max_parallel))
    return print_outcome(outcome)


if __name__ == "__main__":
    sys.exit(main())
