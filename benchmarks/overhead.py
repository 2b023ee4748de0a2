"""Platform overhead: STZoo's path to the loss against the bare HF LLM on the same inputs.

Ours: assemble text and visual tokens, render the recipe's mask, compute its position ids,
run the LLM, take the loss, backward. Bare: the same HF decoder called directly with the
already built inputs_embeds, mask and position ids, the same loss, backward. The difference is
all the platform adds; target <= 1.05x. Both with the layout cache cold (every step renders
its mask) and warm (the layout repeats). The vision tower is outside both (run once before).

    python -m benchmarks.overhead
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.ratio_interval import paired_ratio
from tests.helpers import tiny_recipe
from tests.helpers import make_batch
from zoo.model.video_llm import build_model
from zoo.config.recipe import load_recipe, recipe_from_dict

MEDIUM_LLM = {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 8, "max_position_embeddings": 4096}


# Rounds per recipe: a tiny step takes ~10 ms and its ratio to the bare step moves by ~+-5% from round to round,
# so 41 rounds (the median's interval: rounds 14 to 28, 97%); a medium step takes 0.6-3 s and moves less: 15.
TINY_ROUNDS, MEDIUM_ROUNDS = 41, 15


def recipes():
    """(label, recipe, rounds) for each recipe measured."""
    for name in ("baseline", "mash_vlm", "st_llm", "llava_st"):
        yield f"tiny {name}", load_recipe(f"recipes/tiny/{name}.yaml", ["train.stages=[]"]), TINY_ROUNDS
    medium = tiny_recipe(frames=8, compressor="mash_pooling", mask="dst", position="harmonic_rope")
    medium["model"]["llm"]["config"] = MEDIUM_LLM
    medium["model"]["encoder"]["config"] = {**medium["model"]["encoder"]["config"], "image_size": 64}
    yield "medium MASH-VLM (512-d, 8 layers, 8 frames of 8x8 patches)", recipe_from_dict(medium), MEDIUM_ROUNDS
    big = tiny_recipe(frames=8)
    big["model"]["llm"]["config"] = MEDIUM_LLM
    big["model"]["encoder"]["config"] = {**big["model"]["encoder"]["config"], "image_size": 64}
    yield "medium baseline (512-d, 8 layers, 512 frame tokens)", recipe_from_dict(big), MEDIUM_ROUNDS


def interleaved_times(steps: dict, repeats: int) -> dict[str, list[float]]:
    """Each step once per round, round after round, so that machine noise falls on all of them alike: the
    seconds of each round."""
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return times


def measure(label: str, recipe, rounds: int) -> dict:
    torch.manual_seed(0)
    model = build_model(recipe).train()
    model.compressor.eval()  # the same tokens every step (ST-LLM's masking would change the layout)
    batch = make_batch(model, frames=recipe.data.video.frames)
    with torch.no_grad():
        visual = model.encode_video(batch.pixels, batch.instruction)
    visual.embeds.requires_grad_(True)
    sequence = model.assemble(batch, visual)
    mask, positions = model.attention_inputs(sequence)
    embeds = sequence.inputs_embeds.detach().requires_grad_(True)

    def ours(cold: bool):
        def step():
            if cold:
                model._layout_cache.clear()
            built = model.assemble(batch, visual)
            hidden, _ = model.run_llm(built)
            model.language_loss(hidden, built.labels, built.coordinate_fraction).backward()
            model.zero_grad(set_to_none=True)
        return step

    def bare():
        hidden = model.llm.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        model.language_loss(hidden, sequence.labels, sequence.coordinate_fraction).backward()
        model.zero_grad(set_to_none=True)

    times = interleaved_times({"bare": bare, "cold": ours(cold=True), "warm": ours(cold=False)}, rounds)
    return {"recipe": label, "tokens": sequence.length, "rounds": rounds, "bare_s": statistics.median(times["bare"]),
            "cold": paired_ratio(times["cold"], times["bare"]), "warm": paired_ratio(times["warm"], times["bare"])}


def table(rows) -> str:
    lines = ["| recipe | tokens | rounds | bare HF fwd+bwd (s) | STZoo / bare, mask rendered each step [interval] | "
             "STZoo / bare, layout cached [interval] (target <= 1.05) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['tokens']} | {r['rounds']} | {r['bare_s']:.4f} | {r['cold']} | {r['warm']} |")
    coverage = sorted({f"{r['warm'].coverage:.1%}" for r in rows})
    lines.append(f"\nEach ratio: the median of the rounds' paired ratios [a distribution-free interval for it, coverage "
                 f"{' and '.join(coverage)} by the number of rounds].")
    return "\n".join(lines)


def main() -> str:
    rows = [measure(label, recipe, rounds) for label, recipe, rounds in recipes()]
    result = table(rows)
    print(result)
    return result


if __name__ == "__main__":
    main()
