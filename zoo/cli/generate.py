"""stzoo generate: stream a model's answer about one video."""

from __future__ import annotations

from zoo.cli.arguments import add_model_arguments
from zoo.model.inference import answer_stream
from zoo.runs.tracking import load_model


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("generate", help="answer a prompt about a video")
    add_model_arguments(p)
    p.add_argument("--video", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.set_defaults(run=run)


def run(args) -> int:
    model = load_model(args.model, args.device, args.plugins)
    for piece in answer_stream(model, args.video, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature):
        print(piece, end="", flush=True)
    print()
    return 0
