"""MLflow tracking: where runs go, one run per training run (continued when resumed), and
metrics that survive a tracking server that is down for a while.

Tracking URI: the recipe's ``tracking.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else an
absolute local SQLite database under ``$STZOO_HOME`` (default ``~/.stzoo``): MLflow's own
default is relative to the working directory, and a Ray job runs in a temporary one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from zoo.config.recipe import Recipe
from zoo.model.video_llm import VideoLLM
from zoo.runs.mlflow_model import checkpoint_in
from components.errors import UserError, error_reason

logger = logging.getLogger("stzoo.tracking")

RUN_NAME_TAG = "stzoo.run_name"
PARAM_VALUE_LIMIT = 6000  # MLflow refuses longer parameter values


def stzoo_home() -> Path:
    return Path(os.environ.get("STZOO_HOME", Path.home() / ".stzoo")).expanduser().resolve()


def tracking_uri(recipe: Recipe | None = None) -> str:
    if recipe is not None and recipe.tracking.tracking_uri:
        return recipe.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = stzoo_home() / "mlflow"
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def experiment_name(recipe: Recipe) -> str:
    return recipe.tracking.experiment or recipe.name


def default_run_name(recipe: Recipe) -> str:
    """The recipe's tracking.run_name, else its name and the fingerprint of what decides its weights:
    an unchanged recipe continues its run, an edited one starts a new one."""
    return recipe.tracking.run_name or f"{recipe.name}-{recipe.fingerprint()}"


class TrackingError(UserError, RuntimeError):
    """The tracking server cannot be reached; the message names the URI and what to do."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """One quick look at an MLflow server before a run depends on it (local stores need none)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except OSError as error:
        problem = type(getattr(error, "reason", error)).__name__
    raise TrackingError(f"MLflow at {uri} does not answer ({problem}); start it, or set MLFLOW_TRACKING_URI to a server "
                        "that runs (unset, runs are tracked in a local database under STZOO_HOME)")


def brief_retries() -> None:
    """MLflow retries a failed request 7 times with doubling waits (over 4 minutes a call) and waits 120 s
    for an answer; a run must not stall that long on a lost server, so this process tries briefly
    (the user's own MLFLOW_HTTP_REQUEST_* settings win)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def client(uri: str):
    return MlflowClient(tracking_uri=uri)


# What an experiment holds, for MLflow UIs that read it (3.x before the GenAI / model-training switch, Databricks):
# the runs table for model training rather than the traces overview of GenAI work. 3.17 reads the link (ui_link).
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment (its runs table) or of a run. MLflow 3.17's UI picks GenAI or model
    training from the link's ``workflowType`` (else the browser's last choice, GenAI at first): without it an
    experiment of training runs opens on an empty traces overview, and its experimentKind tag is not read."""
    page = f"experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{uri.rstrip('/')}/#/{page}?workflowType=machine_learning"


