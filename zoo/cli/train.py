"""stzoo train: train a recipe in this process, tracked in MLflow like a Ray job (zoo.runs.run_recipe)."""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.cli.arguments import add_recipe_arguments
from zoo.config.recipe import load_recipe
from zoo.runs.in_process import InProcessLauncher
from zoo.runs.run_recipe import run_recipe


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("train", help="train a recipe in this process")
    add_recipe_arguments(p)
    p.add_argument("--output", help="output directory (default: the recipe's train.output_dir)")
    p.add_argument("--resume", help="a checkpoint directory written by a previous run (its MLflow run continues)")
    p.add_argument("--resume-anyway", action="store_true",
                   help="resume a checkpoint that another recipe wrote (same shapes), continuing under this recipe")
    p.add_argument("--run-name", help="the MLflow run name (default: the recipe's name and fingerprint)")
    p.set_defaults(run=run)


def run(args) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    output = Path(args.output or recipe.train.output_dir.format(name=recipe.name))
    launcher = InProcessLauncher(output, resume_from=args.resume, resume_anyway=args.resume_anyway)
    result = run_recipe(recipe, launcher, args.run_name, resume=args.resume is not None)
    for stage in result.stages:
        name = f"{recipe.name} stage {stage.name}" if stage.name else recipe.name
        first, last = stage.losses or (float("nan"), float("nan"))
        print(f"trained {name}: {stage.last_step - stage.first_step} steps, loss {first:.4f} -> {last:.4f}; "
              f"model saved to {stage.model_dir}")
        if stage.skipped_samples:
            print(f"warning: {stage.skipped_samples} samples were skipped as unreadable videos", file=sys.stderr)
    for key, value in result.metrics.items():
        print(f"{key:<48} {value:.2f}")
    print(f"MLflow run {result.run.run_id} at {result.run.uri}")
    return 0
