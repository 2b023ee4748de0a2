"""Video input: the loader's decode + sample + preprocess against raw torchcodec, decord and PyAV, and starvation.

Throughput in videos per second over the same files, side by side (in blocks of 8 files, in turns): raw
torchcodec and raw decord (open + decode the sampled frames, nothing else), PyAV (decode + pick),
and the STZoo loader's path for a training sample (read_sampled, resized to the encoder's size as uint8,
the conversation tokenised, as kept from an earlier epoch and, for the default reader, as the first epoch
tokenises it, plus its share of what the model does with the batch before the encoder: stack and normalise,
which moved out of the loader) with the default reader ("auto": torchcodec where it loads FFmpeg) and with
decord; target: each loader >= 0.9x the raw decoder it uses. The same rows again on videos at a source size
of real data sets (320x240, 5 s at 30 fps, to CLIP's 224), where the decode takes ~10x longer and the loader's
fixed per-sample cost weighs less. Then a tiny training run with 0, 1 and 2 DataLoader workers: the share of
each step spent waiting for data.

    python -m benchmarks.video_input [--suite FOLDER] [--videos 64] [--real-size-videos 16] [--rounds 45]
                                     [--real-size-rounds 21]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.ratio_interval import median_interval, paired_ratio
from zoo.config.recipe import load_recipe
from zoo.data.dataset import build_dataset, data_path, ensure_synthetic_suite
from zoo.data.reader import default_backend, open_reader, torchcodec_unavailable_reason
from zoo.data.sampling import uniform_indices
from zoo.data.text_cache import EncodedTextCache
from zoo.data.writer import write_video
from zoo.model.video_llm import build_model
from zoo.training.trainer import Trainer

TINY_RECIPE = "recipes/tiny/baseline.yaml"
FRAMES = 8
BATCH = 4  # the tiny recipes' batch: the model normalises this many samples' frames at once
RAW_ROW = {"torchcodec": "raw torchcodec", "decord": "raw decord", "pyav": "PyAV"}  # the row of each reader's decoder


def interleaved_rates(paths: dict, files: list[Path], rounds: int = 15, block: int = 8) -> dict[str, list[float]]:
    """Videos per second of each path in each round, side by side: the files in blocks of ``block``, every block
    through every path in an order rotated from block to block, before the next block. A path runs a block's
    samples one after the other, as a DataLoader worker runs its samples (its code and tables stay in the caches;
    a decoder run between single samples would evict them, which no worker sees), and a slow spell of this
    shared machine falls on every path of that round alike."""
    names = list(paths)
    seconds = {name: [0.0] * rounds for name in names}
    blocks = [files[start : start + block] for start in range(0, len(files), block)]
    for round_ in range(rounds):
        for number, chunk in enumerate(blocks):
            shift = (number + round_) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                for path in chunk:
                    paths[name](path)
                seconds[name][round_] += time.perf_counter() - started
    return {name: [len(files) / s for s in seconds[name]] for name in names}


def raw_decoders() -> dict:
    """Each decoder called directly, single-threaded as the readers run it: open, decode the sampled frames.
    torchcodec's row is left out (and says why) where it cannot load FFmpeg."""
    import decord

    decoders = {}
    if torchcodec_unavailable_reason() is None:
        from torchcodec.decoders import VideoDecoder

        def raw_torchcodec(path):
            decoder = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, device="cpu")
            decoder.get_frames_at(uniform_indices(decoder.metadata.num_frames, FRAMES)).data.numpy()

        decoders["raw torchcodec"] = raw_torchcodec
    else:
        print(f"raw torchcodec left out: {torchcodec_unavailable_reason()}")

    def raw_decord(path):
        reader = decord.VideoReader(str(path), num_threads=1)
        reader.get_batch(uniform_indices(len(reader), FRAMES)).asnumpy()

    pyav = open_reader("pyav")
    decoders["raw decord"] = raw_decord
    decoders["PyAV"] = lambda path: pyav.read_sampled(path, lambda info: uniform_indices(info.frames, FRAMES))
    return decoders


