"""Evaluate a trained model on benchmarks, as a Ray job or directly:

    ray job submit --working-dir . -- python -m ray_jobs.evaluate MODEL --benchmark FILE [--benchmark FILE ...]

MODEL is a checkpoint directory (save_pretrained form) or an MLflow run (``runs:/RUN_ID``).
For a run, the metrics are logged into it as ``<benchmark>.<task>.<column>`` and the result
files as artifacts under ``eval/<benchmark>``. The evaluation runs as a Ray task that asks
for a GPU when the cluster has one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ray

from zoo.cli.arguments import plugin_list
from zoo.runtime.threads import apply_thread_policy, ceiling_of, release_threads
import zoo.runs.tracking as tracking
from zoo.runs.run_recipe import log_benchmarks


def evaluate_remote(reference: str, benchmarks: dict[str, str], run_id: str | None, uri: str,
                    plugins: list[str]) -> dict[str, float]:
    """On whichever node runs the task: evaluate, and log metrics and result files to the run, if any."""
    apply_thread_policy(ceiling=ceiling_of(ray.get_runtime_context().get_assigned_resources().get("CPU")))
    try:
        return log_benchmarks(tracking.load_model(reference, plugins=plugins), uri, run_id, benchmarks)
    finally:
        release_threads()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a checkpoint directory or runs:/RUN_ID")
    parser.add_argument("--benchmark", action="append", required=True, metavar="[NAME=]FILE",
                        help="an annotation file in the STZoo schema; NAME defaults to the file's stem")
    parser.add_argument("--plugins", type=plugin_list, default=[], metavar="MODULE[,MODULE]",
                        help="plugin modules the checkpoint's recipe names that you trust to be imported")
    args = parser.parse_args(argv)
    benchmarks = {}
    for item in args.benchmark:
        name, _, path = item.rpartition("=")
        benchmarks[name or Path(path).stem] = path
    ray.init(log_to_driver=True)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    run_id = args.model.removeprefix("runs:/").split("/")[0] if args.model.startswith("runs:/") else None
    uri = tracking.tracking_uri()
    metrics = ray.get(ray.remote(num_gpus=gpus)(evaluate_remote).remote(args.model, benchmarks, run_id, uri, args.plugins))
    for key, value in metrics.items():
        print(f"{key:<56} {value:.2f}")
    if run_id:
        print(f"logged to MLflow run {run_id} at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
