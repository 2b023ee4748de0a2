"""The ``stzoo`` command line.

    stzoo components [--json]                       every registered component, per kind
    stzoo resolve RECIPE [--set k=v ...]            the resolved recipe as YAML
    stzoo build RECIPE [--set k=v ...] [--meta] [--json]
    stzoo train RECIPE [--set k=v ...] [--output DIR] [--resume CHECKPOINT]
    stzoo eval MODEL --benchmark FILE [--out DIR]   metrics of a model on a benchmark
    stzoo sweep EXPERIMENT [--scale tiny]           every variant x seed, as child MLflow runs
    stzoo compare EXPERIMENT [--scale tiny]         the paper-style table of those runs
    stzoo attention MODEL --benchmark FILE          where answers look (spatial vs temporal tokens)
    stzoo generate MODEL --video V --prompt P       stream a model's answer about a video
    stzoo data probe VIDEO [--reader decord|pyav]
    stzoo data synth --out DIR [--seed S] [--videos N]

Errors a user can fix (a bad recipe, a missing video, a checkpoint that does not match)
print one line and exit with status 2; STZOO_DEBUG=1 shows the traceback too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set model.mask=causal (repeatable)")


def cmd_components(args) -> int:
    from components import registry

    catalogue = registry.catalogue()
    if args.json:
        print(json.dumps(catalogue, indent=2))
        return 0
    for kind, entries in catalogue.items():
        if not entries:
            continue
        print(f"{kind}:")
        width = max(len(e["name"]) for e in entries)
        for entry in entries:
            print(f"  {entry['name']:<{width}}  {entry['description']}")
    return 0


def cmd_resolve(args) -> int:
    from zoo.recipe import load_recipe

    print(load_recipe(args.recipe, args.overrides).dump(), end="")
    return 0


def cmd_build(args) -> int:
    from zoo.model import build_model
    from zoo.recipe import load_recipe
    from zoo.summary import format_summary, summarize

    started = time.perf_counter()
    recipe = load_recipe(args.recipe, args.overrides)
    model = build_model(recipe, meta=args.meta)
    summary = summarize(model, args.meta, world_size=args.world_size)
    summary["build_seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_train(args) -> int:
    from zoo.recipe import load_recipe
    from zoo.train import Trainer

    from pathlib import Path

    from zoo.stages import run_stages

    recipe = load_recipe(args.recipe, args.overrides)
    output = Path(args.output or recipe.train.output_dir.format(name=recipe.name))
    if recipe.train.stages:
        states = run_stages(recipe, output, lambda r, model, out: Trainer(r, model=model, output_dir=out))
        for stage, state in zip(recipe.train.stages, states):
            _report(f"{recipe.name} stage {stage.name}", state, output / stage.name)
        return 0
    trainer = Trainer(recipe, output_dir=output)
    _report(recipe.name, trainer.fit(resume_from=args.resume), output)
    return 0


def _report(name: str, state, output) -> None:
    first, last = state.history[0]["loss"], state.history[-1]["loss"]
    print(f"trained {name}: {state.step} steps, loss {first:.4f} -> {last:.4f}; model saved to {output / 'final'}")
    if state.skipped_samples:
        print(f"warning: {state.skipped_samples} samples were skipped as unreadable videos", file=sys.stderr)


def cmd_generate(args) -> int:
    from zoo.inference import answer_stream

    for piece in answer_stream(args.model, args.video, args.prompt, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, device=args.device):
        print(piece, end="", flush=True)
    print()
    return 0


def cmd_eval(args) -> int:
    from pathlib import Path

    from evals.scoring import flatten_metrics
    from zoo.evaluation import evaluate
    from zoo.inference import load_model

    model = load_model(args.model, args.device)
    out = Path(args.out) if args.out else None
    results = evaluate(model, args.benchmark, out_dir=out, max_samples=args.max_samples, progress=True)
    for key, value in flatten_metrics(results).items():
        print(f"{key:<48} {value:.2f}")
    if out:
        print(f"results: {out / 'results.json'}  predictions: {out / 'predictions.jsonl'}")
    return 0


def cmd_sweep(args) -> int:
    from pathlib import Path

    from zoo.experiment import load_experiment
    from zoo.sweep import run_sweep, train_in_process

    experiment = load_experiment(args.experiment)
    outcome = run_sweep(experiment, args.scale, train_in_process(experiment, args.scale, Path(args.output)),
                        seeds=[int(x) for x in args.seeds.split(",")] if args.seeds else None,
                        variants=args.variants.split(",") if args.variants else None, extra=args.overrides)
    for state, names in outcome.items():
        print(f"{state}: {len(names)}" + (f" ({', '.join(names)})" if names and state == "failed" else ""))
    return 1 if outcome["failed"] else 0


def cmd_compare(args) -> int:
    from pathlib import Path

    from zoo.compare import compare
    from zoo.experiment import load_experiment

    experiment = load_experiment(args.experiment)
    out = Path(args.out or f"experiments/results/{experiment.name}_{args.scale}")
    comparison = compare(experiment, args.scale, out)
    print(comparison.markdown())
    print(f"\nwritten to {out}/ (table.md, table.csv, metrics.png, training_loss.png)")
    return 0


def cmd_attention(args) -> int:
    from pathlib import Path

    from zoo.attention import answer_attention, write_attention_report
    from zoo.inference import load_model

    model = load_model(args.model, args.device)
    shares = answer_attention(model, args.benchmark, max_samples=args.max_samples)
    for question_type, kinds in sorted(shares.items()):
        print(f"{question_type} questions: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(kinds.items())))
    out = Path(args.out)
    files = write_attention_report(shares, out, f"where answers look: {model.recipe.name}")
    if args.model.startswith("runs:/"):
        from zoo import tracking

        run_id = args.model.removeprefix("runs:/").split("/")[0]
        for file in files:
            tracking.client(tracking.tracking_uri()).log_artifact(run_id, str(file), "attention")
    print(f"written to {out}/ (answer_attention.json, answer_attention.png)")
    return 0


def cmd_data_probe(args) -> int:
    from videodata.reader import VideoError, open_reader

    try:
        info = open_reader(args.reader).info(args.video)
    except VideoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(info.as_dict(), indent=2))
    return 0


def cmd_data_synth(args) -> int:
    from videodata.action_scene import SuiteOptions, generate_suite

    try:
        options = SuiteOptions(
            train_share=args.train_share, usual_bias=args.usual_bias, train_scene_only_share=args.scene_only_share,
            height=args.size[1], width=args.size[0], fps=args.fps, seconds=args.seconds,
            span_range=tuple(args.span_range), workers=args.workers)
    except ValueError as error:
        print(f"stzoo data synth: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    manifest = generate_suite(args.out, seed=args.seed, videos=args.videos, options=options)
    counts = ", ".join(f"{k} {v}" for k, v in manifest.get("splits", {}).items())
    print(f"wrote {args.videos} videos to {args.out} in {time.perf_counter() - started:.1f}s ({counts})")
    return 0


def parser() -> argparse.ArgumentParser:
    from videodata.action_scene import SuiteOptions

    root = argparse.ArgumentParser(prog="stzoo", description="STZoo: compare spatial-temporal video LLMs")
    commands = root.add_subparsers(dest="command", required=True)

    p = commands.add_parser("components", help="list every registered component")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_components)

    p = commands.add_parser("resolve", help="print the resolved recipe")
    _add_recipe_arguments(p)
    p.set_defaults(run=cmd_resolve)

    p = commands.add_parser("build", help="build a recipe's model and summarise it")
    _add_recipe_arguments(p)
    p.add_argument("--meta", action="store_true", help="shapes only, on the meta device: no weights, no memory")
    p.add_argument("--world-size", type=int, default=8, help="GPUs for the ZeRO memory estimate (default 8)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_build)

    p = commands.add_parser("train", help="train a recipe in this process")
    _add_recipe_arguments(p)
    p.add_argument("--output", help="output directory (default: the recipe's train.output_dir)")
    p.add_argument("--resume", help="a checkpoint directory written by a previous run")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("generate", help="answer a prompt about a video")
    p.add_argument("model", help="a checkpoint directory (save_pretrained) or an MLflow run (runs:/ID)")
    p.add_argument("--video", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_generate)

    p = commands.add_parser("eval", help="evaluate a model on a benchmark annotation file")
    p.add_argument("model", help="a checkpoint directory or an MLflow run (runs:/ID)")
    p.add_argument("--benchmark", required=True, help="an annotation file in the STZoo schema")
    p.add_argument("--out", help="directory for results.json and predictions.jsonl")
    p.add_argument("--max-samples", type=int)
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_eval)

    p = commands.add_parser("sweep", help="train and evaluate every variant x seed of an experiment file")
    p.add_argument("experiment")
    p.add_argument("--scale", choices=["paper", "tiny"], default="paper")
    p.add_argument("--seeds", help="comma-separated seeds (default: the experiment's)")
    p.add_argument("--variants", help="comma-separated variants (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--output", default="runs/sweeps")
    p.set_defaults(run=cmd_sweep)

    p = commands.add_parser("compare", help="an experiment's runs as a paper-style table, charts and loss curves")
    p.add_argument("experiment")
    p.add_argument("--scale", choices=["paper", "tiny"], default="paper")
    p.add_argument("--out", help="output directory (default: experiments/results/NAME_SCALE)")
    p.set_defaults(run=cmd_compare)

    p = commands.add_parser("attention", help="where answers look: attention to spatial, temporal and other tokens (MASH-VLM Fig. 6)")
    p.add_argument("model", help="a checkpoint directory or runs:/RUN_ID (the plot is then logged to the run)")
    p.add_argument("--benchmark", required=True, help="annotation file; binary entries are split by question_type")
    p.add_argument("--max-samples", type=int, default=64)
    p.add_argument("--out", default="runs/attention")
    p.add_argument("--device", default=None)
    p.set_defaults(run=cmd_attention)

    data = commands.add_parser("data", help="video data tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("probe", help="what the reader sees in a video, or the error a run would get")
    p.add_argument("video")
    p.add_argument("--reader", default="decord", choices=["decord", "pyav"])
    p.set_defaults(run=cmd_data_probe)
    p = data.add_parser("synth", help="write the synthetic action-scene suite")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--videos", type=int, default=120)
    defaults = SuiteOptions()
    p.add_argument("--train-share", type=float, default=defaults.train_share, help="share of videos in the train split")
    p.add_argument("--usual-bias", type=float, default=defaults.usual_bias,
                   help="share of train videos whose action is in its usual scene")
    p.add_argument("--scene-only-share", type=float, default=defaults.train_scene_only_share,
                   help="share of train videos with no actor")
    p.add_argument("--size", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"), default=[defaults.width, defaults.height])
    p.add_argument("--fps", type=int, default=defaults.fps)
    p.add_argument("--seconds", type=float, default=defaults.seconds)
    p.add_argument("--span-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=list(defaults.span_range),
                   help="the actor's time on screen as a share of the clip")
    p.add_argument("--workers", type=int, default=defaults.workers, help="processes that render videos")
    p.set_defaults(run=cmd_data_synth)
    return root


def user_errors() -> tuple[type[BaseException], ...]:
    from videodata.formats import AnnotationError
    from videodata.reader import VideoError
    from zoo.prompting import ConversationError
    from zoo.schema import RecipeError
    from zoo.train import TrainingError

    from components.registry import RegistryError

    return (RecipeError, VideoError, AnnotationError, ConversationError, TrainingError, RegistryError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except user_errors() as error:
        if os.environ.get("STZOO_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
