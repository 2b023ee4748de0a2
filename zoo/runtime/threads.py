"""How many intra-op threads a process that computes should use: the cores it may use, shared with the
platform's other compute processes on this machine.

Why: torch's default is one thread per core in every process. Two processes doing that on two cores
spin-wait against each other (OpenMP busy-waits between parallel regions): two tiny `stzoo train` runs
side by side here took 53 s for 30 steps instead of 4 s each (benchmarks/thread_policy.py). Each process
that computes (a CLI command, a Ray Train worker, an evaluation task) registers itself in a small
directory of PID files; its share is the usable cores divided by the live registrations, at least one,
and it re-reads the directory every few seconds while it runs, so a run started beside it makes both
shrink and a finished one lets the other grow back.

The user's own setting wins: with STZOO_THREADS (or OMP_NUM_THREADS) in the environment the process
uses that many threads, and registers so that others count it. Inside a Ray worker, where Ray itself writes
OMP_NUM_THREADS as the CPUs it assigned, that value is the ceiling of the share instead.
DataLoader workers need nothing: torch gives each one thread, and the decoders are opened with one.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REGISTRY_ENV = "STZOO_COMPUTE_REGISTRY"  # where the PID files live (default: the temp dir, per user)
REFRESH_SECONDS = 5.0


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by cgroup v2's cpu.max or v1's cfs quota; None when unlimited or unreadable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def registry_directory() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or Path(tempfile.gettempdir()) / f"stzoo-compute-{os.getuid()}")


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): a PID file names a live process
    only if both agree, so a PID reused by an unrelated process is not counted."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def live_registrations(directory: Path) -> int:
    """Registered processes still running; the files of finished ones are removed on the way."""
    live = 0
    for file in directory.glob("*.pid"):
        try:
            pid, start = int(file.stem), file.read_text().strip()
        except (OSError, ValueError):
            continue
        if not start:
            continue  # never written whole (files are moved into place), so not ours to judge
        if process_start(pid) == start:
            live += 1
        else:
            file.unlink(missing_ok=True)
    return live


@dataclass
class ThreadChoice:
    threads: int
    reason: str
    fixed: bool  # the user's own setting: applied as it is, never re-divided


def user_threads(environ) -> int | None:
    for name in ("STZOO_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def choose_threads(cores: int, sharing: int, environ, ceiling: int | None = None) -> ThreadChoice:
    """The share of ``cores`` for one of ``sharing`` compute processes, or the user's setting."""
    fixed = user_threads(environ)
    if fixed is not None and ceiling is None:
        return ThreadChoice(fixed, f"{fixed} set by the user (OMP_NUM_THREADS/STZOO_THREADS)", fixed=True)
    share = max(1, cores // max(1, sharing))
    if ceiling is not None:
        share = min(share, ceiling)
    return ThreadChoice(share, f"{cores} usable cores shared by {sharing} compute processes", fixed=False)


class ThreadPolicy:
    """One compute process's registration and thread share; ``refresh`` adjusts it as others come and go."""

    def __init__(self, ceiling: int | None = None, environ=None):
        self.environ = os.environ if environ is None else environ
        self.ceiling = ceiling
        self.cores = usable_cores()
        self.directory = registry_directory()
        self.file = self.directory / f"{os.getpid()}.pid"
        self.checked = 0.0
        self.choice: ThreadChoice | None = None
        self.before = torch.get_num_threads()  # given back on release (a CLI command run inside a longer process)

    def register(self) -> ThreadChoice:
        start = process_start(os.getpid())
        if start is not None:  # without /proc there is no registry: the process takes the whole machine
            self.directory.mkdir(parents=True, exist_ok=True)
            staged = self.file.with_suffix(".tmp")  # another process never reads a half-written file
            staged.write_text(start)
            os.replace(staged, self.file)
        return self.refresh(force=True)

    def refresh(self, force: bool = False) -> ThreadChoice:
        """Re-read the registry (at most every REFRESH_SECONDS) and set torch's intra-op threads to the share."""
        now = time.monotonic()
        if self.choice is not None and not force and now - self.checked < REFRESH_SECONDS:
            return self.choice
        self.checked = now
        sharing = max(1, live_registrations(self.directory)) if self.directory.is_dir() else 1
        self.choice = choose_threads(self.cores, sharing, self.environ, self.ceiling)
        if torch.get_num_threads() != self.choice.threads:  # torch reads OMP_NUM_THREADS, never STZOO_THREADS
            torch.set_num_threads(self.choice.threads)
        return self.choice

    def release(self) -> None:
        self.file.unlink(missing_ok=True)
        if self.choice is not None:
            torch.set_num_threads(self.before)


_policy: ThreadPolicy | None = None


def apply_thread_policy(ceiling: int | None = None) -> ThreadChoice:
    """Register this process as a compute process (once) and set its threads; see the module's docstring."""
    global _policy
    if _policy is None:
        _policy = ThreadPolicy(ceiling)
        return _policy.register()
    return _policy.refresh(force=True)


def refresh_threads() -> None:
    """Called from long loops (training steps, evaluation batches): cheap, re-reads at most every few seconds."""
    if _policy is not None:
        _policy.refresh()


def release_threads() -> None:
    global _policy
    if _policy is not None:
        _policy.release()
        _policy = None


def ceiling_of(assigned_cpus: float | None, environ=None) -> int:
    """A Ray worker's most threads: the CPUs Ray assigned it, or fewer if the user's environment says so
    (Ray writes OMP_NUM_THREADS as the assigned CPUs unless the user set it)."""
    assigned = max(1, int(assigned_cpus or 1))
    return min(assigned, user_threads(os.environ if environ is None else environ) or assigned)
