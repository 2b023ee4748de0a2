"""The single-run table (`make demo`'s comparison): each score with its 95% interval over the test items, the
column's chance level and test items, and what cannot be shown said so instead of a number."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tests.evaluation.test_bootstrap import choices
from zoo.evaluation.metrics.scoring import flatten_metrics, score, write_results
from zoo.runs.run_table import run_table
from zoo.runs.tables import Column

COLUMNS = [Column("mc.multiple_choice.accuracy", "multiple choice"), Column("open.open_ended.avg", "open-ended")]


def logged_run(client, experiment_id, tmp_path, name, right_percent, keep_items=True):
    """A run scored by the evaluation's own code on 300 four-way questions, right on ``right_percent`` of them,
    with its per-entry results logged where evaluations log them (eval/mc/predictions.jsonl)."""
    entries = choices(300, 4)
    predictions = {e["id"]: "(A)" if i % 100 < right_percent else "(B)" for i, e in enumerate(entries)}
    results = score(entries, predictions)
    run = client.create_run(experiment_id, run_name=name)
    for key, value in flatten_metrics({k: v for k, v in results.items() if k != "coverage"}).items():
        client.log_metric(run.info.run_id, f"mc.{key}", value)
    if keep_items:
        write_results(results, predictions, entries, tmp_path / name)
        client.log_artifact(run.info.run_id, str(tmp_path / name / "predictions.jsonl"), "eval/mc")
    return client.get_run(run.info.run_id)


def test_each_cell_has_its_interval_and_each_column_its_chance_and_items(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("demo-table", artifact_location=str(tmp_path / "artifacts"))
    rows = [("good", logged_run(client, experiment_id, tmp_path, "good", 90)),
            ("guess", logged_run(client, experiment_id, tmp_path, "guess", 25)),
            ("old", logged_run(client, experiment_id, tmp_path, "old", 50, keep_items=False))]
    lines = run_table(uri, rows, COLUMNS, first="recipe", replicates=400).splitlines()
    assert lines[0] == "| recipe | multiple choice | open-ended |"
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    # 90% of 300: a binomial standard error of 1.73 points, so the 95% interval is about 90 +- 3.4.
    value, bounds = cells["good"][0].split(" ", 1)
    low, high = (float(x) for x in bounds.strip("[]").split(", "))
    assert value == "90.00" and 86.0 <= low <= 87.5 and 92.5 <= high <= 94.0
    assert cells["guess"][0].startswith("25.00 [") and cells["good"][1] == "missing"
    assert cells["old"][0] == "50.00 (no interval: no per-entry results kept)"
    assert cells["chance"] == ["25.00", "?"] and cells["test items"] == ["300", "?"]
