"""stzoo resolve: the recipe after its extends chain and --set overrides, as YAML."""

from __future__ import annotations

from zoo.cli.arguments import add_recipe_arguments
from zoo.config.recipe import load_recipe


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("resolve", help="print the resolved recipe")
    add_recipe_arguments(p)
    p.set_defaults(run=run)


def run(args) -> int:
    print(load_recipe(args.recipe, args.overrides).dump(), end="")
    return 0
