"""stzoo data probe | synth: what the reader sees in a video; the synthetic action-scene suite."""

from __future__ import annotations

import json
import sys
import time

from zoo.cli.arguments import non_negative_int, positive_int
from zoo.data.action_scene import SuiteOptions, generate_suite
from zoo.data.reader import BACKENDS, VideoError, open_reader


def add_parser(subcommands) -> None:
    data = subcommands.add_parser("data", help="video data tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("probe", help="what the reader sees in a video, or the error a run would get")
    p.add_argument("video")
    p.add_argument("--reader", default="auto", choices=["auto", *BACKENDS],
                   help="auto: torchcodec where it can load FFmpeg, else decord (the recipes' default)")
    p.set_defaults(run=probe)
    p = data.add_parser("synth", help="write the synthetic action-scene suite")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--videos", type=positive_int, default=120)
    p.add_argument("--calibration-videos", type=non_negative_int, default=0,
                   help="clips made for the calibration families and their files (0: none)")
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
    p.set_defaults(run=synth)


def probe(args) -> int:
    """Decodes every frame, so a damaged stream fails here as it would in training (exit status 2)."""
    try:
        info = open_reader(args.reader).probe(args.video)
    except VideoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(info.as_dict(), indent=2))
    return 0


def synth(args) -> int:
    try:
        options = SuiteOptions(
            train_share=args.train_share, usual_bias=args.usual_bias, train_scene_only_share=args.scene_only_share,
            height=args.size[1], width=args.size[0], fps=args.fps, seconds=args.seconds,
            span_range=tuple(args.span_range), workers=args.workers)
    except ValueError as error:
        print(f"stzoo data synth: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    manifest = generate_suite(args.out, seed=args.seed, videos=args.videos, options=options,
                              calibration_videos=args.calibration_videos)
    counts = ", ".join(f"{k} {v}" for k, v in manifest.get("splits", {}).items())
    print(f"wrote {args.videos} videos to {args.out} in {time.perf_counter() - started:.1f}s ({counts})")
    return 0
