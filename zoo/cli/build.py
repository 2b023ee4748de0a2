"""stzoo build: build a recipe's model (or its shapes only, --meta) and summarise it."""

from __future__ import annotations

import json
import time

from zoo.cli.arguments import add_recipe_arguments
from zoo.config.recipe import load_recipe
from zoo.model.summary import format_summary, summarize
from zoo.model.video_llm import build_model


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("build", help="build a recipe's model and summarise it")
    add_recipe_arguments(p)
    p.add_argument("--meta", action="store_true", help="shapes only, on the meta device: no weights, no memory")
    p.add_argument("--world-size", type=int, default=8, help="GPUs for the ZeRO memory estimate (default 8)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    started = time.perf_counter()
    recipe = load_recipe(args.recipe, args.overrides)
    model = build_model(recipe, meta=args.meta)
    summary = summarize(model, args.meta, world_size=args.world_size)
    summary["build_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
