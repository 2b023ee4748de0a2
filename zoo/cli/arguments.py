"""Arguments several subcommands share: a recipe with overrides, or a trained model to load."""

from __future__ import annotations

import argparse


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set model.mask=causal (repeatable)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a checkpoint directory (save_pretrained form) or an MLflow run (runs:/ID)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--plugins", type=plugin_list, default=[], metavar="MODULE[,MODULE]",
                        help="plugin modules the checkpoint's recipe names that you trust to be imported "
                             "(a checkpoint alone never runs code)")


def plugin_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is not at least {least}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--max-samples -1`` used to drop the last entry)."""
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (a negative count would silently draw nothing)."""
    return whole_number(text, 0)
