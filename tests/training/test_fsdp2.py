"""FSDP2 (scaling.strategy: fsdp2) on two CPU workers over gloo: the loss curve of DDP for a tiny recipe, a
checkpoint of full weights that loads as any other, and a resume that ends where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import tiny_recipe, write_direction_task
from zoo.config.recipe import recipe_from_dict
from zoo.model.video_llm import VideoLLM
from zoo.training.trainer import Trainer

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 6, 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker(rank: int, world: int, port: int, data: dict, output: str, resume: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # Each worker writes in a folder of its own, as under Ray Train; rank 0's holds the run's checkpoints and logs.
        own = output if rank == 0 else f"{output}-rank{rank}"
        trainer = Trainer(recipe_from_dict(data), device="cpu", rank=rank, world_size=world, output_dir=own)
        trainer.fit(resume_from=Path(resume) if resume else None)
    finally:
        dist.destroy_process_group()


def train(root: Path, strategy: str, name: str, resume: Path | None = None, llm_dtype: str = "float32",
          steps: int = STEPS) -> Path:
    train_file = root / "train.json"
    data = tiny_recipe(frames=4)
    data["model"]["llm"]["dtype"] = llm_dtype
    data["data"]["train"] = str(train_file)
    data["train"].update(max_steps=steps, batch_size=2, save_every=SAVE_EVERY, log_every=1, lr=1e-3, seed=5)
    data["scaling"] = {"strategy": strategy, "num_workers": 2}
    output = root / name
    mp.spawn(worker, args=(2, free_port(), data, str(output), str(resume) if resume else None), nprocs=2)
    return output


def losses(output: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (output / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp2")
    write_direction_task(root, train=8, test=2)
    return root, train(root, "ddp", "ddp"), train(root, "fsdp2", "fsdp2")


def test_fsdp2_follows_the_loss_curve_of_ddp(runs):
    _, ddp, fsdp2 = runs
    assert list(losses(fsdp2)) == list(range(1, STEPS + 1))
    for step, loss in losses(ddp).items():
        assert losses(fsdp2)[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    assert losses(fsdp2)[STEPS] < losses(fsdp2)[1]


def test_an_fsdp2_checkpoint_holds_the_full_model_and_the_run_resumes_to_the_same_end(runs):
    root, ddp, fsdp2 = runs
    final = VideoLLM.from_pretrained(fsdp2 / "final")  # full weights, loadable alone, as stzoo export reads them
    reference = VideoLLM.from_pretrained(ddp / "final")
    for (name, mine), (_, theirs) in zip(final.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    checkpoint = fsdp2 / "checkpoints" / f"step-{SAVE_EVERY:07d}"
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    assert state["engine"]["format"] == "fsdp2" and state["engine"]["optimizer"]["state"]
    resumed = train(root, "fsdp2", "resumed", resume=checkpoint)
    assert losses(resumed)[STEPS] == pytest.approx(losses(fsdp2)[STEPS], rel=1e-6)


def test_fsdp2_trains_a_recipe_whose_llm_is_built_in_bf16_beside_fp32_components(runs):
    root, _, _ = runs
    output = train(root, "fsdp2", "bf16_llm", llm_dtype="bfloat16", steps=2)  # FSDP2 wants one dtype per unit
    assert all(loss == loss and loss < 100 for loss in losses(output).values()) and len(losses(output)) == 2
