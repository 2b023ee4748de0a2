"""stzoo compare: an experiment's runs as a paper-style table, bar charts and loss curves."""

from __future__ import annotations

import os
from pathlib import Path

from components.config import RecipeError
from zoo.config.experiment import load_experiment
from zoo.runs.compare import REPLICATES, compare


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("compare", help="an experiment's runs as a paper-style table, charts and loss curves")
    p.add_argument("experiment")
    p.add_argument("--scale", choices=["paper", "tiny"], default="paper")
    p.add_argument("--out", help="output directory (default: experiments/results/NAME_SCALE)")
    p.add_argument("--bootstrap", type=int, default=REPLICATES, metavar="N",
                   help=f"bootstrap draws for the intervals of differences (default {REPLICATES}; 0: none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="the --set overrides the sweep ran with: runs are kept when they were made by the file with them")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless every expectation of the experiment file held (a calibration's pass/fail)")
    p.set_defaults(run=run)


def run(args) -> int:
    # Each run's per-entry results are downloaded: MLflow's progress bar per file would bury the table.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    experiment = load_experiment(args.experiment)
    out = Path(args.out or f"experiments/results/{experiment.name}_{args.scale}")
    if args.check and args.bootstrap <= 0:
        raise RecipeError("stzoo compare: --check judges expectations on bootstrap intervals; give --bootstrap N > 0")
    comparison = compare(experiment, args.scale, out, replicates=args.bootstrap, extra=args.overrides)
    print(comparison.markdown())
    print(f"\nwritten to {out}/ (table.md, table.csv, metrics.png, training_loss.png)")
    held = sum(verdict.held is True for verdict in comparison.verdicts)
    if args.check and held < len(experiment.expectations):
        print(f"{len(experiment.expectations) - held} of {len(experiment.expectations)} expectations not held or not measured")
        return 1
    return 0
