"""stzoo export: a trained model as a Hugging Face folder (whole model, the LM alone, peft adapters)."""

from __future__ import annotations

import argparse
import re

from zoo.cli.arguments import add_model_arguments
from zoo.model.export import export
from zoo.runs.tracking import load_model

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("export", help="write a model as a Hugging Face folder (config.json, shards, "
                                              "tokenizer, the LM alone, peft adapters)")
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="the folder to write (replaced once the new one is complete)")
    p.add_argument("--max-shard-size", type=shard_size, default=None, metavar="SIZE",
                   help="largest weight file, e.g. 5GB or 500MB (default: one file for the whole model, "
                        "transformers' 5GB shards for the LM)")
    p.set_defaults(run=run)


def shard_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 5GB, 500MB or 1048576")
    return int(float(match.group(1)) * UNITS[(match.group(2) or "").upper()])


def run(args) -> int:
    model = load_model(args.model, args.device or "cpu", args.plugins)
    summary = export(model, args.out, args.max_shard_size)
    print(f"exported {args.model} to {summary.directory}")
    for line in summary.lines():
        print(f"  {line}")
    return 0
