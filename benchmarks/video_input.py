"""Video input: the loader's decode + sample + preprocess against raw torchcodec, decord and PyAV, and starvation.

Throughput in videos per second over the same files, side by side (rounds interleave them): raw
torchcodec and raw decord (open + decode the sampled frames, nothing else), PyAV (decode + pick),
and the STZoo loader's path for a training sample (read_sampled, preprocess to the encoder's input,
the conversation tokenised, as kept from an earlier epoch and, for the default reader, as the first epoch
tokenises it) with the default reader ("auto": torchcodec where it loads FFmpeg) and with
decord; target: each loader >= 0.9x the raw decoder it uses. Then a tiny training run with 0, 1
and 2 DataLoader workers: the share of each step spent waiting for data.

    python -m benchmarks.video_input [--suite .stzoo/data/action_scene] [--videos 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from zoo.data.reader import default_backend, open_reader, torchcodec_unavailable_reason
from zoo.data.sampling import uniform_indices
from zoo.data.text_cache import EncodedTextCache

FRAMES = 8
RAW_ROW = {"torchcodec": "raw torchcodec", "decord": "raw decord", "pyav": "PyAV"}  # the row of each reader's decoder


def throughput(read, files: list[Path], rounds: int = 3) -> list[float]:
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for path in files:
            read(path)
        rates.append(len(files) / (time.perf_counter() - started))
    return rates


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


def loader_paths(suite: Path, count: int) -> tuple[dict, list[Path], dict]:
    """The loader's training-sample path over ``count`` suite entries, once per reader: the default ("auto")
    and decord beside it where they differ. The tiny recipe pins its reader, so the reader is set here."""
    from zoo.data.dataset import build_dataset
    from zoo.model.video_llm import build_model
    from zoo.config.recipe import load_recipe

    backends = list(dict.fromkeys([default_backend(), "decord"]))
    paths, decoder_of, model, files = {}, {}, None, []
    for backend in backends:
        recipe = load_recipe("recipes/tiny/baseline.yaml", [f"data.train={suite}/train.json", "data.eval={}",
                                                            "data.synthetic=null", f"data.video.reader={backend}"])
        model = model or build_model(recipe)  # the reader does not change the model
        dataset = build_dataset(recipe, model, suite / "train.json", max_samples=count)
        files = [suite / entry["video"] for entry in dataset.entries]
        for index in range(len(dataset)):  # an earlier epoch tokenised every conversation
            dataset.encode_text(index)
        by_path = {str(suite / entry["video"]): index for index, entry in enumerate(dataset.entries)}
        default = " (default)" if backend == backends[0] else ""
        name = f"STZoo loader, {backend}{default} (decode + sample + preprocess; text tokenised in an earlier epoch)"
        paths[name] = lambda path, dataset=dataset, by_path=by_path: dataset[by_path[str(path)]]
        decoder_of[name] = RAW_ROW[dataset.reader.name]
        if default:  # the first epoch, which tokenises every conversation (a dataset that keeps none)
            first = build_dataset(recipe, model, suite / "train.json", max_samples=count)
            first.encoded = EncodedTextCache(token_budget=0)
            name = f"STZoo loader, {backend}{default}, first epoch (decode + sample + preprocess + tokenise)"
            paths[name] = lambda path, dataset=first, by_path=by_path: dataset[by_path[str(path)]]
            decoder_of[name] = RAW_ROW[first.reader.name]
    return paths, files, decoder_of


def reader_rows(suite: Path, count: int) -> tuple[str, dict]:
    loaders, files, decoder_of = loader_paths(suite, count)
    paths = {**raw_decoders(), **loaders}
    rates = {name: [] for name in paths}
    for _ in range(7):  # interleaved rounds: their median steadies what this shared machine's noise moves by 5-10%
        for name, read in paths.items():
            rates[name] += throughput(read, files, 1)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    lines = ["| path | videos/s | ms/video | vs raw decord | vs the raw decoder it uses (target >= 0.9 for a loader) |",
             "|---|---|---|---|---|"]
    for name, rate in medians.items():
        own = f"{rate / medians[decoder_of[name]]:.2f} ({decoder_of[name]})" if name in decoder_of else "-"
        lines.append(f"| {name} | {rate:.1f} | {1000 / rate:.2f} | {rate / medians['raw decord']:.2f} | {own} |")
    return "\n".join(lines), medians


def starvation_rows(suite: Path, steps: int = 30) -> str:
    import tempfile

    from zoo.config.recipe import load_recipe
    from zoo.training.trainer import Trainer

    lines = ["| DataLoader workers | step time (s) | waiting for data (s) | share waiting |", "|---|---|---|---|"]
    for workers in (0, 1, 2):
        recipe = load_recipe("recipes/tiny/baseline.yaml", [
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


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=".stzoo/data/action_scene")
    parser.add_argument("--videos", type=int, default=64)
    args = parser.parse_args(argv)
    suite = Path(args.suite)
    if not (suite / "train.json").is_file():
        from zoo.data.action_scene import generate_suite

        generate_suite(suite, seed=0, videos=200)
    readers, _ = reader_rows(suite, args.videos)
    result = readers + "\n\nA training step fed by the loader (tiny baseline, batch 4):\n\n" + starvation_rows(suite)
    print(result)
    return result


if __name__ == "__main__":
    main()
