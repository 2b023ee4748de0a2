"""stzoo sweep: every variant x seed of an experiment file, trained here, as child MLflow runs."""

from __future__ import annotations

from pathlib import Path

from zoo.config.experiment import load_experiment
from zoo.runs.in_process import InProcessLauncher
from zoo.runs.sweep import add_selection_arguments, print_outcome, run_sweep, selection


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("sweep", help="train and evaluate every variant x seed of an experiment file")
    add_selection_arguments(p)
    p.add_argument("--output", default="runs/sweeps")
    p.set_defaults(run=run)


def run(args) -> int:
    experiment = load_experiment(args.experiment)
    output = Path(args.output)
    outcome = run_sweep(experiment, args.scale, lambda child: InProcessLauncher(output / child.name), **selection(args))
    return print_outcome(outcome)
