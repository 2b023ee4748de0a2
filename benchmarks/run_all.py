"""Every CPU benchmark in one run; prints the ratios and writes benchmarks/results.md with the
machine and the command. `make bench` runs it.

    python -m benchmarks.run_all
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

from benchmarks import attention_masks, overhead, packing, scaling, thread_policy, video_input

RESULTS = Path(__file__).resolve().parent / "results.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} x {model}, {memory:.0f} GiB RAM, GPU: {gpu}; torch {torch.__version__}; "
            f"commit {commit}; {datetime.date.today().isoformat()}")


def main() -> None:
    sections = [
        ("Structured attention (target 1)", attention_masks.main([])),
        ("Platform overhead (target 2)", overhead.main()),
        ("Video input (target 3)", video_input.main([])),
        ("Scaling with frames (target 4)", scaling.main([])),
        ("Thread policy vs one thread per core in every process", thread_policy.main([])),
        ("Packing vs padding on mixed-length batches", packing.main([])),
    ]
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "STZOO_THREADS") if k in os.environ}
    setting = "".join(f"{k}={v} " for k, v in threads.items())  # the thread-policy rows set their own
    text = [f"# STZoo benchmarks\n\nMachine: {machine()}\n\nCommand: `{setting}make bench` (`python -m benchmarks.run_all`)\n"]
    for title, body in sections:
        text.append(f"## {title}\n\n{body}\n")
    RESULTS.write_text("\n".join(text))
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
