"""Training and evaluation straight from public annotation files, through the recipe's data.format.

The files are written as their owners publish them: LLaVA-Video-178K's entries (``<image>`` marks the
video, ``data_source`` beside it), VideoChat2-IT's ``QA`` items of instruction + question + answer,
an MVBench task JSON (videos relative to the task's folder, which MVBench keeps in its config) and
Charades-STA's ``VIDEO_ID START END##sentence`` lines (durations in Charades' CSV)."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import moving_square_frames, tiny_recipe
from components.config import RecipeError
from zoo.config.recipe import recipe_from_dict
from zoo.data.dataset import build_dataset
from zoo.data.formats import AnnotationError
from zoo.data.writer import write_video
from zoo.evaluation.benchmark import evaluate
from zoo.training.trainer import Trainer
from zoo.cli import main

QUESTION = "Which way does the square move?"
VIDEOS = 12


def direction(i: int) -> str:
    return "left" if i % 2 else "right"


@pytest.fixture(scope="module")
def public_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("public")
    for i in range(VIDEOS):
        write_video(root / "videos" / f"{i:03d}.mp4", moving_square_frames(direction(i), frames=8, seed=i), fps=8)
    llava = [{"id": f"synthetic_{i}", "data_source": "synthetic", "video": f"videos/{i:03d}.mp4",
              "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"},
                                {"from": "gpt", "value": direction(i)}]} for i in range(0, 8, 2)]
    videochat2 = [{"video": f"videos/{i:03d}.mp4", "QA": [{"i": "Watch the square.", "q": QUESTION, "a": direction(i)}]}
                  for i in range(1, 8, 2)]
    (root / "mvbench").mkdir()
    mvbench = [{"video": f"{i:03d}.mp4", "question": QUESTION, "candidates": ["left", "right"], "answer": direction(i)}
               for i in range(8, VIDEOS)]
    (root / "llava_video.json").write_text(json.dumps(llava))
    (root / "videochat2_it.json").write_text(json.dumps(videochat2))
    (root / "mvbench" / "square_direction.json").write_text(json.dumps(mvbench))
    (root / "charades_sta_test.txt").write_text("".join(f"{i:03d} 0.0 0.5##the square moves {direction(i)}.\n"
                                                        for i in range(8, VIDEOS)))
    (root / "Charades_v1_test.csv").write_text("id,length\n" + "".join(f"{i:03d},1.0\n" for i in range(8, VIDEOS)))
    return root


def public_recipe(root, steps: int = 12):
    data = tiny_recipe()
    data["data"].update(
        train=[str(root / "llava_video.json"), str(root / "videochat2_it.json")],
        eval={"square_direction": str(root / "mvbench" / "square_direction.json"),
              "charades": str(root / "charades_sta_test.txt")},
        format={str(root / "llava_video.json"): "llava", str(root / "videochat2_it.json"): "videochat2",
                "square_direction": {"name": "mvbench", "video_dir": "../videos"},
                "charades": {"name": "charades_sta", "video_dir": "videos", "durations": str(root / "Charades_v1_test.csv")}})
    data["train"].update(max_steps=steps, batch_size=4)
    return recipe_from_dict(data)


def test_llava_and_videochat2_files_train_and_mvbench_and_charades_files_evaluate(public_files, tmp_path):
    recipe = public_recipe(public_files)
    trainer = Trainer(recipe, output_dir=tmp_path / "run", device="cpu")
    trainer.prepare()
    entries = trainer.dataset.entries
    assert len(entries) == 8 and {e["task"] for e in entries} == {"conversation"}
    assert entries[0]["conversations"][0]["value"] == f"<video>\n{QUESTION}"  # LLaVA's <image> mark is the video's place
    assert entries[4]["conversations"] == [{"from": "human", "value": f"Watch the square.\n{QUESTION}"},
                                           {"from": "gpt", "value": "left"}]  # video 001
    state = trainer.fit()
    losses = [row["loss"] for row in state.history]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]

    choice = evaluate(trainer.model, recipe.data.eval["square_direction"], out_dir=tmp_path / "mvbench")
    assert choice["multiple_choice"]["count"] == 4 and list(choice["multiple_choice"]["by_task_type"]) == ["square_direction"]
    scored = [json.loads(line) for line in (tmp_path / "mvbench" / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in scored] == [f"square_direction_{i}" for i in range(4)]

    grounding = evaluate(trainer.model, recipe.data.eval["charades"], out_dir=tmp_path / "charades")
    assert grounding["temporal_grounding"]["count"] == 4
    spans = [row["entry"]["target"]["span"] for row in
             map(json.loads, (tmp_path / "charades" / "predictions.jsonl").read_text().splitlines())]
    assert spans == [[0.0, 0.5]] * 4  # 0.5 s of Charades' 1.0 s length


def test_an_mvbench_file_trains_through_the_train_role(public_files, tmp_path):
    data = tiny_recipe()
    data["data"].update(train=str(public_files / "mvbench" / "square_direction.json"),
                        format={"train": {"name": "mvbench", "video_dir": "../videos", "task_type": "direction"}})
    data["train"].update(max_steps=2, batch_size=2)
    trainer = Trainer(recipe_from_dict(data), output_dir=tmp_path / "run", device="cpu")
    trainer.prepare()
    assert [e["answer_letter"] for e in trainer.dataset.entries] == ["B", "A", "B", "A"]
    assert trainer.dataset[0].info["video_path"].endswith("videos/008.mp4")
    assert math.isfinite(trainer.fit().history[-1]["loss"])


def test_stzoo_eval_reads_a_benchmark_in_the_format_it_is_told(public_files, tmp_path):
    recipe = public_recipe(public_files, steps=1)
    model = Trainer(recipe, output_dir=tmp_path / "run", device="cpu").model
    other = public_files / "mvbench_copy.json"  # not one of the recipe's files: its format comes from the caller
    other.write_text((public_files / "mvbench" / "square_direction.json").read_text().replace('"0', '"videos/0'))
    results = evaluate(model, other, annotation_format="mvbench")
    assert results["multiple_choice"]["count"] == 4
    with pytest.raises(AnnotationError, match="looks like the mvbench format: set data.format"):
        evaluate(model, other)


def test_a_file_read_in_the_wrong_format_says_which_format_it_looks_like(public_files, tmp_path):
    data = tiny_recipe()
    data["data"].update(train=str(public_files / "llava_video.json"))
    with pytest.raises(AnnotationError, match=r"llava_video.json: entry 0 \(id 'synthetic_0'\): .*looks like the llava "
                                              r"format: set data.format \(or data.format.ROLE\) to llava"):
        Trainer(recipe_from_dict(data), output_dir=tmp_path / "a", device="cpu").prepare()
    data["data"].update(train=str(public_files / "videochat2_it.json"), format="llava")
    with pytest.raises(AnnotationError, match="entry 0: the entry has no 'conversations', which data.format llava "
                                              "expects; the entry looks like the videochat2 format"):
        Trainer(recipe_from_dict(data), output_dir=tmp_path / "b", device="cpu").prepare()
    data["data"].update(train=str(public_files / "charades_sta_test.txt"), format="stzoo")
    with pytest.raises(AnnotationError, match="is a text file .* set data.format to charades_sta"):
        Trainer(recipe_from_dict(data), output_dir=tmp_path / "c", device="cpu").prepare()


def test_a_format_key_that_names_no_file_or_role_is_refused_naming_it(public_files):
    data = tiny_recipe()
    data["data"].update(train="train.json", eval={"mvbench": "mv.json"}, format={"mvbnch": "mvbench"})
    with pytest.raises(RecipeError, match=r"data.format.mvbnch: no annotation file of this recipe is 'mvbnch' or plays "
                                          r"that role \(did you mean 'mvbench'\?\)"):
        recipe_from_dict(data)
    data["data"]["format"] = {"mvbench": "mvbnch"}
    with pytest.raises(RecipeError, match="data.format.mvbench"):
        recipe_from_dict(data)


def test_the_recipe_format_reaches_datasets_built_for_evaluation(public_files, tmp_path):
    recipe = public_recipe(public_files, steps=1)
    model = Trainer(recipe, output_dir=tmp_path / "run", device="cpu").model
    dataset = build_dataset(recipe, model, recipe.data.eval["square_direction"], for_generation=True)
    assert dataset.entries[0]["video"] == "../videos/008.mp4" and dataset[0].info["frames_read"] == 4


def test_a_public_format_for_every_file_refuses_an_stzoo_file_instead_of_dropping_its_answers(public_files, tmp_path):
    stzoo_file = tmp_path / "mc.json"
    stzoo_file.write_text(json.dumps([{"id": "a", "video": "v.mp4", "task": "multiple_choice", "split": "test",
                                       "candidates": ["left", "right"], "answer": "left", "answer_letter": "A",
                                       "conversations": [{"from": "human", "value": "<video>\nWhich way?"},
                                                         {"from": "gpt", "value": "left"}]}]))
    data = tiny_recipe()
    data["data"].update(train=str(public_files / "llava_video.json"), eval={"mc": str(stzoo_file)}, format="llava")
    recipe = recipe_from_dict(data)
    with pytest.raises(AnnotationError, match=r"mc.json: entry 0 \(id 'a'\): the entry is in the STZoo schema .*key "
                                              r"data.format by file or role"):
        build_dataset(recipe, Trainer(recipe, output_dir=tmp_path / "r", device="cpu").model, stzoo_file,
                      for_generation=True)


def test_stzoo_eval_takes_a_public_files_video_folder_and_durations(public_files, tmp_path, capsys):
    recipe = public_recipe(public_files, steps=1)
    Trainer(recipe, output_dir=tmp_path / "run", device="cpu").model.save_pretrained(tmp_path / "model")
    mvbench = public_files / "mvbench" / "square_direction.json"
    assert main(["eval", str(tmp_path / "model"), "--benchmark", str(mvbench), "--format", "mvbench",
                 "--video-dir", "../videos", "--out", str(tmp_path / "mv")]) == 0
    assert json.loads((tmp_path / "mv" / "results.json").read_text())["benchmark"]["format"] == "mvbench"
    charades = public_files / "charades_sta_test.txt"
    assert main(["eval", str(tmp_path / "model"), "--benchmark", str(charades), "--format", "charades_sta",
                 "--video-dir", "videos", "--durations", str(public_files / "Charades_v1_test.csv")]) == 0
    assert "temporal_grounding.miou" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "model"), "--benchmark", str(mvbench), "--video-dir", "../videos"]) == 2
    assert "give --format too" in capsys.readouterr().err
