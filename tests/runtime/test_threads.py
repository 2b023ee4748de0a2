"""The thread policy: each compute process takes its share of the usable cores, the user's setting wins.

Real processes register in a real registry directory; the share is checked against hand-computed cases."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

import zoo.runtime.threads as threads
from tests.helpers import tiny_recipe
from zoo.cli import main as cli_main

SIBLING = "import time, zoo.runtime.threads as t; print(t.apply_thread_policy().threads, flush=True); time.sleep(60)"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv(threads.REGISTRY_ENV, str(tmp_path / "registry"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("STZOO_THREADS", raising=False)
    before = torch.get_num_threads()
    yield tmp_path / "registry"
    threads.release_threads()
    torch.set_num_threads(before)


@pytest.fixture
def sibling(registry):
    """Another compute process, registered and running, as a second `stzoo train` would be."""
    process = subprocess.Popen([sys.executable, "-c", SIBLING], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
    first_line = process.stdout.readline()
    yield process, int(first_line)
    process.kill()
    process.wait()


@pytest.mark.parametrize("cores,sharing,expected", [(2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 3, 5), (16, 4, 4), (1, 1, 1)])
def test_the_share_is_the_usable_cores_divided_by_the_compute_processes(cores, sharing, expected):
    choice = threads.choose_threads(cores, sharing, environ={})
    assert (choice.threads, choice.fixed) == (expected, False)
    assert f"{cores} usable cores shared by {sharing} compute processes" == choice.reason


def test_the_users_setting_wins_and_a_ray_assignment_is_a_ceiling():
    assert threads.choose_threads(16, 4, {"OMP_NUM_THREADS": "3"}) == threads.ThreadChoice(
        3, "3 set by the user (OMP_NUM_THREADS/STZOO_THREADS)", fixed=True)
    assert threads.choose_threads(16, 1, {"STZOO_THREADS": "6", "OMP_NUM_THREADS": "2"}).threads == 6
    assert threads.choose_threads(16, 1, {"OMP_NUM_THREADS": "garbage"}).threads == 16  # not a count: ignored
    # In a Ray worker the assigned CPUs cap the share; the share still shrinks when others run beside it.
    assert threads.choose_threads(16, 1, {"OMP_NUM_THREADS": "4"}, ceiling=4).threads == 4
    assert threads.choose_threads(16, 8, {"OMP_NUM_THREADS": "4"}, ceiling=4).threads == 2


def test_cgroup_quotas_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert threads.cgroup_quota(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert threads.cgroup_quota(tmp_path) is None


def test_a_process_started_beside_another_shares_and_takes_the_cores_back_when_it_ends(sibling, registry):
    process, sibling_threads = sibling
    cores = threads.usable_cores()
    assert sibling_threads == cores  # alone when it started
    choice = threads.apply_thread_policy()
    assert choice.threads == torch.get_num_threads() == max(1, cores // 2)
    assert sorted(p.name for p in registry.iterdir()) == sorted([f"{process.pid}.pid", f"{os.getpid()}.pid"])
    process.kill()
    process.wait()
    assert threads.apply_thread_policy().threads == torch.get_num_threads() == cores
    assert [p.name for p in registry.iterdir()] == [f"{os.getpid()}.pid"]  # the dead one's file is gone
    threads.release_threads()
    assert not list(registry.iterdir())


def test_a_reused_pid_is_not_counted(registry):
    registry.mkdir(parents=True)
    (registry / f"{os.getppid()}.pid").write_text("1")  # a live PID, but not the process that registered
    (registry / "999999999.pid").write_text("1")  # no such process
    assert threads.live_registrations(registry) == 0 and not list(registry.iterdir())


def test_refresh_rereads_the_registry_at_most_every_few_seconds(registry, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    threads.apply_thread_policy()
    reads = []
    original = threads.live_registrations
    monkeypatch.setattr(threads, "live_registrations", lambda directory: reads.append(1) or original(directory))
    threads.refresh_threads()
    clock[0] += threads.REFRESH_SECONDS - 0.1
    threads.refresh_threads()
    assert reads == []
    clock[0] += 0.2
    threads.refresh_threads()
    assert reads == [1]


def test_a_compute_command_takes_its_share_and_leaves_the_registry(sibling, registry, tmp_path, monkeypatch):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    seen = []
    original = threads.ThreadPolicy.register

    def register(self):
        choice = original(self)
        seen.append((choice.threads, sorted(p.name for p in registry.iterdir())))
        return choice

    monkeypatch.setattr(threads.ThreadPolicy, "register", register)
    torch.set_num_threads(3)
    threads_before = torch.get_num_threads()
    assert cli_main(["build", str(recipe)]) == 0
    process, _ = sibling
    assert seen == [(max(1, threads.usable_cores() // 2), sorted([f"{process.pid}.pid", f"{os.getpid()}.pid"]))]
    assert [p.name for p in registry.iterdir()] == [f"{process.pid}.pid"]  # released when the command ended
    assert torch.get_num_threads() == threads_before  # and the calling process has its own setting back


@pytest.mark.parametrize("variable", ["STZOO_THREADS", "OMP_NUM_THREADS"])
def test_the_users_setting_is_applied_as_it_is_and_given_back(registry, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    torch.set_num_threads(2)
    choice = threads.apply_thread_policy()
    assert choice.fixed and torch.get_num_threads() == 1  # torch itself never reads STZOO_THREADS
    assert [p.name for p in registry.iterdir()] == [f"{os.getpid()}.pid"]  # still counted by the others
    threads.release_threads()
    assert torch.get_num_threads() == 2


def test_a_ray_workers_ceiling_is_its_assigned_cpus_or_the_users_fewer():
    assert threads.ceiling_of(4.0, {}) == 4 and threads.ceiling_of(None, {}) == 1 and threads.ceiling_of(0.5, {}) == 1
    assert threads.ceiling_of(4.0, {"OMP_NUM_THREADS": "2"}) == 2 and threads.ceiling_of(2.0, {"OMP_NUM_THREADS": "8"}) == 2


def test_a_registration_being_written_is_not_removed_by_a_reader(registry):
    registry.mkdir(parents=True)
    (registry / f"{os.getpid()}.pid").write_text("")  # as a non-atomic write would leave it for a moment
    assert threads.live_registrations(registry) == 0 and (registry / f"{os.getpid()}.pid").exists()
