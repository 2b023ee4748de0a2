"""Training on real video files: the loss falls, runs are deterministic, a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction

import pytest
import torch

from tests.helpers import tiny_recipe
from zoo.model.video_llm import VideoLLM
from zoo.config.recipe import recipe_from_dict
from components.config import RecipeError
from components.weights import CheckpointError
from zoo.training.trainer import Trainer, TrainingError


def direction_recipe(train_file, steps=30, **train):
    data = tiny_recipe(frames=8)
    data["data"]["train"] = str(train_file)
    data["prompt"] = {"system": ""}
    data["train"].update({"lr": 3e-3, "warmup_ratio": 0.1, "max_steps": steps, "batch_size": 4, "log_every": 1, **train})
    return recipe_from_dict(data)


def test_the_loss_falls_on_real_videos_and_the_model_is_saved(direction_dataset, tmp_path):
    recipe = direction_recipe(direction_dataset(16), steps=40)
    state = Trainer(recipe, output_dir=tmp_path / "run", device="cpu").fit()
    losses = [h["loss"] for h in state.history]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert all(h["lr"] > 0 for h in state.history) and state.history[0]["lr"] < state.history[4]["lr"]  # warmup
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 41))
    model = VideoLLM.from_pretrained(tmp_path / "run" / "final")
    assert model.recipe.name == recipe.name


def test_two_runs_with_the_same_seed_are_identical(direction_dataset, tmp_path):
    train_file = direction_dataset(8)
    runs = []
    for name in ("a", "b"):
        state = Trainer(direction_recipe(train_file, steps=6), output_dir=tmp_path / name, device="cpu").fit()
        runs.append([h["loss"] for h in state.history])
    assert runs[0] == runs[1]
    other = Trainer(direction_recipe(train_file, steps=6, seed=1), output_dir=tmp_path / "c", device="cpu").fit()
    assert [h["loss"] for h in other.history] != runs[0]


def test_a_resumed_run_equals_an_uninterrupted_one(direction_dataset, tmp_path):
    train_file = direction_dataset(8)
    whole = Trainer(direction_recipe(train_file, steps=8, save_every=3), output_dir=tmp_path / "whole", device="cpu").fit()
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-0000003"
    assert (checkpoint / "trainer_state.pt").is_file() and (checkpoint / "model" / "model.safetensors").is_file()
    resumed = Trainer(direction_recipe(train_file, steps=8, save_every=3), output_dir=tmp_path / "resumed", device="cpu")
    state = resumed.fit(resume_from=checkpoint)
    assert [h["loss"] for h in state.history] == [h["loss"] for h in whole.history[3:]]
    a = VideoLLM.from_pretrained(tmp_path / "whole" / "final").state_dict()
    b = VideoLLM.from_pretrained(tmp_path / "resumed" / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_matches_the_global_batch(direction_dataset, tmp_path):
    recipe = direction_recipe(direction_dataset(8), steps=2, batch_size=2, global_batch_size=4)
    trainer = Trainer(recipe, output_dir=tmp_path / "acc", device="cpu")
    trainer.fit()
    assert trainer.accumulation == 2 and trainer.steps_per_epoch == 2
    bad = direction_recipe(direction_dataset(8), steps=2, batch_size=3, global_batch_size=4)
    with pytest.raises(RecipeError, match="global_batch_size 4 is not a multiple of batch_size x workers = 3"):
        Trainer(bad, output_dir=tmp_path / "bad", device="cpu").fit()


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(direction_dataset, tmp_path, monkeypatch):
    recipe = direction_recipe(direction_dataset(8), steps=6, save_every=2)
    trainer = Trainer(recipe, output_dir=tmp_path / "nan", device="cpu")
    original = trainer.model.language_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(trainer.model, "language_loss", poisoned)
    with pytest.raises(TrainingError) as error:
        trainer.fit()
    message = str(error.value)
    assert "step 5: the loss is not finite" in message and "step-0000004" in message
    assert (tmp_path / "nan" / "checkpoints" / "step-0000004" / "model" / "model.safetensors").is_file()


def test_a_sequence_longer_than_the_context_is_refused_before_the_first_step(direction_dataset, tmp_path):
    data = tiny_recipe(frames=8)
    data["data"]["train"] = str(direction_dataset(4))
    data["model"]["llm"]["config"]["max_position_embeddings"] = 64
    data["train"].update({"batch_size": 2, "max_steps": 1})
    with pytest.raises(RecipeError) as error:
        Trainer(recipe_from_dict(data), output_dir=tmp_path / "long", device="cpu").fit()
    message = str(error.value)
    assert "entry 0 needs" in message and "128 visual" in message and "context is 64" in message
    assert "text_before_video" in message and "answer" in message


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory):
    from zoo.data.action_scene import SuiteOptions, generate_suite

    out = tmp_path_factory.mktemp("suite")
    generate_suite(out, seed=1, videos=60, options=SuiteOptions(train_share=1.0, seconds=2.0))
    return out


@pytest.mark.parametrize("name", ["baseline", "mash_vlm", "st_llm", "llava_st"])
def test_each_tiny_recipe_trains_on_the_suite_and_its_loss_falls(name, small_suite, tmp_path):
    from zoo.config.recipe import load_recipe

    overrides = [f"data.train={small_suite}/train.json", "data.eval={}", "data.synthetic=null",
                 "train.max_steps=40", "train.progress_bar=false", "train.stages=[]", "train.lr=2.0e-3"]
    recipe = load_recipe(f"recipes/tiny/{name}.yaml", overrides)
    state = Trainer(recipe, output_dir=tmp_path / name, device="cpu").fit()
    key = "loss/ce"  # ST-LLM's total also holds the MVM term: the language loss must fall
    first = sum(h[key] for h in state.history[:5]) / 5
    last = sum(h[key] for h in state.history[-5:]) / 5
    assert last < 0.6 * first, [round(h[key], 3) for h in state.history]
    if name == "st_llm":
        assert all(h["loss/mvm"] > 0 for h in state.history)  # masking and MVM were on throughout


def test_a_resume_after_a_killed_write_leaves_no_debris_and_logs_each_step_once(direction_dataset, tmp_path):
    """Issue 20, item 10: a checkpoint write killed at step 4 left step-4.partial (with a hidden copy of the
    weights) that later became part of step 4's checkpoint, and metrics.jsonl repeated the replayed steps."""
    train_file = direction_dataset(8)
    output = tmp_path / "run"
    Trainer(direction_recipe(train_file, steps=4, save_every=2), output_dir=output, device="cpu").fit()
    checkpoints = output / "checkpoints"
    # As a kill inside the write of step 4 leaves it: the staging folder with save_pretrained's hidden temp folder.
    shutil.rmtree(checkpoints / "step-0000004")
    debris = checkpoints / "step-0000004.partial" / ".model.k1ll3d"
    debris.mkdir(parents=True)
    (debris / "model.safetensors").write_bytes(b"half a copy of the weights")
    (checkpoints / "step-0000003.partial").mkdir()  # and one from an older kill
    Trainer(direction_recipe(train_file, steps=4, save_every=2), output_dir=output, device="cpu").fit(
        resume_from=checkpoints / "step-0000002")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000002", "step-0000004"]
    assert not list((checkpoints / "step-0000004").rglob(".model.*"))
    steps = [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.fixture
def written_checkpoint(direction_dataset, tmp_path):
    train_file = direction_dataset(8)
    Trainer(direction_recipe(train_file, steps=2, save_every=2), output_dir=tmp_path / "first", device="cpu").fit()
    return train_file, tmp_path / "first" / "checkpoints" / "step-0000002"


@pytest.mark.parametrize("damage,words", [
    ("truncated weights", "model.safetensors: unreadable"),
    ("truncated state", "trainer_state.pt: unreadable as a training state"),
    ("pickled object", "trainer_state.pt: unreadable as a training state (it holds objects other than tensors and numbers)"),
])
def test_a_damaged_checkpoint_is_one_sentence_when_resumed(written_checkpoint, tmp_path, damage, words):
    """Issue 20, item 5: these printed raw tracebacks, and torch's text suggested weights_only=False."""
    train_file, checkpoint = written_checkpoint
    if damage == "truncated weights":
        weights = checkpoint / "model" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "truncated state":
        state = checkpoint / "trainer_state.pt"
        state.write_bytes(state.read_bytes()[:200])
    else:
        torch.save({"engine": Fraction(1, 3), "step": 2, "epoch": 0, "rng": []}, checkpoint / "trainer_state.pt")
    with pytest.raises(CheckpointError) as error:
        Trainer(direction_recipe(train_file, steps=2, save_every=2), output_dir=tmp_path / "again", device="cpu").fit(
            resume_from=checkpoint)
    assert words in str(error.value) and "weights_only=False" not in str(error.value)
    assert "resume from an earlier checkpoint" in str(error.value)


def test_a_checkpoint_of_another_recipe_is_refused_unless_asked(written_checkpoint, tmp_path):
    train_file, checkpoint = written_checkpoint
    other = direction_recipe(train_file, steps=4, lr=1e-3)  # same shapes, other training
    with pytest.raises(CheckpointError, match=r"written by a different recipe \(fingerprint \w{8}, this recipe's is \w{8}"):
        Trainer(other, output_dir=tmp_path / "other", device="cpu").fit(resume_from=checkpoint)
    state = Trainer(direction_recipe(train_file, steps=4, lr=1e-3), output_dir=tmp_path / "anyway", device="cpu",
                    resume_anyway=True).fit(resume_from=checkpoint)
    assert state.step == 4
    same = Trainer(direction_recipe(train_file, steps=2, save_every=2, log_every=5), output_dir=tmp_path / "same", device="cpu")
    assert same.fit(resume_from=checkpoint).step == 2  # logging settings are not part of the fingerprint


def test_persistent_loader_workers_serve_every_epoch_what_the_main_process_would(direction_dataset, tmp_path):
    """One DataLoader serves the whole run (its workers persist across epochs, keeping their tokenised text):
    over three and a half epochs, two workers give the losses of no workers, a run resumed mid-epoch with
    workers gives the rest of them, and the workers are gone once fit returns."""
    import psutil

    train_file = direction_dataset(8)  # batch 4: two steps an epoch
    histories = {}
    for workers in (0, 2):
        recipe = direction_recipe(train_file, steps=7, save_every=3, seed=2)
        recipe.data.num_workers = workers
        state = Trainer(recipe, output_dir=tmp_path / f"w{workers}", device="cpu").fit()
        histories[workers] = [h["loss"] for h in state.history]
        assert not psutil.Process().children(recursive=True), "DataLoader workers outlived the run"
    assert histories[0] == histories[2] and len(histories[0]) == 7
    recipe = direction_recipe(train_file, steps=7, save_every=3, seed=2)
    recipe.data.num_workers = 2
    resumed = Trainer(recipe, output_dir=tmp_path / "resumed", device="cpu")
    state = resumed.fit(resume_from=tmp_path / "w2" / "checkpoints" / "step-0000003")
    assert [h["loss"] for h in state.history] == histories[0][3:]
