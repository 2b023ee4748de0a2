"""Video input: the loader's decode + sample + preprocess against raw decord and PyAV, and starvation.

Throughput in videos per second over the same files, side by side (rounds interleave the
three): raw decord (open + get_batch of the sampled frames), PyAV (decode + pick), and the
STZoo loader's path for a training sample (read_sampled with decord, preprocess to the
encoder's input, tokenize the conversation); target: loader >= 0.9x raw decord. Then a tiny
training run with 0, 1 and 2 DataLoader workers: the share of each step spent waiting for data.

    python -m benchmarks.video_input [--suite .stzoo/data/action_scene]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from zoo.data.reader import open_reader
from zoo.data.sampling import uniform_indices

FRAMES = 8


def throughput(read, files: list[Path], rounds: int = 3) -> list[float]:
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for path in files:
            read(path)
        rates.append(len(files) / (time.perf_counter() - started))
    return rates


def reader_rows(suite: Path, count: int) -> tuple[str, dict]:
    import decord

    from zoo.data.dataset import build_dataset
    from zoo.model.video_llm import build_model
    from zoo.config.recipe import load_recipe

    recipe = load_recipe("recipes/tiny/baseline.yaml", [f"data.train={suite}/train.json", "data.eval={}", "data.synthetic=null"])
    model = build_model(recipe)
    dataset = build_dataset(recipe, model, suite / "train.json", max_samples=count)
    files = [suite / entry["video"] for entry in dataset.entries]
    by_path = {str(suite / entry["video"]): index for index, entry in enumerate(dataset.entries)}

    def raw_decord(path):
        reader = decord.VideoReader(str(path), num_threads=1)
        reader.get_batch(uniform_indices(len(reader), FRAMES)).asnumpy()

    pyav = open_reader("pyav")

    def raw_pyav(path):
        pyav.read_sampled(path, lambda info: uniform_indices(info.frames, FRAMES))

    def loader(path):
        dataset[by_path[str(path)]]

    rates = {"raw decord": [], "PyAV": [], "STZoo loader (decode + sample + preprocess + tokenize)": []}
    for _ in range(3):  # interleaved rounds
        rates["raw decord"] += throughput(raw_decord, files, 1)
        rates["PyAV"] += throughput(raw_pyav, files, 1)
        rates["STZoo loader (decode + sample + preprocess + tokenize)"] += throughput(loader, files, 1)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians["raw decord"]
    lines = ["| path | videos/s | vs raw decord (target >= 0.9 for the loader) |", "|---|---|---|"]
    for name, rate in medians.items():
        lines.append(f"| {name} | {rate:.1f} | {rate / base:.2f} |")
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
