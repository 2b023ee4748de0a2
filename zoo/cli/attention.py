"""stzoo attention: where answers look, the share of attention on spatial, temporal, frame and text tokens."""

from __future__ import annotations

from pathlib import Path

from zoo.cli.arguments import add_model_arguments
from zoo.evaluation.attention_share import answer_attention, write_attention_report
import zoo.runs.tracking as tracking


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("attention", help="where answers look: attention to spatial, temporal and other tokens (MASH-VLM Fig. 6)")
    add_model_arguments(p)
    p.add_argument("--benchmark", required=True, help="annotation file; binary entries are split by question_type")
    p.add_argument("--max-samples", type=int, default=64)
    p.add_argument("--out", default="runs/attention")
    p.set_defaults(run=run)


def run(args) -> int:
    model = tracking.load_model(args.model, args.device, args.plugins)
    shares = answer_attention(model, args.benchmark, max_samples=args.max_samples)
    for question_type, kinds in sorted(shares.items()):
        print(f"{question_type} questions: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(kinds.items())))
    out = Path(args.out)
    files = write_attention_report(shares, out, f"where answers look: {model.recipe.name}")
    if args.model.startswith("runs:/"):
        run_id = args.model.removeprefix("runs:/").split("/")[0]
        for file in files:
            tracking.client(tracking.tracking_uri()).log_artifact(run_id, str(file), "attention")
    print(f"written to {out}/ (answer_attention.json, answer_attention.png)")
    return 0
