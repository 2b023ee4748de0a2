"""Train a recipe as a Ray job, tracked in MLflow:

    ray job submit --working-dir . -- python -m ray_jobs.train RECIPE [--set key=value ...] [--run-name NAME]

The driver resolves the recipe and calls ``run_recipe`` with the Ray Train launcher
(zoo.launch.ray_train): every stage trains on the recipe's ``scaling``, then the final model
is logged, evaluated on the recipe's benchmarks and the metrics logged, exactly as
``stzoo train`` does in one process. The same run name continues its MLflow run and its
Ray checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import sys

from components.errors import UserError
from zoo.config.recipe import load_recipe
from zoo.launch.ray_train import RayLauncher, connect_ray
import zoo.runs.tracking as tracking
from zoo.runs.run_recipe import run_recipe


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
        name = args.run_name or tracking.default_run_name(recipe)
        connect_ray()
        result = run_recipe(recipe, RayLauncher(name), name)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for key, value in result.metrics.items():
        print(f"[{name}] {key} = {value:.2f}")
    print(f"[{name}] done; MLflow: {result.run.uri}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
