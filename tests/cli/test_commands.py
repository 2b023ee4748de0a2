"""The stzoo subcommands that use a trained model, run as a user runs them: eval, generate, attention,
resolve and data probe on a model trained here for a few steps."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest
import transformers
import yaml

from tests.helpers import REPO, tiny_recipe, write_direction_task
from zoo.cli import main
from zoo.config.recipe import load_recipe, recipe_from_dict
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
    (root / "recipe.yaml").write_text(recipe_from_dict(data).dump())
    return root, root / "run" / "final", test_file


def test_eval_prints_the_metrics_and_writes_results(trained, tmp_path, capsys):
    root, model, test_file = trained
    assert main(["eval", str(model), "--benchmark", str(test_file), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "multiple_choice.accuracy" in out and "predictions:" in out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert 0 <= results["multiple_choice"]["accuracy"] <= 100
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 4


def test_results_say_what_they_were_measured_on_as_lmms_eval_writes_it(trained, tmp_path):
    root, model, test_file = trained
    before = time.time()
    assert main(["eval", str(model), "--benchmark", str(test_file), "--out", str(tmp_path / "eval"),
                 "--max-samples", "3"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["multiple_choice"]["count"] == 3  # the scores stay where they were
    assert results["model_source"] == str(model.resolve()) and results["config"]["model_args"] == f"pretrained={model.resolve()}"
    assert results["config"]["gen_kwargs"]["max_new_tokens"] == 4 and results["config"]["limit"] == 3
    assert results["recipe_fingerprint"] == load_recipe(root / "recipe.yaml").fingerprint()  # the run's, as trained
    assert results["benchmark"] == {"file": str(test_file.resolve()), "format": "stzoo",
                                    "sha256": hashlib.sha256(test_file.read_bytes()).hexdigest()}
    assert results["video"]["frames"] == 8 and results["transformers_version"] == transformers.__version__
    assert before <= results["start_time"] <= results["end_time"] <= time.time()
    assert results["date"] == time.strftime("%Y%m%d_%H%M%S", time.localtime(results["start_time"]))
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert results["git_hash"] == (head.stdout.strip() or None)
    assert results["package_versions"]["torch"] and results["chat_template_sha"] == hashlib.sha256(
        results["chat_template"].encode()).hexdigest()


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


def benchmark_with_a_broken_video(root, tmp_path, count: int = 16, broken: int = 8):
    """``count`` multiple-choice entries over the direction videos; entry ``broken`` points at an empty file."""
    entries = json.loads((root / "test.json").read_text())
    entries = [dict(entries[i % len(entries)], id=f"q{i}", video=str(root / entries[i % len(entries)]["video"]))
               for i in range(count)]
    (tmp_path / "empty.mp4").write_bytes(b"")
    entries[broken]["video"] = str(tmp_path / "empty.mp4")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(entries))
    return path


def test_eval_keeps_the_answers_before_a_bad_video(trained, tmp_path, capsys):
    """Issue 20, item 6: a bad video after 8 of 16 answers used to leave --out empty."""
    root, model, _ = trained
    bench = benchmark_with_a_broken_video(root, tmp_path)
    assert main(["eval", str(model), "--benchmark", str(bench), "--out", str(tmp_path / "stopped")]) == 2
    err = capsys.readouterr().err
    assert "entry 8 (id q8)" in err and f"the 8 answers before it are in {tmp_path / 'stopped' / 'predictions.jsonl'}" in err
    assert "--skip-bad-videos" in err and "Traceback" not in err
    assert "\nerror: " in err  # on a line of its own, not glued to the progress bar (issue 20, item 9)
    lines = [json.loads(line) for line in (tmp_path / "stopped" / "predictions.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"q{i}" for i in range(8)] and all(line["prediction"] is not None for line in lines)


def test_eval_skips_bad_videos_when_asked_and_lists_them(trained, tmp_path, capsys):
    root, model, _ = trained
    bench = benchmark_with_a_broken_video(root, tmp_path)
    assert main(["eval", str(model), "--benchmark", str(bench), "--out", str(tmp_path / "skipped"), "--skip-bad-videos"]) == 0
    assert "1 entries were left out as unreadable videos" in capsys.readouterr().err
    results = json.loads((tmp_path / "skipped" / "results.json").read_text())
    assert results["skipped_videos"]["count"] == 1 and results["skipped_videos"]["entries"][0]["id"] == "q8"
    assert len((tmp_path / "skipped" / "predictions.jsonl").read_text().splitlines()) == 15


def test_eval_refuses_a_negative_sample_count(trained, capsys):
    _, model, test_file = trained
    with pytest.raises(SystemExit) as stop:
        main(["eval", str(model), "--benchmark", str(test_file), "--max-samples", "-1"])
    assert stop.value.code == 2 and "-1 is not at least 1" in capsys.readouterr().err


def test_resuming_another_recipes_checkpoint_is_one_sentence(trained, tmp_path, capsys, monkeypatch):
    root, _, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("STZOO_HOME", str(tmp_path / "home"))
    checkpoint = root / "run" / "checkpoints" / "step-0000004"
    code = main(["train", str(root / "recipe.yaml"), "--set", "train.lr=1e-4", "--resume", str(checkpoint),
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "written by a different recipe" in err and "--resume-anyway" in err and "Traceback" not in err