def ensure_experiment(mlflow_client, name: str, uri: str) -> str:
    """The experiment's id (created if new), tagged as model training so the UI opens on its runs."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
            mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        # A local store keeps artifacts beside it, at an absolute path.
        location = (stzoo_home() / "mlflow" / "artifacts").as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})


def find_run(mlflow_client, experiment_id: str, name: str):
    runs = mlflow_client.search_runs([experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def params_of(recipe: Recipe) -> dict[str, str]:
    params = {}
    for key, value in recipe.flat().items():
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        params[key] = text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."
    return params


def tags_of(recipe: Recipe, name: str) -> dict[str, str]:
    tags = {f"component.{kind}": value for kind, value in recipe.component_names.items()}
    tags.update({RUN_NAME_TAG: name, "stzoo.recipe": recipe.name, "mlflow.runName": name})
    if recipe.source:
        tags["stzoo.recipe_file"] = str(recipe.source)
    return tags


@dataclass
class TrackedRun:
    uri: str
    experiment_id: str
    run_id: str
    resumed: bool


def start_or_resume(recipe: Recipe, name: str | None = None, parent_run_id: str | None = None,
                    extra_tags: dict | None = None, resume: bool = True) -> TrackedRun:
    """The MLflow run of this training run: the existing one with the same run name (unless ``resume`` is
    false: a run trained from scratch gets a run of its own), else a new one."""
    uri = tracking_uri(recipe)
    check_reachable(uri)
    brief_retries()
    mlflow_client = client(uri)
    name = name or default_run_name(recipe)
    experiment_id = ensure_experiment(mlflow_client, experiment_name(recipe), uri)
    existing = find_run(mlflow_client, experiment_id, name) if resume else None
    if existing is not None:
        mlflow_client.update_run(existing.info.run_id, status="RUNNING")
        return TrackedRun(uri, experiment_id, existing.info.run_id, resumed=True)
    tags = tags_of(recipe, name)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tags.update(extra_tags or {})
    run = mlflow_client.create_run(experiment_id, tags=tags, run_name=name)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in params_of(recipe).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=params[start : start + 100])
    mlflow_client.log_text(run_id, recipe.dump(), "recipe.yaml")
    return TrackedRun(uri, experiment_id, run_id, resumed=False)


class MLflowMetrics:
    """Metrics to an MLflow run, buffered while the server cannot be reached.

    Training never waits on tracking: a failed send keeps the values, and while the server
    does not answer a send is tried again at most every ``retry_every`` seconds; ``close``
    sends what is left, and what still cannot be sent is written to a JSON-lines file whose
    path the warning names (``stzoo sync`` sends it later).
    """

    def __init__(self, uri: str, run_id: str, unsent_file: Path, max_buffer: int = 200_000, retry_every: float = 30.0):
        brief_retries()  # the buffer, not HTTP retries, bridges an outage
        self.retry_every = retry_every
        self.last_failure = 0.0
        self.client = client(uri)
        self.uri, self.run_id = uri, run_id
        self.unsent_file = Path(unsent_file)
        self.max_buffer = max_buffer
        self.pending: list = []
        self.dropped = 0
        self.failing_since: float | None = None
        self.logged_through = self.last_logged_step()

    def last_logged_step(self) -> int:
        """The last step this run already holds a loss for: a resumed run trains the steps after its checkpoint
        again, and those an earlier attempt logged must not appear twice in the run's charts."""
        try:
            history = self.client.get_metric_history(self.run_id, "loss")
        except Exception:  # the server is away: nothing is known, nothing is skipped
            return 0
        return max((point.step for point in history), default=0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step <= self.logged_through:
            return
        stamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.pending.append(Metric(key, float(value), stamp, step))
        if len(self.pending) > self.max_buffer:
            self.dropped += len(self.pending) - self.max_buffer
            self.pending = self.pending[-self.max_buffer:]
        if time.time() - self.last_failure >= self.retry_every:
            self.flush()

    def flush(self) -> bool:
        while self.pending:
            chunk = self.pending[:1000]
            try:
                self.client.log_batch(self.run_id, metrics=chunk)
            except Exception as error:  # any transport failure: keep the values, training goes on
                self.last_failure = time.time()
                if self.failing_since is None:
                    self.failing_since = time.time()
                    logger.warning("MLflow at %s is not answering (%s); metrics are kept and sent when it is back",
                                   self.uri, type(error).__name__)
                return False
            del self.pending[: len(chunk)]
        if self.failing_since is not None:
            logger.warning("MLflow at %s is back after %.0fs; buffered metrics sent", self.uri, time.time() - self.failing_since)
            self.failing_since = None
        return True

    def close(self) -> None:
        if self.flush() and not self.dropped:
            return
        self.unsent_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.unsent_file, "a") as handle:
            for metric in self.pending:
                handle.write(json.dumps({"key": metric.key, "value": metric.value, "step": metric.step,
                                         "timestamp": metric.timestamp, "uri": self.uri}) + "\n")
        logger.warning("%d metric values could not reach MLflow at %s and were saved to %s%s", len(self.pending),
                       self.uri, self.unsent_file, f"; {self.dropped} older ones were dropped" if self.dropped else "")


