"""Scaling with the frame count: step time and peak memory of each tiny recipe at 4, 8, 16 and 32
frames (each measured in a fresh process, so peak memory is its own), plotted; and the visual
tokens of each paper-scale recipe against frames (MASH-VLM N + 3T - 1, ST-LLM 32T and 32T(1 - rho)
in training, LLaVA-ST fixed by its packer), from meta builds.

    python -m benchmarks.scaling [--out benchmarks/scaling.png]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

FRAMES = (4, 8, 16, 32)
RECIPES = ("baseline", "mash_vlm", "st_llm", "llava_st")

ONE_CONFIG = """
import json, resource, statistics, time, torch
from tests.helpers import make_batch
from zoo.model.video_llm import build_model
from zoo.config.recipe import load_recipe
recipe = load_recipe("recipes/tiny/{name}.yaml", ["train.stages=[]", "data.video.frames={frames}",
                     "model.compressor.sigma=4" if "{name}" == "llava_st" else "train.seed=0"])
torch.manual_seed(0)
model = build_model(recipe).train()
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
batch = make_batch(model, frames={frames})
times = []
for step in range(6):
    started = time.perf_counter()
    model(batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    times.append(time.perf_counter() - started)
print(json.dumps({{"step_s": statistics.median(times[1:]), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "visual": model.visual_token_count({frames})}}))
"""


def measure(name: str, frames: int) -> dict:
    result = subprocess.run([sys.executable, "-c", ONE_CONFIG.format(name=name, frames=frames)],
                            capture_output=True, text=True, timeout=900, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1][:200]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def paper_tokens() -> str:
    from zoo.model.video_llm import build_model
    from zoo.config.recipe import load_recipe

    lines = ["| recipe (paper scale) | " + " | ".join(f"T = {t}" for t in FRAMES) + " |", "|---|" + "---|" * len(FRAMES)]
    for name in RECIPES:
        cells = []
        for frames in FRAMES:
            recipe = load_recipe(f"recipes/{name}.yaml", [f"data.video.frames={frames}"])
            count = build_model(recipe, meta=True).visual_token_count(frames)
            if name == "st_llm":
                cells.append(f"{count} (training: {round(count * 0.5)} at rho = 0.5)")
            else:
                cells.append(str(count))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, points in rows.items():
        good = [(f, p) for f, p in points if "error" not in p]
        left.plot([f for f, _ in good], [p["step_s"] for _, p in good], marker="o", label=name)
        right.plot([f for f, _ in good], [p["peak_mib"] for _, p in good], marker="o", label=name)
    for axis, label in ((left, "step time (s)"), (right, "peak memory (MiB)")):
        axis.set_xlabel("frames")
        axis.set_ylabel(label)
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("tiny recipes, one training step (CPU)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> str:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/scaling.png")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = {name: [(frames, measure(name, frames)) for frames in FRAMES] for name in RECIPES}
    lines = ["| tiny recipe | " + " | ".join(f"T = {t}: step s / peak MiB / visual tokens" for t in FRAMES) + " |",
             "|---|" + "---|" * len(FRAMES)]
    for name, points in rows.items():
        cells = [p.get("error", f"{p['step_s']:.3f} / {p['peak_mib']:.0f} / {p['visual']}") for _, p in points]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    plot(rows, args.out)
    result = "\n".join(lines) + f"\n\n![scaling]({os.path.basename(args.out)})\n\nVisual tokens per sample:\n\n" + paper_tokens()
    print(result)
    return result


if __name__ == "__main__":
    main()
