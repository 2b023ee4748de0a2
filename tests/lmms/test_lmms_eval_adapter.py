"""lmms-eval's own CLI with the stzoo model on the stzoo_suite_mc task gives the answers and the scores `stzoo eval`
gives on the same entries of the same suite; the task scores with STZoo's multiple-choice metric."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, tiny_recipe
from zoo.config.recipe import recipe_from_dict
from zoo.data.action_scene import SuiteOptions, generate_suite
from zoo.evaluation.benchmark import evaluate
from zoo.evaluation.metrics.scoring import score
from zoo.lmms.models.stzoo import STZoo, batch_size_of, cut, decoding, plugin_names
from zoo.lmms.tasks.stzoo_suite_mc import utils as task
from zoo.model.video_llm import build_model
from zoo.runs.tracking import load_model

LIMIT = 6  # questions asked of both; the suite holds more, so --limit and max_samples are what picks them


@pytest.fixture(scope="module")
def suite_and_model(tmp_path_factory):
    """A folder holding the suite where the task looks for it (.stzoo/data/action_scene) and a tiny untrained
    model: its answers are bytes that change with the frames and the prompt, so any difference in either shows."""
    root = tmp_path_factory.mktemp("lmms")
    suite = root / ".stzoo" / "data" / "action_scene"
    generate_suite(suite, seed=3, videos=8, options=SuiteOptions(train_share=0.0, height=32, width=32, seconds=0.5))
    data = tiny_recipe(frames=4)
    # Evaluation samples frames its own way (8, shuffled by entry id) and batches by two: the adapter must too.
    data["eval"] = {"max_new_tokens": 12, "batch_size": 2, "video": {"frames": 8, "frame_order": "shuffled"}}
    torch.manual_seed(0)
    build_model(recipe_from_dict(data)).save_pretrained(root / "model")
    return root, suite / "test_mc.json"


def run_lmms_eval(root, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMMS_EVAL_PLUGINS": "zoo.lmms", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(root / "hf"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "lmms_eval", *arguments], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


def lmms_eval_outputs(out) -> tuple[dict, list[dict]]:
    """The results JSON and the logged samples (lmms-eval exits 0 even when evaluation failed: the files tell)."""
    results = list(out.rglob("*_results.json"))
    samples = list(out.rglob("*_samples_stzoo_suite_mc.jsonl"))
    assert len(results) == 1 and len(samples) == 1, sorted(str(path) for path in out.rglob("*"))
    return json.loads(results[0].read_text()), [json.loads(line) for line in samples[0].read_text().splitlines()]


def test_lmms_eval_answers_and_scores_as_stzoo_eval_does(suite_and_model):
    root, test_file = suite_and_model
    ran = run_lmms_eval(root, "--model", "stzoo", "--model_args", f"pretrained={root / 'model'},device=cpu",
                        "--tasks", "stzoo_suite_mc", "--include_path", str(REPO / "zoo" / "lmms" / "tasks"),
                        "--output_path", str(root / "lmms_out"), "--log_samples", "--limit", str(LIMIT),
                        "--batch_size", "auto", "--verbosity", "WARNING")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    results, samples = lmms_eval_outputs(root / "lmms_out")

    ours = evaluate(load_model(str(root / "model"), "cpu"), test_file, out_dir=root / "stzoo_eval", max_samples=LIMIT)
    predictions = [json.loads(line) for line in (root / "stzoo_eval" / "predictions.jsonl").read_text().splitlines()]

    # Each logged sample: the question as asked, the answer, and STZoo's reading of it (process_results' record).
    asked = {sample["accuracy"]["id"]: (sample["input"], sample["filtered_resps"], sample["accuracy"]["chosen"])
             for sample in samples}
    assert asked == {line["id"]: (line["question"], line["prediction"], line["score"]["chosen"])
                     for line in predictions}
    assert len(asked) == LIMIT and len({answer for _, answer, _ in asked.values()}) > 1  # answers differ by entry
    scores = results["results"]["stzoo_suite_mc"]
    assert scores["accuracy,none"] == pytest.approx(ours["multiple_choice"]["accuracy"])
    assert scores["mean_task_accuracy,none"] == pytest.approx(ours["multiple_choice"]["mean_task_accuracy"])


def test_the_task_scores_as_stzoo_eval_scores(suite_and_model):
    """Right letters, right option texts, wrong letters, unreadable and missing answers: the task's process_results
    and aggregations give stzoo eval's multiple_choice numbers."""
    _, test_file = suite_and_model
    entries = json.loads(test_file.read_text())
    kinds = [lambda e: f"({e['answer_letter']})", lambda e: e["answer"], lambda e: "(A) first", lambda e: "( ( (",
             lambda e: None]
    predictions = {entry["id"]: kinds[index % len(kinds)](entry) for index, entry in enumerate(entries)}
    records = [task.process_results(entry, [predictions[entry["id"]]])["accuracy"] for entry in entries]
    expected = score(entries, predictions)["multiple_choice"]
    assert task.accuracy(records) == pytest.approx(expected["accuracy"]) and 0 < expected["accuracy"] < 100
    assert task.mean_task_accuracy(records) == pytest.approx(expected["mean_task_accuracy"])
    assert task.doc_to_text(entries[0]) == entries[0]["conversations"][0]["value"]
    assert task.doc_to_visual(entries[0], {"video_dir": str(test_file.parent)}) == [
        str(test_file.parent / entries[0]["video"])]


def test_model_args_and_generation_kwargs_are_read_or_refused_in_one_sentence():
    with pytest.raises(ValueError, match="pretrained= is missing"):
        STZoo()
    with pytest.raises(TypeError, match="pretraned: not an argument of the stzoo model"):
        STZoo(pretraned="runs/x")
    recipe = recipe_from_dict({**tiny_recipe(), "eval": {"batch_size": 3, "max_new_tokens": 7}})
    assert batch_size_of("auto", recipe) == 3 and batch_size_of("2", recipe) == 2
    with pytest.raises(ValueError, match="--batch_size 'many'"):
        batch_size_of("many", recipe)
    assert decoding({"until": ["\n\n"], "do_sample": False}, "t", recipe) == (7, ["\n\n"])
    assert decoding({"until": [], "max_new_tokens": 5, "temperature": 0}, "t", recipe) == (5, [])
    with pytest.raises(ValueError, match="decodes greedily"):
        decoding({"temperature": 0.7}, "t", recipe)
    assert cut("(B) library\n\nmore", ["\n\n"]) == "(B) library" and cut(None, []) == ""
    assert plugin_names("my.plugin+other") == plugin_names('"my.plugin,other"') == ["my.plugin", "other"]
