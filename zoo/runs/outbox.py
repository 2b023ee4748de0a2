"""What a run writes to MLflow after training (model, results, metrics, plot, status), kept on disk when
the tracking server is lost, and sent later.

A server that stops answering mid-run must not cost the run: training already buffers its metrics
(tracking.MLflowMetrics); here each later write is tried, retried briefly once the server answers
again, and otherwise appended to ``$STZOO_HOME/unsent_runs/<run_id>/pending.jsonl`` (result files
copied beside it; the model stays where training saved it). Evaluation runs either way. What waits
is sent, and the run closed, by ``stzoo sync`` or by the next resume of the same run.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import zoo.runs.tracking as tracking
from zoo.runs.plots import plot_run_history

logger = logging.getLogger("stzoo.tracking")

RETURN_WAIT = 15.0  # seconds a lost server is given to come back before the run goes on without it


def outbox_folder(run_id: str) -> Path:
    return tracking.stzoo_home() / "unsent_runs" / run_id


def perform(uri: str, run_id: str, write: dict) -> None:
    """One write to the run: artifacts, a text file, metrics measured once, the loss plot, or its end status."""
    client = tracking.client(uri)
    kind = write["kind"]
    if kind == "artifacts":
        client.log_artifacts(run_id, write["path"], write["artifact_path"])
    elif kind == "text":
        client.log_text(run_id, write["text"], write["file"])
    elif kind == "metrics":
        tracking.log_metrics_once(uri, run_id, write["values"])
    elif kind == "plot":
        with tempfile.TemporaryDirectory() as plots:
            path = plot_run_history(uri, run_id, Path(plots) / "training_loss.png")
            if path is not None:
                client.log_artifact(run_id, str(path), "plots")
    elif kind == "status":
        client.set_terminated(run_id, status=write["status"])
    else:
        raise ValueError(f"unknown pending write {kind!r}")


def server_returns(uri: str, wait: float) -> bool:
    deadline = time.time() + wait
    while True:
        try:
            tracking.check_reachable(uri, timeout=2.0)
            return True
        except tracking.TrackingError:
            if time.time() >= deadline:
                return False
            time.sleep(1.0)


class RunOutbox:
    """The writes of one run after training: sent now while the server answers, kept for later once it does not."""

    def __init__(self, run: tracking.TrackedRun, return_wait: float = RETURN_WAIT):
        self.run = run
        self.return_wait = return_wait
        self.folder = outbox_folder(run.run_id)
        self.offline = False

    def log_directory(self, path: Path, artifact_path: str, copy_if_kept: bool = False) -> None:
        """``copy_if_kept``: the directory is temporary (evaluation results), so a kept write keeps a copy."""
        self.write({"kind": "artifacts", "path": str(path), "artifact_path": artifact_path}, copy_if_kept)

    def log_text(self, text: str, file: str) -> None:
        self.write({"kind": "text", "text": text, "file": file})

    def log_metrics(self, values: dict[str, float]) -> None:
        self.write({"kind": "metrics", "values": values})

    def log_loss_plot(self) -> None:
        self.write({"kind": "plot"})

    def finish(self, status: str = "FINISHED") -> None:
        self.write({"kind": "status", "status": status})
        if self.offline:
            print(f"warning: MLflow at {self.run.uri} was lost during the run; what it did not receive (metrics, "
                  f"model, results, the {status} status) waits in {self.folder} and "
                  f"{tracking.unsent_metrics_file(self.run.run_id)}: `stzoo sync` sends it once the server is back "
                  "(the next resume of this run does too)", flush=True)

    def write(self, write: dict, copy_if_kept: bool = False) -> None:
        if not self.offline:
            try:
                perform(self.run.uri, self.run.run_id, write)
                return
            except Exception as error:  # any transport failure; a server that answers gets one more try
                if server_returns(self.run.uri, self.return_wait):
                    perform(self.run.uri, self.run.run_id, write)
                    return
                self.offline = True
                logger.warning("MLflow at %s stopped answering (%s); the run goes on and keeps what it would send in %s",
                               self.run.uri, type(error).__name__, self.folder)
        self.keep(write, copy_if_kept)

    def keep(self, write: dict, copy_if_kept: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if copy_if_kept:
            copy = self.folder / f"{write['artifact_path']}-{time.time_ns()}"
            shutil.copytree(write["path"], copy)
            write = {**write, "path": str(copy)}
        with open(self.folder / "pending.jsonl", "a") as handle:
            handle.write(json.dumps({"uri": self.run.uri, **write}) + "\n")


def send_pending(run_id: str) -> int:
    """Send what waits for ``run_id`` (training metrics first, then the writes in order); returns how many
    were sent. Stops at the first that fails, keeping it and those after it."""
    sent = send_unsent_metrics(run_id)
    pending_file = outbox_folder(run_id) / "pending.jsonl"
    if not pending_file.is_file():
        return sent
    writes = [json.loads(line) for line in pending_file.read_text().splitlines() if line.strip()]
    for index, write in enumerate(writes):
        try:
            perform(write["uri"], run_id, write)
        except Exception:
            pending_file.write_text("".join(json.dumps(w) + "\n" for w in writes[index:]))
            raise
        sent += 1
    shutil.rmtree(outbox_folder(run_id), ignore_errors=True)
    return sent


def send_unsent_metrics(run_id: str) -> int:
    """The training metrics a run's buffer could not deliver (tracking.MLflowMetrics.close wrote them)."""
    path = tracking.unsent_metrics_file(run_id)
    if not path.is_file():
        return 0
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_server: dict[str, list[dict]] = {}
    for record in records:  # files written before the URI was recorded go to this process's server
        by_server.setdefault(record.get("uri") or tracking.tracking_uri(), []).append(record)
    for uri, batch in by_server.items():
        tracking.log_metric_records(uri, run_id, batch)
    path.unlink()
    return len(records)


def runs_waiting() -> list[str]:
    """Run ids with writes or metrics that never reached their server."""
    home = tracking.stzoo_home()
    ids = {p.name for p in (home / "unsent_runs").glob("*") if p.is_dir()}
    ids |= {p.stem for p in (home / "unsent_metrics").glob("*.jsonl")}
    return sorted(ids)