def training_sample(dataset, by_path: dict, normalise, batch: int = BATCH):
    """One sample through the loader, and every ``batch`` samples the batch's pixels stacked and normalised as
    the model does before its encoder (on the CPU here, in the same process: the conservative count). With
    ``batch=1`` each sample is normalised as it is loaded: the loader's work before the normalisation moved.
    With ``normalise=None`` nothing is: a DataLoader worker's whole share when the model sits on a GPU."""
    pending = []

    def read(path):
        pending.append(dataset[by_path[str(path)]].pixels)
        if normalise is None:
            pending.clear()
        elif len(pending) == batch:
            normalise(torch.stack(pending))
            pending.clear()
    return read


def real_size_suite(suite: Path, out: Path, videos: int) -> Path:
    """``videos`` of the suite's training entries pointed at videos of a real data set's source size: 320x240,
    5 s at 30 fps, a textured background under a moving square, H.264 as the suite's (one keyframe at the start,
    as libx264 writes short clips). Written once into ``out``; returns its train.json."""
    annotations = out / "train.json"
    if annotations.is_file():
        return annotations
    entries = json.loads((suite / "train.json").read_text())[:videos]
    texture = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    background = (texture // 2 + np.linspace(0, 120, 320, dtype=np.uint8)[None, :, None]).astype(np.uint8)
    for number, entry in enumerate(entries):
        frames = np.repeat(background[None], 150, axis=0)
        for t in range(150):
            left = (number * 20 + t * 2) % 280
            frames[t, 100:140, left : left + 40] = (255, 60 + number * 10, 30)
        entry["video"] = f"videos/{number:03d}.mp4"
        write_video(out / entry["video"], frames, fps=30)
    annotations.write_text(json.dumps(entries))
    return annotations


def loader_paths(suite: Path, count: int, overrides: tuple[str, ...] = ()) -> tuple[dict, list[Path], dict]:
    """The loader's training-sample path over ``count`` suite entries, once per reader: the default ("auto")
    and decord beside it where they differ. The tiny recipe pins its reader, so the reader is set here;
    ``overrides`` change the recipe further (the encoder's input size)."""
    backends = list(dict.fromkeys([default_backend(), "decord"]))
    paths, decoder_of, model, files = {}, {}, None, []
    for backend in backends:
        recipe = load_recipe(TINY_RECIPE, [f"data.train={suite}/train.json", "data.eval={}", "data.synthetic=null",
                                           f"data.video.reader={backend}", *overrides])
        model = model or build_model(recipe)  # the reader does not change the model
        dataset = build_dataset(recipe, model, suite / "train.json", max_samples=count)
        files = [suite / entry["video"] for entry in dataset.entries]
        for index in range(len(dataset)):  # an earlier epoch tokenised every conversation
            dataset.encode_text(index)
        by_path = {str(suite / entry["video"]): index for index, entry in enumerate(dataset.entries)}
        default = " (default)" if backend == backends[0] else ""
        rows = {f"STZoo loader, {backend}{default} (decode + sample + resize, normalised per batch; text tokenised "
                "in an earlier epoch)": training_sample(dataset, by_path, model.normalise)}
        if default:
            # What a DataLoader worker does when the model, and so the normalisation, sits on a GPU.
            rows[f"STZoo loader, {backend}{default}, the worker's share only (decode + sample + resize; the "
                 "normalisation on a GPU)"] = training_sample(dataset, by_path, None)
            # The same work with each sample normalised as it is loaded: the loader before the model took it over.
            rows[f"STZoo loader, {backend}{default}, each sample normalised as loaded (the earlier layout)"] = \
                training_sample(dataset, by_path, model.normalise, batch=1)
            # The first epoch, which tokenises every conversation (a dataset that keeps none).
            first = build_dataset(recipe, model, suite / "train.json", max_samples=count)
            first.encoded = EncodedTextCache(token_budget=0)
            rows[f"STZoo loader, {backend}{default}, first epoch (decode + sample + resize, normalised per batch + "
                 "tokenise)"] = training_sample(first, by_path, model.normalise)
        paths.update(rows)
        decoder_of.update({name: RAW_ROW[dataset.reader.name] for name in rows})
    return paths, files, decoder_of


def reader_rows(suite: Path, count: int, overrides: tuple[str, ...] = (), rounds: int = 15) -> str:
    loaders, files, decoder_of = loader_paths(suite, count, overrides)
    paths = {**raw_decoders(), **loaders}
    rates = interleaved_rates(paths, files, rounds=rounds)
    medians = {name: statistics.median(rounds_) for name, rounds_ in rates.items()}
    coverage = median_interval(rates["raw decord"]).coverage  # set by the number of rounds alone
    lines = ["| path | videos/s | ms/video | vs raw decord | vs the raw decoder it uses: median of the rounds' ratios "
             f"[{coverage:.0%} interval] (target >= 0.9 for a loader) |", "|---|---|---|---|---|"]
    for name, rate in medians.items():
        own = "-"
        if name in decoder_of:  # paired by round: both paths ran the same files in the same stretch of time
            own = f"{paired_ratio(rates[name], rates[decoder_of[name]]).rounded(2)} ({decoder_of[name]})"
        lines.append(f"| {name} | {rate:.1f} | {1000 / rate:.2f} | {rate / medians['raw decord']:.2f} | {own} |")
    return "\n".join(lines)


def starvation_rows(suite: Path, steps: int = 30) -> str:
    lines = ["| DataLoader workers | step time (s) | waiting for data (s) | share waiting |", "|---|---|---|---|"]
    for workers in (0, 1, 2):
        recipe = load_recipe(TINY_RECIPE, [
            f"data.train={suite}/train.json", "data.eval={}", "data.synthetic=null", f"data.num_workers={workers}",
            f"train.max_steps={steps}", "train.progress_bar=false",
        ])
        with tempfile.TemporaryDirectory() as out:
            state = Trainer(recipe, output_dir=out, device="cpu").fit()
        history = state.history[3:]  # past the workers' start
        step = statistics.median(h["step_seconds"] for h in history)
        wait = statistics.median(h["data_seconds"] for h in history)
        lines.append(f"| {workers} | {step:.4f} | {wait:.4f} | {wait / step:.1%} |")
    return "\n".join(lines)


def tiny_suite() -> Path:
    """The synthetic suite the tiny recipes train on, drawn as they draw it where it is missing: one suite for
    every benchmark and `stzoo train`, never a second drawing with other options in the same folder (which the
    recipes then refuse)."""
    recipe = load_recipe(TINY_RECIPE)
    ensure_synthetic_suite(recipe)
    return data_path(recipe.data.synthetic.out)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", help="a folder with train.json; default: the tiny recipes' synthetic suite, drawn "
                        "where missing")
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--real-size-videos", type=int, default=16)
    # Rounds set the width of each ratio's interval (the median's, ~1/sqrt(rounds)): 45 rounds of the suite's
    # videos and 21 of the real-size ones take ~1.5 minutes each. A real-size round is ~10 of the suite's long.
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--real-size-rounds", type=int, default=21)
    args = parser.parse_args(argv)
    suite = Path(args.suite) if args.suite else tiny_suite()
    if not (suite / "train.json").is_file():
        raise SystemExit(f"--suite {suite}: no train.json there; give a folder that holds one")
    readers = reader_rows(suite, args.videos, rounds=args.rounds)
    real_size = real_size_suite(suite, suite.parent / f"{suite.name}_320x240", args.real_size_videos).parent
    real_rows = reader_rows(real_size, args.real_size_videos, ("model.encoder.config.image_size=224",),
                            rounds=args.real_size_rounds)
    result = (readers + f"\n\nThe same on {args.real_size_videos} videos of 320x240, 5 s at 30 fps, resized to 224 "
              "(CLIP's input):\n\n" + real_rows + "\n\nA training step fed by the loader (tiny baseline, batch 4):\n\n"
              + starvation_rows(suite))
    print(result)
    return result


if __name__ == "__main__":
    main()
