"""stzoo eval: a model's metrics on one benchmark annotation file, with results.json and predictions.jsonl."""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.cli.arguments import add_model_arguments, positive_int
from components.config import RecipeError
from zoo.config.recipe import ANNOTATION_FORMATS, AnnotationFormat
from zoo.evaluation.benchmark import evaluate
from zoo.evaluation.metrics.scoring import flatten_metrics
from zoo.runs.tracking import load_model


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("eval", help="evaluate a model on a benchmark annotation file")
    add_model_arguments(p)
    p.add_argument("--benchmark", required=True, help="an annotation file (the STZoo schema unless --format says otherwise)")
    p.add_argument("--format", choices=ANNOTATION_FORMATS,
                   help="the benchmark file's format (default: the recipe's data.format for it, else stzoo)")
    p.add_argument("--video-dir", help="with --format mvbench or charades_sta: the videos' folder, relative to the "
                                       "file's folder (default: the file's folder)")
    p.add_argument("--durations", help="with --format charades_sta: Charades' CSV or a JSON {id: seconds} "
                                       "(default: each video's duration, read from the video)")
    p.add_argument("--out", help="directory for results.json and predictions.jsonl")
    p.add_argument("--max-samples", type=positive_int, help="the first N entries only")
    p.add_argument("--skip-bad-videos", action="store_true",
                   help="leave unreadable videos out of the scores (counted and listed in results.json) instead of stopping")
    p.set_defaults(run=run)


def run(args) -> int:
    if (args.video_dir or args.durations) and not args.format:
        raise RecipeError("--video-dir and --durations describe a public format's file: give --format too")
    chosen = AnnotationFormat(args.format, video_dir=args.video_dir, durations=args.durations) if args.format else None
    model = load_model(args.model, args.device, args.plugins)
    out = Path(args.out) if args.out else None
    results = evaluate(model, args.benchmark, out_dir=out, max_samples=args.max_samples, progress=True,
                       skip_bad_videos=True if args.skip_bad_videos else None, annotation_format=chosen)
    for key, value in flatten_metrics(results).items():
        print(f"{key:<48} {value:.2f}")
    skipped = results.get("skipped_videos")
    if skipped:
        print(f"warning: {skipped['count']} entries were left out as unreadable videos (listed in results.json), "
              f"e.g. {skipped['entries'][0]['reason']}", file=sys.stderr)
    if out:
        print(f"results: {out / 'results.json'}  predictions: {out / 'predictions.jsonl'}")
    return 0
