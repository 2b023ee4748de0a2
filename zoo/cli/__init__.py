"""The ``stzoo`` command line: one small module per subcommand (torchtune's ``_cli/``).

    stzoo components [--json]                       every registered component, per kind
    stzoo resolve RECIPE [--set k=v ...]            the resolved recipe as YAML
    stzoo build RECIPE [--set k=v ...] [--meta] [--json]
    stzoo train RECIPE [--set k=v ...] [--output DIR] [--resume CHECKPOINT]
    stzoo eval MODEL --benchmark FILE [--out DIR]   metrics of a model on a benchmark
    stzoo sweep EXPERIMENT [--scale tiny]           every variant x seed, as child MLflow runs
    stzoo compare EXPERIMENT [--scale tiny]         the paper-style table of those runs
    stzoo attention MODEL --benchmark FILE          where answers look (spatial vs temporal tokens)
    stzoo generate MODEL --video V --prompt P       stream a model's answer about a video
    stzoo export MODEL --out DIR                    a Hugging Face folder: whole model, the LM alone, peft adapters
    stzoo data probe VIDEO [--reader auto|torchcodec|decord|pyav]
    stzoo data synth --out DIR [--seed S] [--videos N]
    stzoo sync [RUN_ID ...]                         send what runs kept while MLflow was away

Each module has ``add_parser(subcommands)``; only the module of the command given is imported,
so ``stzoo components`` does not pay for MLflow and Ray. Errors a user can fix (a bad recipe, a
missing video, a checkpoint that does not match) print one line and exit with status 2;
STZOO_DEBUG=1 shows the traceback too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from components.errors import UserError
from zoo.runtime.threads import apply_thread_policy, release_threads

# Commands that compute: each registers for its share of the cores (zoo/runtime/threads.py).
COMPUTE_COMMANDS = ("build", "train", "eval", "sweep", "attention", "generate", "export")
COMMANDS = ("components", "resolve", "build", "train", "eval", "sweep", "compare", "attention", "generate", "export", "data",
            "sync")
USER_ERRORS = (UserError, FileNotFoundError)


def parser(commands: tuple[str, ...] = COMMANDS) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="stzoo", description="STZoo: compare spatial-temporal video LLMs")
    subcommands = root.add_subparsers(dest="command", required=True)
    for command in commands:
        importlib.import_module(f"zoo.cli.{command}").add_parser(subcommands)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = parser((chosen,) if chosen in COMMANDS else COMMANDS).parse_args(argv)
    if args.command in COMPUTE_COMMANDS:
        apply_thread_policy()
    try:
        return args.run(args)
    except USER_ERRORS as error:
        if os.environ.get("STZOO_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        release_threads()
