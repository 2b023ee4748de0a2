"""Sweeps and comparisons: child runs under a parent, a failed variant recorded, re-runs skip finished
children, `stzoo compare` agrees with MLflow, and the MLflow UI shows the runs in a real browser."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.helpers import REPO
import zoo.launch.servers as local
from zoo.evaluation.metrics.scoring import is_bookkeeping
from zoo.model.inference import answer_stream
from zoo.runs.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND, load_model, ui_link

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1000", "--virtual-time-budget=20000"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    servers = local.LocalServers(home=str(tmp_path_factory.mktemp("home")))
    try:
        local.start_mlflow(servers)
        yield servers
    finally:
        local.stop_mlflow(servers)


def stzoo(*args, env):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=1200, env=env)


def write_experiment(tmp_path: Path) -> Path:
    from zoo.data.action_scene import SuiteOptions, generate_suite

    suite = tmp_path / "suite"
    generate_suite(suite, seed=2, videos=30, options=SuiteOptions(seconds=1.0))
    experiment = tmp_path / "two_masks.yaml"
    experiment.write_text(yaml.safe_dump({
        "name": "two_masks", "paper": "causal against frame-block attention", "base": str(REPO / "recipes/tiny/baseline.yaml"),
        "tiny": str(REPO / "recipes/tiny/baseline.yaml"), "seeds": [0, 1],
        "columns": ["open.open_ended.usual.action", "mc.multiple_choice.accuracy"],
        "set": {"train.max_steps": 6, "train.batch_size": 2, "eval.max_samples": 6, "data.synthetic": None,
                "data.train": str(suite / "train.json"),
                "data.eval": {"open": str(suite / "test_open.json"), "mc": str(suite / "test_mc.json")}},
        "variants": {
            "causal": {"set": {"model.mask": "causal"}},
            "frame_block": {"set": {"model.mask": "frame_block"}, "paper": {"MC": 50.0}},
            "broken": {"set": {"model.llm.config.num_attention_heads": 3}},  # 64 is not divisible by 3
        },
        "expectations": [{"variant": "frame_block", "column": "mc.multiple_choice.accuracy", "expect": "above",
                          "than": "causal", "why": "a stated direction, judged on evidence"}],
    }))
    return experiment


@pytest.fixture(scope="module")
def swept(mlflow_server, tmp_path_factory):
    """A 3-variant x 2-seed sweep (one variant cannot be built), then a re-run of two variants."""
    from mlflow.tracking import MlflowClient

    tmp_path = tmp_path_factory.mktemp("sweep")
    experiment = write_experiment(tmp_path)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.mlflow_url, "HF_HUB_OFFLINE": "1",
           "STZOO_HOME": str(tmp_path / "stzoo")}
    first = stzoo("sweep", str(experiment), "--scale", "tiny", "--output", str(tmp_path / "runs"), env=env)
    again = stzoo("sweep", str(experiment), "--scale", "tiny", "--variants", "causal,frame_block",
                  "--output", str(tmp_path / "runs"), env=env)
    client = MlflowClient(mlflow_server.mlflow_url)
    found = client.get_experiment_by_name("two_masks")
    runs = client.search_runs([found.experiment_id]) if found else []
    return dict(tmp_path=tmp_path, experiment=experiment, env=env, first=first, again=again, client=client,
                experiment_id=found.experiment_id if found else None, runs=runs)


def sweep_runs(swept) -> tuple:
    parent = next(r for r in swept["runs"] if r.data.tags.get("stzoo.role") == "sweep")
    children = [r for r in swept["runs"] if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def test_a_sweep_records_every_child_and_a_rerun_skips_the_finished(swept):
    first, again = swept["first"], swept["again"]
    assert first.returncode == 1 and "finished: 4" in first.stdout and "failed: 2" in first.stdout, first.stdout + first.stderr
    assert again.returncode == 0 and "skipped: 4" in again.stdout and "finished: 0" in again.stdout
    _, children = sweep_runs(swept)
    assert len(children) == 6
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(failed) == 2 and all("number of attention heads (3)" in r.data.tags["stzoo.error"] for r in failed)


def test_stzoo_compare_agrees_with_the_logged_runs(swept):
    parent, children = sweep_runs(swept)
    out = swept["tmp_path"] / "comparison"
    compared = stzoo("compare", str(swept["experiment"]), "--scale", "tiny", "--out", str(out), env=swept["env"])
    assert compared.returncode == 0, compared.stderr
    assert "| causal |" in compared.stdout and "| frame_block |" in compared.stdout and "broken" not in compared.stdout
    rows = {row["variant"]: row for row in csv.DictReader(open(out / "table.csv"))}
    for variant in ("causal", "frame_block"):
        finished = [r for r in children if r.data.tags["stzoo.variant"] == variant and r.info.status == "FINISHED"]
        for key in ("open.open_ended.usual.action", "mc.multiple_choice.accuracy"):
            expected = sum(r.data.metrics[key] for r in finished) / len(finished)
            assert float(rows[variant][f"{key} mean"]) == pytest.approx(expected)
    assert (out / "metrics.png").stat().st_size > 5000 and (out / "training_loss.png").stat().st_size > 5000
    logged = {a.path for a in swept["client"].list_artifacts(parent.info.run_id, "comparison")}
    assert "comparison/table.md" in logged
    # Uncertainty: seeds per row, chance per column, items per seed, and the difference from the reference.
    lines = compared.stdout.splitlines()
    assert lines[0].startswith("| variant | seeds |") and any(line.startswith("| causal | 2 |") for line in lines)
    chance = next(line for line in lines if line.startswith("| chance |")).split("|")
    assert chance[3].strip() == "n/a" and 20.0 <= float(chance[4]) <= 50.0  # open-ended has none; MC: 1/candidates
    # Items per column: the open-ended column counts the usual-split entries among the 6 evaluated, MC all 6.
    first_six = json.loads((swept["tmp_path"] / "suite" / "test_open.json").read_text())[:6]
    usual = sum(entry["split"] == "usual" for entry in first_six)
    assert next(line for line in lines if line.startswith("| test items per seed |")).split("|")[3:5] == [f" {usual} ", " 6 "]
    assert "Difference from causal" in compared.stdout
    difference = next(line for line in lines[lines.index(next(l for l in lines if l.startswith("Difference"))):]
                      if line.startswith("| frame_block |"))
    mc = difference.split("|")[3].strip()  # "+a [+l, +h]" with an optional star
    value, low, high = (float(x) for x in mc.replace("[", " ").replace(",", " ").replace("]", " ").replace("*", " ").split())
    assert low <= value <= high and (mc.endswith("*") == (low > 0 or high < 0))
    expected = (float(rows["frame_block"]["mc.multiple_choice.accuracy mean"])
                - float(rows["causal"]["mc.multiple_choice.accuracy mean"]))
    assert value == pytest.approx(expected, abs=0.01)
    # The expectation is judged on the same paired interval, and --check turns its verdict into the exit status.
    verdict = next(line for line in lines if line.startswith("| frame_block above causal on mc.multiple_choice.accuracy |"))
    held = verdict.split("|")[2].strip() == "held"
    assert held == (low > 0) and f"frame_block - causal = {value:.2f} [{low:.2f}, {high:.2f}] over 2 seeds x 6 items" in verdict
    checked = stzoo("compare", str(swept["experiment"]), "--scale", "tiny", "--out", str(out), "--check", "--bootstrap", "200",
                    env=swept["env"])
    assert checked.returncode == (0 if held else 1), checked.stdout[-500:]


def test_a_column_no_run_logged_is_one_sentence_naming_the_logged_one(swept):
    data = yaml.safe_load(swept["experiment"].read_text())
    data["columns"] = ["multiple_choice.accuracy"]
    data.pop("expectations")
    wrong = swept["tmp_path"] / "wrong_column.yaml"
    wrong.write_text(yaml.safe_dump(data))
    compared = stzoo("compare", str(wrong), "--scale", "tiny", "--out", str(swept["tmp_path"] / "c2"), env=swept["env"])
    assert compared.returncode == 2
    assert compared.stderr.strip() == (f"error: {wrong}: columns: 'multiple_choice.accuracy' matches no metric the runs "
                                       "logged; the runs logged mc.multiple_choice.accuracy (columns are "
                                       "<benchmark>.<task>.<column>, the benchmark named under the recipe's data.eval)")


def test_the_mlflow_ui_compares_the_runs_in_a_browser(swept, mlflow_server):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed")
    _, children = sweep_runs(swept)
    finished_children = [r for r in children if r.info.status == "FINISHED"]
    ids = [r.info.run_id for r in finished_children]
    url = f"{mlflow_server.mlflow_url}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([swept['experiment_id']])}"
    profile = ["--user-data-dir=" + str(swept["tmp_path"] / "chromium")]
    dom = subprocess.run([CHROMIUM, *BROWSER_FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    assert f"Comparing {len(ids)} Runs" in dom
    for run in finished_children:
        assert run.info.run_name in dom
    # The page lists metrics alphabetically in a virtualised table: these come early enough to be rendered.
    for key in ("loss", "mc.multiple_choice.accuracy", "Metrics", "Parameters"):
        assert key in dom
    screenshot = swept["tmp_path"] / "mlflow_compare.png"
    subprocess.run([CHROMIUM, *BROWSER_FLAGS, *profile, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20000
    if os.environ.get("STZOO_UPDATE_SCREENSHOTS"):
        shutil.copy(screenshot, REPO / "docs" / "images" / "mlflow_compare.png")


def finished_child(swept):
    _, children = sweep_runs(swept)
    return next(r for r in children if r.info.status == "FINISHED")


def test_a_run_logs_its_model_as_an_mlflow_model_that_registers_and_answers_about_a_video(swept, mlflow_server, monkeypatch):
    run = finished_child(swept)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.mlflow_url)
    mlflow.set_tracking_uri(mlflow_server.mlflow_url)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "two-masks-video-llm")
    pyfunc = mlflow.pyfunc.load_model(f"models:/two-masks-video-llm/{version.version}")
    video = sorted((swept["tmp_path"] / "suite" / "videos").rglob("*.mp4"))[0]
    question = "What is the person doing?"
    answers = pyfunc.predict(pd.DataFrame({"video": [str(video)], "prompt": [question]}), params={"max_new_tokens": 6})
    # The same model through STZoo's own loading of runs:/ID (the checkpoint inside the MLflow model) answers alike.
    model = load_model(f"runs:/{run.info.run_id}", device="cpu")
    assert list(answers) == ["".join(answer_stream(model, str(video), question, max_new_tokens=6)).strip()]
    assert model.source == f"runs:/{run.info.run_id}"


def test_the_runs_log_scores_as_metrics_and_counts_as_an_artifact(swept):
    run = finished_child(swept)
    assert "mc.multiple_choice.accuracy" in run.data.metrics and "loss" in run.data.metrics
    assert not [name for name in run.data.metrics if is_bookkeeping(name)]
    counts = Path(swept["client"].download_artifacts(run.info.run_id, "eval/counts.json", str(swept["tmp_path"])))
    assert json.loads(counts.read_text())["mc"]["multiple_choice.count"] == 6
    experiment = swept["client"].get_experiment(swept["experiment_id"])
    assert experiment.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND


def browse(swept, url: str) -> str:
    """The page's text as rendered (tags, styles and scripts left out), after its scripts ran."""
    profile = ["--user-data-dir=" + str(swept["tmp_path"] / "chromium")]
    html = subprocess.run([CHROMIUM, *BROWSER_FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True,
                          timeout=180).stdout
    html = re.sub(r"<(style|script)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_mlflow_ui_opens_an_experiment_on_its_runs_and_a_run_on_its_scores(swept, mlflow_server):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed; .ci/run installs Debian's chromium package")
    _, children = sweep_runs(swept)
    page = browse(swept, ui_link(mlflow_server.mlflow_url, swept["experiment_id"]))
    parent, _ = sweep_runs(swept)  # the runs table (children folded under their sweep), not the traces overview
    assert "Run Name" in page and parent.info.run_name in page and f"{len(swept['runs'])} matching runs" in page
    assert "Token Usage" not in page
    run = finished_child(swept)
    page = browse(swept, ui_link(mlflow_server.mlflow_url, swept["experiment_id"], run.info.run_id))
    assert "mc.multiple_choice.accuracy" in page and "loss" in page
    for counted in ("multiple_choice.count", "coverage.entries", "open_ended.missing", "binary.pairs"):
        assert counted not in page


def test_an_edited_experiment_reruns_what_changed_and_compare_keeps_the_runs_of_the_file_as_it_is(swept):
    """Kept last: it adds runs to the sweep's store. Two runs of causal at fewer evaluation samples are new
    children; frame_block is skipped; compare on either version of the file reads only that version's runs."""
    data = yaml.safe_load(swept["experiment"].read_text())
    data["variants"]["causal"]["set"]["eval.max_samples"] = 4
    edited = swept["tmp_path"] / "two_masks_edited.yaml"
    edited.write_text(yaml.safe_dump(data))
    rerun = stzoo("sweep", str(edited), "--scale", "tiny", "--variants", "causal,frame_block",
                  "--output", str(swept["tmp_path"] / "runs"), env=swept["env"])
    assert rerun.returncode == 0 and "finished: 2" in rerun.stdout and "skipped: 2" in rerun.stdout, rerun.stdout
    for path, kept_items in ((edited, 4), (swept["experiment"], 6)):
        out = swept["tmp_path"] / f"compared_{path.stem}"
        compared = stzoo("compare", str(path), "--scale", "tiny", "--out", str(out), "--bootstrap", "50", env=swept["env"])
        assert compared.returncode == 0, compared.stderr
        assert "left out 2 finished runs made by another version of the experiment file or its recipes (2 of causal)" in compared.stdout
        assert any(line.startswith("| causal | 2 |") for line in compared.stdout.splitlines())
        verdict = next(line for line in compared.stdout.splitlines() if line.startswith("| frame_block above causal"))
        assert f"over 2 seeds x {kept_items} items" in verdict
