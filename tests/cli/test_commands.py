"""The stzoo subcommands that use a trained model, run as a user runs them: eval, generate, attention,
resolve and data probe on a model trained here for a few steps."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import tiny_recipe, write_direction_task
from zoo.cli import main
from zoo.config.recipe import recipe_from_dict
from zoo.training.trainer import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 4 steps on the direction task, and that task's test file."""
    root = tmp_path_factory.mktemp("direction")
    train_file, test_file = write_direction_task(root, train=8, test=4)
    data = tiny_recipe(frames=8)
    data["data"]["train"] = str(train_file)
    data["train"].update({"max_steps": 4, "batch_size": 2})
    data["eval"] = {"max_new_tokens": 4}
    Trainer(recipe_from_dict(data), output_dir=root / "run", device="cpu").fit()
    return root, root / "run" / "final", test_file


def test_eval_prints_the_metrics_and_writes_results(trained, tmp_path, capsys):
    root, model, test_file = trained
    assert main(["eval", str(model), "--benchmark", str(test_file), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "multiple_choice.accuracy" in out and "predictions:" in out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert 0 <= results["multiple_choice"]["accuracy"] <= 100
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 4


def test_generate_streams_an_answer(trained, capsys):
    root, model, _ = trained
    video = root / "videos" / "000.mp4"
    assert main(["generate", str(model), "--video", str(video), "--prompt", "Which way?", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_attention_writes_its_report(trained, tmp_path, capsys):
    _, model, test_file = trained
    assert main(["attention", str(model), "--benchmark", str(test_file), "--max-samples", "2", "--out", str(tmp_path)]) == 0
    shares = json.loads((tmp_path / "answer_attention.json").read_text())
    assert shares and all(abs(sum(kinds.values()) - 1) < 1e-3 for kinds in shares.values())


def test_a_mistyped_model_path_is_reported_as_a_missing_directory(capsys):
    assert main(["eval", "runs/no_such_model/final", "--benchmark", "x.json"]) == 2
    assert "runs/no_such_model/final: no such checkpoint directory" in capsys.readouterr().err


def test_resolve_and_probe(trained, capsys):
    root, _, _ = trained
    assert main(["resolve", "recipes/tiny/baseline.yaml", "--set", "model.mask=frame_block"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["mask"] == {"name": "frame_block"}
    assert main(["data", "probe", str(root / "videos" / "000.mp4")]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 8
