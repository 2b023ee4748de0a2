"""Builders the tests share: tiny recipes, synthetic frames, batches. Fixtures stay in conftest.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import torch

from zoo.data.batch import VideoSample, collate
from zoo.data.prompting import encode, question_turns
from zoo.data.writer import write_video
import zoo.launch.servers as local

REPO = Path(__file__).resolve().parent.parent

TINY_LLM = {
    "llama": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 2048},
    "qwen2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 2048, "use_sliding_window": False},
}
TINY_VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8}
TINY_ENCODERS = {
    "clip": {"name": "clip", "config": TINY_VIT},
    "siglip": {"name": "siglip", "config": TINY_VIT},
    "blip2_qformer": {"name": "blip2_qformer", "instruction_tokenizer": "byte", "config": {
        "vision": TINY_VIT, "num_query_tokens": 4,
        "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                    "cross_attention_frequency": 1, "vocab_size": 260, "max_position_embeddings": 64}}},
    "timm": {"name": "timm", "model_name": "vit_tiny_patch16_224",
             "model_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}},
}


def tiny_recipe(encoder: str = "clip", llm: str = "llama", frames: int = 4, **model_overrides) -> dict:
    """A tiny recipe as a dict (for recipe_from_dict): every mechanism, CPU size."""
    model = {
        "encoder": dict(TINY_ENCODERS[encoder]),
        "projector": "mlp2x_gelu",
        "compressor": "all_tokens",
        "position": "rope",
        "mask": "causal",
        "llm": {"name": llm, "config": dict(TINY_LLM[llm]), "tokenizer": "byte", "attn_implementation": "sdpa"},
    }
    model.update(model_overrides)
    return {"name": f"tiny_{encoder}_{llm}", "model": model, "data": {"video": {"frames": frames}},
            "train": {"lr": 3e-3, "warmup_ratio": 0.0, "batch_size": 2, "max_steps": 10, "progress_bar": False}}



def moving_square_frames(direction: str, frames: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """A bright square moving left or right over a textured background: a task only motion can solve."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 90, size=(size, size, 3), dtype=np.uint8)
    out = np.repeat(background[None], frames, axis=0).copy()
    start = rng.integers(2, 6) if direction == "right" else size - 10 - rng.integers(2, 6)
    for t in range(frames):
        x = start + (2 * t if direction == "right" else -2 * t)
        y = 12 + rng.integers(-1, 2)
        out[t, y : y + 8, x : x + 8] = (230, 200, 60)
    return out



def make_batch(model, questions=("What happens?", "Which way does it go?"), answers=("a square moves", "left"),
               frames: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    size = model.encoder.image_size
    samples = []
    for question, answer in zip(questions, answers):
        turns = question_turns(question) + [{"from": "gpt", "value": answer}]
        conversation = encode(model.tokenizer, model.recipe.prompt, turns)
        instruction = None
        if model.encoder.instruction_tokenizer is not None:
            instruction = model.encoder.instruction_tokenizer(conversation.question)["input_ids"]
        samples.append(VideoSample(torch.randn(frames, 3, size, size, generator=generator), conversation, instruction))
    return collate(samples, model.pad_id)


def prompt_batch(model, questions, frames=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for question in questions:
        conversation = encode(model.tokenizer, model.recipe.prompt, question_turns(question), for_generation=True)
        samples.append(VideoSample(torch.randn(frames, 3, 32, 32, generator=generator), conversation))
    return collate(samples, model.pad_id)


def submit_job(cluster, recipe: Path, run_name: str, wait: bool = True) -> subprocess.CompletedProcess | str:
    """`ray job submit ... ray_jobs.train RECIPE --run-name NAME` to the test cluster: its output, or its job id."""
    return ray_job(cluster, "ray_jobs.train", str(recipe), "--run-name", run_name, wait=wait)


def ray_job(cluster, *module_and_args: str, wait: bool = True) -> subprocess.CompletedProcess | str:
    """`ray job submit --working-dir REPO -- python -m MODULE ARGS...`: its output, or (no wait) its job id."""
    command = [str(Path(local.venv_environment()["PATH"].split(":")[0]) / "ray"), "job", "submit",
               "--address", cluster.dashboard_url, "--working-dir", str(REPO)]
    if not wait:
        command.append("--no-wait")
    command += ["--", "python", "-m", *module_and_args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=local.venv_environment())
    if wait:
        return result
    return re.search(r"raysubmit_[A-Za-z0-9]+", result.stdout).group(0)


def write_direction_task(root: Path, train: int = 24, test: int = 8) -> tuple[Path, Path]:
    """Real mp4 files of a square moving left or right: train.json (conversation) and test.json (multiple choice)."""
    entries, tests = [], []
    for i in range(train + test):
        direction = "left" if i % 2 else "right"
        write_video(root / "videos" / f"{i:03d}.mp4", moving_square_frames(direction, frames=8, seed=i), fps=8)
        question = "<video>\nWhich way does the square move? (A) left (B) right"
        entry = {"id": f"v{i}", "video": f"videos/{i:03d}.mp4", "meta": {},
                 "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": direction}]}
        if i < train:
            entries.append({**entry, "task": "conversation", "split": "train"})
        else:
            tests.append({**entry, "task": "multiple_choice", "split": "test", "candidates": ["left", "right"],
                          "answer": direction, "answer_letter": "A" if direction == "left" else "B", "task_type": "direction"})
    (root / "train.json").write_text(json.dumps(entries))
    (root / "test.json").write_text(json.dumps(tests))
    return root / "train.json", root / "test.json"
