"""The embedded default: a local Ray head and an MLflow server, bound to 127.0.0.1 only.

Ray rewrites a loopback --node-ip-address to the machine's address unless clustering is
off; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (what Ray itself does on laptops) keeps every
Ray process on 127.0.0.1. Servers run in their own process groups; their PIDs are kept in
a state file so that ``make down`` (or a test) stops exactly them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
import hashlib
import tempfile
import psutil

LOOPBACK = "127.0.0.1"


@dataclass
class LocalServers:
    home: str  # where state, logs and the MLflow store live
    mlflow_pid: int | None = None
    mlflow_url: str | None = None
    ray_address: str | None = None  # the GCS address, host:port
    dashboard_url: str | None = None  # for `ray job submit --address`
    ray_pids: list[int] | None = None  # the head's processes (workers are their descendants)

    @property
    def state_file(self) -> Path:
        return Path(self.home) / "servers.json"

    def save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, home: str | Path) -> "LocalServers | None":
        path = Path(home) / "servers.json"
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def http_answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` at all (an error status is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def venv_environment(extra: dict | None = None) -> dict:
    """The environment servers and jobs run in: this interpreter's bin first on PATH (so `python` is it)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.update(extra or {})
    return env


def start_mlflow(servers: LocalServers, port: int | None = None) -> None:
    home = Path(servers.home) / "mlflow"
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(home / "server.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", LOOPBACK, "--port", str(port),
         "--backend-store-uri", f"sqlite:///{(home / 'mlflow.db').resolve()}",
         "--artifacts-destination", str((home / "artifacts").resolve()), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=venv_environment(),
    )
    servers.mlflow_pid = process.pid
    servers.mlflow_url = f"http://{LOOPBACK}:{port}"
    servers.save()
    wait_until(lambda: http_ok(f"{servers.mlflow_url}/health") or process.poll() is not None, 90, "the MLflow server")
    if process.poll() is not None:
        raise RuntimeError(f"the MLflow server exited at start; see {home / 'server.log'}")


def start_ray(servers: LocalServers, num_cpus: int | None = None, env: dict | None = None) -> None:
    """`ray start --head` on 127.0.0.1; jobs inherit ``env`` (tracking URI, data root).

    Every port the head opens is picked free (Ray's defaults are fixed numbers, so a second head on the
    machine, such as another test worker's, would collide), and the head counts as up once its job agent
    answers: a job submitted before then is refused with "No available agent to submit job"."""
    gcs_port, dashboard_port, client_port, agent_port = free_port(), free_port(), free_port(), free_port()
    temp_dir = ray_temp_dir(servers)
    temp_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", f"--node-ip-address={LOOPBACK}",
        f"--port={gcs_port}", f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}",
        f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}", "--disable-usage-stats", f"--temp-dir={temp_dir.resolve()}",
    ]
    if num_cpus:
        command.append(f"--num-cpus={num_cpus}")
    result = subprocess.run(command, env=venv_environment(env), capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"ray start failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.stdout[-300:]}")
    servers.ray_address = f"{LOOPBACK}:{gcs_port}"
    servers.dashboard_url = f"http://{LOOPBACK}:{dashboard_port}"
    servers.ray_pids = sorted(head_processes(servers))
    servers.save()
    wait_until(lambda: http_ok(f"{servers.dashboard_url}/api/version"), 90, "the Ray dashboard")
    wait_until(lambda: http_answers(f"http://{LOOPBACK}:{agent_port}/api/job_agent/jobs/none/logs"), 90,
               "the Ray job agent")


def ray_temp_dir(servers: LocalServers) -> Path:
    """A short path of its own: Ray puts Unix sockets under it, and those paths may not exceed 107 bytes."""
    digest = hashlib.sha1(str(Path(servers.home).resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"stzoo-ray-{digest}"


def processes_using(*markers: str) -> set[int]:
    """PIDs of the processes whose command line names one of ``markers``: this head's temp dir
    (gcs_server, raylet, dashboard...) or its GCS address (the Ray client server, which outlives
    its parent and is reparented to init)."""
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        parts = process.info.get("cmdline") or []
        if any(marker in part for part in parts for marker in markers):
            found.add(process.info["pid"])
    return found


def head_processes(servers: LocalServers) -> set[int]:
    """This head's processes found by what their command lines name: its temp dir or its GCS address."""
    return processes_using(str(ray_temp_dir(servers).resolve()), f"--address={servers.ray_address}")


def ray_tree(servers: LocalServers) -> set[int]:
    """The head's processes and all their descendants (workers, actors, job drivers) that are alive."""
    pids = set()
    for pid in servers.ray_pids or []:
        try:
            process = psutil.Process(pid)
            pids |= {pid} | {child.pid for child in process.children(recursive=True)}
        except psutil.NoSuchProcess:
            continue
    return pids


def stop_ray(servers: LocalServers, timeout: float = 5) -> None:
    """Stop this head by PID (not `ray stop`, which would stop every Ray cluster on the machine).

    SIGKILL after ``timeout``: measured here, the GCS server or the raylet sometimes sits on SIGTERM for over
    25 s (each waiting on the other), and a local head keeps nothing in memory worth that wait."""
    if servers.ray_address is None:
        return
    processes = []
    for pid in ray_tree(servers) | head_processes(servers):
        try:
            processes.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    servers.ray_address = servers.dashboard_url = servers.ray_pids = None
    servers.save()


def stop_mlflow(servers: LocalServers) -> None:
    if servers.mlflow_pid is None:
        return
    kill_group(servers.mlflow_pid)
    servers.mlflow_pid = servers.mlflow_url = None
    servers.save()


def kill_group(pid: int, timeout: float = 15) -> None:
    """SIGTERM the process group led by ``pid`` (a server and its workers), SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not living_members(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def living_members(group: int) -> list[int]:
    """The group's processes that still run. A zombie stays in its group until its parent reaps it, so
    ``killpg(group, 0)`` would call the group alive for as long as the caller (the leader's parent) waits;
    this reaps the leader when it is the caller's child."""
    try:
        os.waitpid(group, os.WNOHANG)
    except ChildProcessError:
        pass
    living = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.info["pid"]) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                living.append(process.info["pid"])
        except (ProcessLookupError, psutil.Error):
            continue
    return living


def listening_sockets(pids: set[int] | None = None) -> list[tuple[str, int, int | None, str]]:
    """(address, port, pid, process name) of every listening TCP socket (of ``pids`` and their children, if given)."""
    wanted: set[int] | None = None
    if pids is not None:
        wanted = set()
        for pid in pids:
            try:
                process = psutil.Process(pid)
                wanted |= {pid} | {child.pid for child in process.children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
    found = []
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status != psutil.CONN_LISTEN:
            continue
        if wanted is not None and connection.pid not in wanted:
            continue
        try:
            name = psutil.Process(connection.pid).name() if connection.pid else "?"
        except psutil.NoSuchProcess:
            name = "?"
        found.append((connection.laddr.ip, connection.laddr.port, connection.pid, name))
    return found


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")


def exposed_sockets(servers: LocalServers) -> list[tuple[str, int, int | None, str]]:
    """Listening sockets of our servers that are not on loopback (should be none)."""
    pids = ray_tree(servers)
    if servers.mlflow_pid:
        pids.add(servers.mlflow_pid)
    return [s for s in listening_sockets(pids) if not is_loopback(s[0])]
