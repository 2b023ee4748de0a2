"""How large ST-LLM's MVM loss is beside the cross-entropy, under each of its definitions, for the tiny recipe
(at initialisation and after training) and at the paper's LLM width (4096, random weights, at initialisation).
Not a timing: a check that the default MVM term means something at every width.

    python -m benchmarks.mvm_scale [--steps 150]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from zoo.config.recipe import load_recipe
from zoo.data.action_scene import generate_suite
from zoo.training.trainer import Trainer

DEFINITIONS = ("mse_sum", "mse", "cosine")
WIDE = ["model.llm.config={hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 2, num_attention_heads: 32, "
        "num_key_value_heads: 32, max_position_embeddings: 2048}"]


def loss_terms(trainer: Trainer, batches: int = 4) -> dict[str, float]:
    """CE and the MVM term under each definition, averaged over the first ``batches`` batches, same masks for all."""
    model, sums = trainer.model, {name: 0.0 for name in ("ce", *DEFINITIONS)}
    model.train()
    trainer.state.batches_in_epoch = 0  # the epoch's first batches, whatever training consumed
    iterator = iter(trainer.loader())
    with torch.no_grad():
        for index in range(batches):
            batch = next(iterator).to(trainer.device)
            for definition in DEFINITIONS:
                model.compressor.cfg.mvm_loss = definition
                torch.manual_seed(index)  # the same masking rate and tokens for each definition
                output = model(batch)
                sums[definition] += float(output.losses["mvm"]) / batches
                sums["ce"] += float(output.losses["ce"]) / batches / len(DEFINITIONS)
    model.compressor.cfg.mvm_loss = "mse"
    return sums


def measure(label: str, overrides: list[str], suite: Path, steps: int) -> list[tuple[str, dict[str, float]]]:
    recipe = load_recipe("recipes/tiny/st_llm.yaml", [
        "data.synthetic=null", f"data.train={suite}/train.json", "data.eval={}", "train.progress_bar=false",
        f"train.max_steps={max(steps, 1)}", "train.save_every=null", *overrides])
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(recipe, output_dir=out, device="cpu")
        trainer.prepare()
        rows = [(f"{label}, initialisation", loss_terms(trainer))]
        if steps:
            trainer.fit()
            rows.append((f"{label}, after {steps} steps", loss_terms(trainer)))
    return rows


def table(rows) -> str:
    lines = ["| model | CE | MVM mse_sum (Eq. 4 as printed) | MVM mse (per dimension) | MVM cosine (official code) |",
             "|---|---|---|---|---|"]
    for label, terms in rows:
        lines.append(f"| {label} | {terms['ce']:.3f} | {terms['mse_sum']:.4g} | {terms['mse']:.4g} | {terms['cosine']:.4g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=150, help="training steps of the tiny recipe")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        suite = Path(root) / "suite"
        generate_suite(suite, seed=0, videos=64)
        rows = measure("tiny (D = 64)", [], suite, args.steps)
        rows += measure("LLM width 4096 (random)", WIDE, suite, 0)
    result = table(rows)
    print(result)
    return result


if __name__ == "__main__":
    main()
