"""`make gpu-check` cannot rot before a GPU is lent: its dry run (the same code on the CPU at tiny sizes) runs
every section and writes a row for each mask, length, strategy and batch layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_the_gpu_check_dry_run_measures_every_row(tmp_path):
    out = tmp_path / "gpu_results.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# GPU check (dry run on the CPU")
    attention = re.findall(r"^\| (frame_block|dst) \| (\d+) \|.*\| (True|False) \|$", text, re.M)
    assert sorted(attention) == sorted((m, n, "True") for m in ("frame_block", "dst") for n in ("256", "512"))
    steps = re.findall(r"^\| tiny \| (zero2|zero3|fsdp2) \| (padded|packed) \| (\d+) \| ([\d.]+) \|", text, re.M)
    assert [(s, b) for s, b, *_ in steps] == [("zero2", "padded"), ("zero3", "padded"), ("fsdp2", "padded"),
                                              ("fsdp2", "packed")]
    assert all(int(tokens) > 0 and float(seconds) > 0 for *_, tokens, seconds in steps)


def test_the_make_target_runs_the_dry_run_with_dry_run_set():
    printed = subprocess.run(["make", "-n", "gpu-check", "DRY_RUN=1"], cwd=REPO, capture_output=True, text=True)
    assert "-m benchmarks.gpu_check --dry-run" in printed.stdout
    printed = subprocess.run(["make", "-n", "gpu-check"], cwd=REPO, capture_output=True, text=True)
    assert "-m benchmarks.gpu_check" in printed.stdout and "--dry-run" not in printed.stdout
