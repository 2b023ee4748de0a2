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
import tempfile
from pathlib import Path


def evaluate_remote(reference: str, benchmarks: dict[str, str], run_id: str | None, uri: str) -> dict[str, dict[str, float]]:
    """On whichever node runs the task: evaluate, and log metrics and result files to the run, if any."""
    from evals.scoring import flatten_metrics
    from zoo import tracking
    from zoo.evaluation import evaluate
    from zoo.inference import load_model

    model = load_model(reference)
    metrics = {}
    with tempfile.TemporaryDirectory() as out:
        for name, annotation_file in benchmarks.items():
            results = evaluate(model, annotation_file, out_dir=Path(out) / name, progress=False)
            metrics[name] = flatten_metrics(results)
        if run_id:
            client = tracking.client(uri)
            for benchmark, values in metrics.items():
                for key, value in values.items():
                    client.log_metric(run_id, f"{benchmark}.{key}", value)
            tracking.log_directory(uri, run_id, Path(out), "eval")
    return metrics


def main(argv: list[str] | None = None) -> int:
    import ray

    from zoo import tracking

    parser = argparse.ArgumentParser(prog="python -m ray_jobs.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a checkpoint directory or runs:/RUN_ID")
    parser.add_argument("--benchmark", action="append", required=True, metavar="[NAME=]FILE",
                        help="an annotation file in the STZoo schema; NAME defaults to the file's stem")
    args = parser.parse_args(argv)
    benchmarks = {}
    for item in args.benchmark:
        name, _, path = item.rpartition("=")
        benchmarks[name or Path(path).stem] = path
    ray.init(log_to_driver=True)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    run_id = args.model.removeprefix("runs:/").split("/")[0] if args.model.startswith("runs:/") else None
    uri = tracking.tracking_uri()
    task = ray.remote(num_gpus=gpus)(evaluate_remote)
    metrics = ray.get(task.remote(args.model, benchmarks, run_id, uri))
    for benchmark, values in metrics.items():
        for key, value in values.items():
            print(f"{benchmark}.{key:<48} {value:.2f}")
    if run_id:
        print(f"logged to MLflow run {run_id} at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
