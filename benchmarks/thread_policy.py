"""The thread policy against torch's default: `stzoo train` and `stzoo eval` of a tiny recipe, alone and two
side by side (a sweep's children, two users, a run beside the test suite), measured in one run.

"default" gives each process STZOO_THREADS=<usable cores>, which is what torch does without the policy
(one thread per core in every process); "policy" sets nothing, so each process takes its share. Median
step time comes from each run's metrics.jsonl (steps after the first 5); eval time is the command's wall
time.

    python -m benchmarks.thread_policy [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zoo.runtime.threads import REGISTRY_ENV, usable_cores

RECIPE = "recipes/tiny/mash_vlm.yaml"
EVAL_FILE = ".stzoo/data/action_scene/test_open.json"


def environment(mode: str, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "STZOO_THREADS")}
    env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "STZOO_HOME": str(root / "home"),
                REGISTRY_ENV: str(root / "registry"), "HF_HUB_OFFLINE": "1"})
    if mode == "default":
        env["STZOO_THREADS"] = str(usable_cores())
    return env


def run_side_by_side(commands: list[list[str]], env: dict[str, str]) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    for process, command in zip(processes, commands):
        _, error = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {error[-2000:]}")
    return time.perf_counter() - started


def train_commands(root: Path, tag: str, count: int, steps: int) -> list[list[str]]:
    return [[sys.executable, "-m", "zoo.cli", "train", RECIPE, "--set", f"train.max_steps={steps}", "--set",
             "train.save_every=100000", "--set", "data.eval={}", "--output", str(root / f"{tag}-{i}")] for i in range(count)]


def median_step(root: Path, tag: str, count: int) -> float:
    steps = []
    for i in range(count):
        lines = (root / f"{tag}-{i}" / "metrics.jsonl").read_text().splitlines()
        steps += [json.loads(line)["step_seconds"] for line in lines[5:] if "step_seconds" in line]
    return statistics.median(steps)


def measure(root: Path, steps: int) -> list[tuple[str, str, float, float]]:
    """(case, mode, median train step seconds, eval seconds) for one and two processes, default and policy."""
    rows = []
    model = None
    for count in (1, 2):
        for mode in ("default", "policy"):
            tag = f"{mode}-{count}"
            run_side_by_side(train_commands(root, tag, count, steps), environment(mode, root))
            model = model or root / f"{tag}-0" / "final"
            evals = [[sys.executable, "-m", "zoo.cli", "eval", str(model), "--benchmark", EVAL_FILE, "--max-samples", "24",
                      "--out", str(root / f"eval-{tag}-{i}")] for i in range(count)]
            seconds = run_side_by_side(evals, environment(mode, root))
            case = "2 processes side by side" if count > 1 else "1 process alone"
            rows.append((case, mode, median_step(root, tag, count), seconds))
    return rows


def table(rows) -> str:
    lines = ["| case | threads | train step (median s) | eval, 24 samples (s) |", "|---|---|---:|---:|"]
    lines += [f"| {case} | {mode} | {step:.3f} | {seconds:.1f} |" for case, mode, step, seconds in rows]
    by = {(case, mode): (step, seconds) for case, mode, step, seconds in rows}
    for case in dict.fromkeys(case for case, _, _, _ in rows):
        (d_step, d_eval), (p_step, p_eval) = by[(case, "default")], by[(case, "policy")]
        lines.append(f"\n{case}: policy is {d_step / p_step:.2f}x faster a training step, {d_eval / p_eval:.2f}x "
                     "faster an evaluation than the default")
    return "\n".join(lines) + f"\n\n{usable_cores()} usable cores; `default` = one thread per core in every process."


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stzoo-threads-") as directory:
        text = table(measure(Path(directory), args.steps))
    print(text)
    return text


if __name__ == "__main__":
    main()