def unsent_metrics_file(run_id: str) -> Path:
    """Where metrics that could not reach MLflow are kept (outside any scratch directory of a job)."""
    return stzoo_home() / "unsent_metrics" / f"{run_id}.jsonl"


def log_metrics_once(uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Values measured once per run (benchmark columns), in as few requests as MLflow allows."""
    stamp = int(time.time() * 1000)
    batch = [Metric(key, float(value), stamp, 0) for key, value in metrics.items()]
    for start in range(0, len(batch), 1000):
        client(uri).log_batch(run_id, metrics=batch[start : start + 1000])


def log_metric_records(uri: str, run_id: str, records: list[dict]) -> None:
    """Metrics kept as JSON lines (key, value, step, timestamp) while the server was away."""
    batch = [Metric(r["key"], float(r["value"]), int(r["timestamp"]), int(r["step"])) for r in records]
    for start in range(0, len(batch), 1000):
        client(uri).log_batch(run_id, metrics=batch[start : start + 1000])


def start_system_metrics(uri: str, run_id: str):
    """CPU, memory (and GPU, where pynvml sees one) every 10 s into the run; none if MLflow cannot start it."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # optional psutil/pynvml

        monitor = SystemMetricsMonitor(run_id, sampling_interval=10, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as error:  # system metrics are a nicety; training must not depend on them
        logger.warning("system metrics are off: %s", error)
        return None


def log_directory(uri: str, run_id: str, directory: Path, artifact_path: str) -> None:
    client(uri).log_artifacts(run_id, str(directory), artifact_path)


def finish(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status=status)


RUN_ID = re.compile(r"[0-9a-f]{32}")


def model_directory(reference: str) -> Path:
    """A checkpoint directory, or an MLflow run (``runs:/RUN_ID`` or a bare run id) whose model artifact is fetched."""
    path = Path(reference)
    if path.exists():
        # a run's output folder: its final model (the last checkpoint otherwise lives under checkpoints/)
        if not (path / "recipe.yaml").exists() and (path / "final" / "recipe.yaml").exists():
            return path / "final"
        return checkpoint_in(path)  # a downloaded MLflow model: the checkpoint inside it
    if not reference.startswith("runs:/") and not RUN_ID.fullmatch(reference):
        raise FileNotFoundError(f"{reference}: no such checkpoint directory (an MLflow run is given as runs:/RUN_ID)")
    return download_model_artifact(reference)


def load_model(reference: str, device=None, plugins: list[str] | tuple[str, ...] = ()) -> VideoLLM:
    """The model of a checkpoint directory or an MLflow run, on ``device`` (default: a GPU if there is one);
    ``plugins``: the modules the user trusts among those the checkpoint's recipe names."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = VideoLLM.from_pretrained(model_directory(reference), device=device, plugins=plugins)
    if not Path(reference).exists():  # a run: named as such, not by the temporary folder its artifact came to
        model.source = reference if reference.startswith("runs:/") else f"runs:/{reference}"
    return model


def download_model_artifact(reference: str, uri: str | None = None) -> Path:
    """``runs:/RUN_ID`` (or a bare run id): the checkpoint in the run's ``model`` artifact, downloaded to a local
    directory from ``uri`` (default: the tracking URI in force)."""

    run_id = reference.removeprefix("runs:/").split("/")[0]
    uri = uri or tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model")
    except Exception as error:
        raise FileNotFoundError(
            f"{reference!r} is neither a checkpoint directory nor an MLflow run with a 'model' artifact at {uri} "
            f"({type(error).__name__}: {error_reason(error, 160)})"
        ) from None
    return checkpoint_in(Path(local))  # runs log an MLflow model around the checkpoint (zoo.runs.mlflow_model)
