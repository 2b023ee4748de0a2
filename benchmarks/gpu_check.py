"""make gpu-check: what only a GPU can show, in one script that finishes in minutes on one H100/H200.

1. FlexAttention BlockMasks against sdpa with the dense mask, forward + backward, for the DST and
   frame-block masks at 8k, 16k and 32k tokens in bf16: the speed-up and the speed-up x density
   (target >= 0.7; 1 / density bounds what skipping blocks can gain).
2. A bf16 training step of the MASH-VLM architecture (CLIP ViT-L/14-336, DST, Harmonic-RoPE) with
   random weights and a Llama-style LLM of the largest size whose model states fit (7B, 3B or 1B,
   judged from the same estimate `stzoo build --meta` prints), under DeepSpeed ZeRO-2, ZeRO-3 and
   FSDP2 (FSDP2 packed and unpacked) on mixed-length batches: useful tokens/s, MFU (the model's
   FLOPs estimate over the step time and the GPU's dense bf16 peak), peak memory against the
   ZeRO estimate of model states.

It writes benchmarks/gpu_results.md (or --out). ``--dry-run`` runs the same code on the CPU at tiny
sizes (tiny MASH-VLM, 256- and 512-token attention, eager flex, fp32, one step each) and writes
to --out, so the check cannot rot before a GPU is lent (tests/benchmarks/test_gpu_check.py).

    python -m benchmarks.gpu_check [--dry-run] [--out FILE] [--steps 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from pathlib import Path

import torch

from benchmarks import attention_masks
from benchmarks.packing import mixed_batch
from benchmarks.run_all import machine
from zoo.config.recipe import load_recipe
from zoo.model.cost import training_step_cost
from zoo.model.video_llm import build_model
from zoo.training.trainer import build_engine

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "gpu_results.md"
# Llama-style LLM sizes, largest first (7B: Vicuna-7B's shape; 3B: OpenLLaMA-3B's; 1B: TinyLlama-1.1B's).
SIZES = {
    "7B": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32},
    "3B": {"hidden_size": 3200, "intermediate_size": 8640, "num_hidden_layers": 26, "num_attention_heads": 32,
           "num_key_value_heads": 32},
    "1B": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4},
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s
STRATEGIES = (("zero2", False), ("zero3", False), ("fsdp2", False), ("fsdp2", True))
MODEL_STATE_SHARE = 0.6  # of GPU memory for weights, gradients and Adam states; the rest for activations


def recipe_for(size: str | None, dry_run: bool):
    if dry_run:
        return load_recipe(REPO / "recipes" / "tiny" / "mash_vlm.yaml", ["train.grad_clip=1.0"])
    config = "{" + ", ".join(f"{k}: {v}" for k, v in SIZES[size].items()) + "}"
    return load_recipe(REPO / "recipes" / "mash_vlm.yaml", [
        "model.llm.tokenizer=byte", f"model.llm.config={config}", "model.llm.gradient_checkpointing=true",
        "model.llm.dtype=float32", "train.grad_clip=1.0"])  # fp32 masters: DeepSpeed and FSDP2's policy cast to bf16


def largest_size(dry_run: bool) -> str | None:
    """The largest LLM size whose model states (ZeRO-2 estimate, one GPU) take at most MODEL_STATE_SHARE of it."""
    if dry_run:
        return None
    memory = torch.cuda.get_device_properties(0).total_memory / 1024**3
    for size in SIZES:
        cost = training_step_cost(build_model(recipe_for(size, False), meta=True), world_size=1)
        if cost.zero2_gib <= MODEL_STATE_SHARE * memory:
            return size
    return list(SIZES)[-1]


def attention_section(dry_run: bool) -> str:
    lengths = [256, 512] if dry_run else [8192, 16384, 32768]
    device = "cpu" if dry_run else "cuda"
    dtype = torch.float32 if dry_run else torch.bfloat16
    rows = [attention_masks.measure(mask, length, device, heads=4 if dry_run else 32, head_dim=64, repeats=1 if dry_run else 3,
                                    dtype=dtype, compile_flex=not dry_run)
            for length in lengths for mask in ("frame_block", "dst")]
    return attention_masks.table(rows)


def timed_steps(engine, batches, device) -> tuple[float, int]:
    """Median seconds per step and real tokens per step, after one warm-up step."""
    times, tokens = [], []
    for index, batch in enumerate(batches):
        batch = batch.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        output = engine.forward(batch)
        engine.backward(output.loss)
        engine.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - started)
            tokens.append(int(output.sequence.attention_mask.sum()))
    middle = sorted(range(len(times)), key=times.__getitem__)[len(times) // 2]
    return times[middle], tokens[middle]


def training_row(size: str | None, strategy: str, packed: bool, steps: int, dry_run: bool, batch_size: int = 4) -> str:
    device = torch.device("cpu" if dry_run else "cuda")
    precision = "fp32" if dry_run else "bf16"
    recipe = recipe_for(size, dry_run)
    recipe.data.packing = packed
    recipe.scaling.strategy = "fsdp2" if strategy == "fsdp2" else "deepspeed"
    recipe.scaling.deepspeed_config = str(REPO / "ray_jobs" / "deepspeed" / f"{strategy}.json")
    recipe.train.batch_size, recipe.train.schedule = batch_size, "constant"
    torch.manual_seed(0)
    model = build_model(recipe, load_pretrained=False).to(device).train()
    cost = training_step_cost(model, world_size=1)
    rng = random.Random(0)
    batches = [mixed_batch(model, rng, batch_size) for _ in range(steps + 1)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    engine = build_engine(model, model.recipe, precision, total_steps=1000)
    seconds, tokens = timed_steps(engine, batches, device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    mfu = f"{100 * cost.flops * batch_size / seconds / peak:.1f}%" if peak else "n/a"
    memory = f"{torch.cuda.max_memory_allocated() / 1024**3:.1f}" if device.type == "cuda" else "n/a (CPU)"
    estimate = cost.zero3_gib if strategy == "zero3" else cost.zero2_gib
    del engine, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    label = size or "tiny"
    return (f"| {label} | {strategy} | {'packed' if packed else 'padded'} | {tokens / seconds:.0f} | {seconds:.3f} | "
            f"{mfu} | {memory} | {estimate:.1f} |")


def training_section(steps: int, dry_run: bool) -> str:
    size = largest_size(dry_run)
    lines = ["| LLM | strategy | batch | useful tokens/s | step (s) | MFU | peak memory (GiB) | "
             "model-state estimate (GiB, `stzoo build --meta`) |", "|---|---|---|---|---|---|---|---|"]
    for strategy, packed in STRATEGIES:
        lines.append(training_row(size, strategy, packed, steps, dry_run))
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the same code without a GPU")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {RESULTS.relative_to(REPO)} (a dry run: none)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per strategy (after one warm-up)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no GPU here: run it where one is lent, or pass --dry-run to check the script on the CPU")
    started = time.time()
    attention = attention_section(args.dry_run)
    print(attention, flush=True)
    training = training_section(1 if args.dry_run else args.steps, args.dry_run)
    text = (f"# GPU check{' (dry run on the CPU: tiny sizes, not results)' if args.dry_run else ''}\n\n"
            f"Machine: {machine()}\n\nCommand: `make gpu-check` (`python -m benchmarks.gpu_check"
            f"{' --dry-run' if args.dry_run else ''}`), {time.time() - started:.0f} s\n\n"
            f"## FlexAttention vs sdpa with the dense mask\n\n{attention}\n\n"
            f"## A training step of the MASH-VLM architecture, random weights\n\n{training}\n")
    out = args.out or (None if args.dry_run else RESULTS)
    if out is not None:
        out.write_text(text)
        print(f"written to {out}")
    return text


if __name__ == "__main__":
    main()
