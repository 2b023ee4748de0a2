"""stzoo build: build a recipe's model (or its shapes only, --meta) and summarise it."""

from __future__ import annotations

import json
import time

from zoo.cli.arguments import add_recipe_arguments
from zoo.config.recipe import load_recipe
from zoo.model.summary import format_summary, summarize
from zoo.model.checkpoint_import import check_coverage, coverage, format_coverage
from zoo.model.video_llm import build_model
from components.config import RecipeError


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("build", help="build a recipe's model and summarise it")
    add_recipe_arguments(p)
    p.add_argument("--meta", action="store_true", help="shapes only, on the meta device: no weights, no memory")
    p.add_argument("--world-size", type=int, default=8, help="GPUs for the ZeRO memory estimate (default 8)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--check-init", action="store_true",
                   help="after model.init_from, where every component's tensors came from (files, own weights, random)")
    p.set_defaults(run=run)


def run(args) -> int:
    started = time.perf_counter()
    recipe = load_recipe(args.recipe, args.overrides)
    if args.check_init:
        return check_init(recipe)
    model = build_model(recipe, meta=args.meta)
    summary = summarize(model, args.meta, world_size=args.world_size)
    summary["build_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def check_init(recipe) -> int:
    """The coverage table of model.init_from; exit 2 (and the strict build's sentence) if a tensor stays random unasked."""
    if not recipe.model.init_from:
        raise RecipeError(f"{recipe.source}: --check-init: the recipe has no model.init_from to check")
    model = build_model(recipe, strict_init=False)
    report = model.import_report
    print(report.summary())
    print(format_coverage(coverage(model, report, recipe.model.allow_random)))
    check_coverage(model, report, recipe.model.allow_random)
    return 0
