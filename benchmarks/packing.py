"""Packing (data.packing) against padding to the batch's longest sample, on a mixed-length instruction set.

LLaVA-style instruction data mixes one-word answers with paragraphs; this draws such a mix (55% one to
three words, 45% paragraphs of 30-120 words; questions of 5-25 words), 8 samples a batch, and times
training steps (forward + backward) of a tiny recipe with and without packing, alternating, on the same
batches. Reported: the pad share (computed positions that hold no token) and useful tokens/s (real
tokens per second of step time), side by side in one run.

    python -m benchmarks.packing [--steps 12]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from zoo.config.recipe import load_recipe
from zoo.data.batch import VideoSample, collate
from zoo.data.prompting import encode, question_turns
from zoo.model.packing import pack
from zoo.model.video_llm import build_model

REPO = Path(__file__).resolve().parent.parent
RECIPES = ("baseline", "mash_vlm")
WORDS = ("the person walks left across the kitchen then turns waves jumps twice near a red door while camera "
         "stays still and light changes slowly over scene").split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def mixed_batch(model, rng: random.Random, size: int = 8):
    samples = []
    frames = model.recipe.data.video.frames
    for _ in range(size):
        answer = sentence(rng, 1, 3) if rng.random() < 0.55 else sentence(rng, 30, 120)
        turns = question_turns(sentence(rng, 5, 25) + "?") + [{"from": "gpt", "value": answer}]
        conversation = encode(model.tokenizer, model.recipe.prompt, turns)
        pixels = torch.randn(frames, 3, model.encoder.image_size, model.encoder.image_size)
        samples.append(VideoSample(pixels, conversation, model.encoder.encode_instruction(conversation.question)))
    return collate(samples, model.pad_id)


def step_seconds(model, batch) -> float:
    started = time.perf_counter()
    model.zero_grad()
    model(batch).loss.backward()
    return time.perf_counter() - started


def pad_shares(model, batch, budget: int | None) -> tuple[float, float, int]:
    """(pad share unpacked, pad share packed, real tokens) of one batch."""
    with torch.no_grad():
        sequence = model.assemble(batch, model.encode_video(batch.pixels, batch.instruction))
    real = int(sequence.attention_mask.sum())
    packed = pack(sequence, model.position.position_ids(sequence), budget or sequence.length, model.pad_id)
    return 1 - real / sequence.attention_mask.numel(), packed.pad_share, real


def measure(name: str, steps: int, budget: int | None) -> str:
    recipe = load_recipe(REPO / "recipes" / "tiny" / f"{name}.yaml", ["train.stages=[]"] if name == "llava_st" else [])
    torch.manual_seed(0)
    model = build_model(recipe).train()
    rng = random.Random(0)
    batches = [mixed_batch(model, rng) for _ in range(steps)]
    times = {False: [], True: []}
    shares = [pad_shares(model, batch, budget) for batch in batches]
    model.recipe.data.pack_tokens = budget
    for batch in batches[:2]:  # warm-up of both paths
        for packing in (False, True):
            model.recipe.data.packing = packing
            step_seconds(model, batch)
    for batch, (_, _, real) in zip(batches, shares):
        for packing in (False, True):
            model.recipe.data.packing = packing
            times[packing].append(real / step_seconds(model, batch))
    plain, packed = statistics.median(times[False]), statistics.median(times[True])
    unpacked_share = statistics.mean(s[0] for s in shares)
    packed_share = statistics.mean(s[1] for s in shares)
    label = f"{budget} tokens" if budget else "the batch's longest"
    return (f"| tiny {name} | {label} | {100 * unpacked_share:.1f}% | {100 * packed_share:.1f}% | {plain:.0f} | "
            f"{packed:.0f} | {packed / plain:.2f} |")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args(argv)
    lines = ["| recipe | row budget | pad share unpacked | pad share packed | useful tokens/s unpacked | "
             "useful tokens/s packed | packed / unpacked |", "|---|---|---|---|---|---|---|"]
    for name in RECIPES:
        for budget in (None, 2048):
            lines.append(measure(name, args.steps, budget))
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
