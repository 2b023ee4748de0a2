"""A sweep's children as Ray tasks: each starts its own TorchTrainer, as many at once as the cluster's CPUs allow."""

from __future__ import annotations

from typing import Callable

import ray

from zoo.runs.sweep import Child


@ray.remote(num_cpus=0)
def _run_child(work: Callable[[Child], None], child: Child) -> None:
    work(child)


def _error_of(reference) -> Exception | None:
    try:
        ray.get(reference)
        return None
    except Exception as error:  # the child's failure, recorded by the sweep
        return error


def as_ray_tasks(max_parallel: int = 0) -> Callable[[Callable[[Child], None], list[Child]], list[Exception | None]]:
    """A ``map_children`` for ``run_sweep``: children as Ray tasks, at most ``max_parallel`` at once
    (0: as many as the cluster's CPUs hold the children's workers)."""

    def run(work: Callable[[Child], None], todo: list[Child]) -> list[Exception | None]:
        if not todo:
            return []
        per_child = max(1.0, todo[0].recipe.scaling.num_workers * todo[0].recipe.scaling.cpus_per_worker)
        limit = max_parallel or max(1, int(ray.cluster_resources().get("CPU", 1) // per_child))
        errors: list[Exception | None] = [None] * len(todo)
        running: dict = {}
        for index, child in enumerate(todo):
            while len(running) >= limit:
                done, _ = ray.wait(list(running), num_returns=1)
                errors[running.pop(done[0])] = _error_of(done[0])
            running[_run_child.remote(work, child)] = index
        for reference, index in running.items():
            errors[index] = _error_of(reference)
        return errors

    return run
