"""Plots of runs: training-loss curves (one run, or several for a comparison)."""

from __future__ import annotations

from pathlib import Path
from zoo.runs.tracking import client

def loss_keys(metric_names) -> list[str]:
    """The total loss and its terms among a run's logged metric names: ``loss`` and every ``loss/<term>``."""
    return sorted(name for name in metric_names if name == "loss" or name.startswith("loss/"))


def loss_history(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    mlflow_client = client(uri)
    history = {}
    for key in loss_keys(mlflow_client.get_run(run_id).data.metrics):
        points = mlflow_client.get_metric_history(run_id, key)
        if points:
            history[key] = sorted((p.step, p.value) for p in points)
    return history


def plot_loss_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        steps, values = zip(*points)
        axis.plot(steps, values, label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_run_history(uri: str, run_id: str, path: Path) -> Path | None:
    history = loss_history(uri, run_id)
    if not history:
        return None
    return plot_loss_curves(history, path, f"training loss, run {run_id[:8]}")
