"""`make demo`: the platform's main path on this machine, end to end.

1. A Ray head and an MLflow server, both on 127.0.0.1 only (checked), state under .stzoo/.
2. The synthetic action-scene suite, if it is not there yet.
3. The tiny baseline, MASH-VLM, ST-LLM and LLaVA-ST recipes, each submitted with
   `ray job submit` and tracked in MLflow (experiment "stzoo-demo").
4. A comparison table from MLflow, the UI's address; the servers keep running.

`make down` (python -m zoo.launch.demo --down) stops the servers by PID.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import zoo.launch.servers as local
from zoo.runs.run_table import run_table
from zoo.runs.tables import Column, top_level_runs
from zoo.runs.tracking import ui_link
from zoo.data.dataset import ensure_synthetic_suite
from zoo.config.recipe import load_recipe
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]  # zoo/launch/demo.py -> the repository
HOME = REPO / ".stzoo"
EXPERIMENT = "stzoo-demo"
RECIPES = ["baseline", "mash_vlm", "st_llm", "llava_st"]
COLUMNS = [
    Column("unscene.binary.scene_only.action", "UNSCENE scene-only action"),
    Column("unscene.binary.unusual.action", "unusual action"),
    Column("unscene.binary.unusual.scene", "unusual scene"),
    Column("unscene.binary.avg", "binary avg"),
    Column("open.open_ended.usual.action", "open: usual action (0-5)"),
    Column("open.open_ended.unusual.action", "open: unusual action"),
    Column("open.open_ended.scene_only.action", "open: scene-only action"),
    Column("mc.multiple_choice.accuracy", "multiple choice"),
]


def say(text: str) -> None:
    print(text, flush=True)


def servers_up() -> local.LocalServers:
    existing = local.LocalServers.load(HOME)
    if existing and existing.mlflow_url and local.http_ok(f"{existing.mlflow_url}/health") and existing.dashboard_url \
            and local.http_ok(f"{existing.dashboard_url}/api/version"):
        say(f"servers already running: MLflow {existing.mlflow_url}, Ray {existing.dashboard_url}")
        return existing
    servers = local.LocalServers(home=str(HOME))
    say("starting the MLflow server on 127.0.0.1 ...")
    local.start_mlflow(servers)
    say("starting a Ray head on 127.0.0.1 ...")
    local.start_ray(servers, env={"MLFLOW_TRACKING_URI": servers.mlflow_url, "STZOO_DATA_ROOT": str(REPO),
                                  "STZOO_HOME": str(HOME), "HF_HUB_OFFLINE": "1"})
    return servers


def check_loopback(servers: local.LocalServers) -> None:
    listening = local.listening_sockets(local.ray_tree(servers) | {servers.mlflow_pid})
    exposed = [s for s in listening if not local.is_loopback(s[0])]
    say(f"{len(listening)} listening sockets of ours, all on loopback: {not exposed}")
    if exposed:
        raise SystemExit(f"refusing to go on: these listen beyond loopback: {exposed}")


def prepare_data() -> None:
    os.environ["STZOO_DATA_ROOT"] = str(REPO)
    started = time.time()
    ensure_synthetic_suite(load_recipe(REPO / "recipes" / "tiny" / "baseline.yaml"))
    say(f"synthetic action-scene suite ready in .stzoo/data/action_scene ({time.time() - started:.0f}s)")


def run_name(name: str) -> str:
    """demo.<recipe>.<fingerprint>: an unchanged recipe resumes its finished run, an edited one starts anew."""
    return f"demo.{name}.{load_recipe(REPO / 'recipes' / 'tiny' / f'{name}.yaml').fingerprint()}"


def submit(servers: local.LocalServers, name: str) -> bool:
    recipe = f"recipes/tiny/{name}.yaml"
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", servers.dashboard_url,
               "--working-dir", str(REPO), "--", "python", "-m", "ray_jobs.train", recipe,
               "--set", f"tracking.experiment={EXPERIMENT}", "--set", "train.log_every=50", "--run-name", run_name(name)]
    say(f"\n$ ray job submit --working-dir . -- python -m ray_jobs.train {recipe} ...")
    started = time.time()
    process = subprocess.Popen(command, cwd=REPO, env=local.venv_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "] step " in line or "MLflow run" in line or "resuming" in line or "succeeded" in line or "failed" in line.lower():
            say("  " + line.rstrip().split("\x1b[0m ")[-1])
    ok = process.wait() == 0
    say(f"  {name}: {'done' if ok else 'FAILED'} in {time.time() - started:.0f}s")
    return ok


def comparison(servers: local.LocalServers) -> str:
    client = MlflowClient(servers.mlflow_url)
    latest: dict[str, object] = {}
    for run in top_level_runs(client, EXPERIMENT):
        latest[run.data.tags.get("stzoo.run_name", run.info.run_name)] = run
    rows = [(name, latest[run_name(name)]) for name in RECIPES if run_name(name) in latest]
    return run_table(servers.mlflow_url, rows, COLUMNS, first="recipe (tiny)")


def experiment_link(servers: local.LocalServers) -> str:
    """The demo experiment's runs table in the MLflow UI (its link says model training, not GenAI)."""
    found = MlflowClient(servers.mlflow_url).get_experiment_by_name(EXPERIMENT)
    if found is None:
        return f"{servers.mlflow_url}/#/experiments?workflowType=machine_learning"
    return ui_link(servers.mlflow_url, found.experiment_id)


def shell_exports(servers: local.LocalServers) -> str:
    """What another shell needs to reach these servers: without it, runs:/ID and stzoo compare look in a
    local MLflow store of their own. (RAY_ADDRESS is left to `ray job submit --address`: an http:// address
    in the environment would also be read by ray.init, which wants the cluster's own address.)"""
    return (f"export MLFLOW_TRACKING_URI={servers.mlflow_url} STZOO_HOME={HOME}\n"
            f"  ray job submit --address {servers.dashboard_url} --working-dir . -- python -m ray_jobs.train RECIPE")


def run() -> int:
    started = time.time()
    servers = servers_up()
    check_loopback(servers)
    prepare_data()
    results = {name: submit(servers, name) for name in RECIPES}
    say("\nComparison on the synthetic action-scene suite (UNSCENE columns in %, dual validation; one seed each, so the\n"
        "brackets are 95% intervals over the test items only: rows whose intervals overlap are not told apart):\n")
    say(comparison(servers))
    say(f"\nMLflow UI: {experiment_link(servers)}  (experiment '{EXPERIMENT}'; compare: tick runs, press Compare)")
    say(f"Ray dashboard: {servers.dashboard_url}")
    say(f"To use these runs from another shell (stzoo eval runs:/ID, stzoo compare, ray job submit):\n  {shell_exports(servers)}")
    say(f"All of it took {(time.time() - started) / 60:.1f} min; the servers keep running. Stop them with: make down")
    return 0 if all(results.values()) else 1


def down() -> int:
    servers = local.LocalServers.load(HOME)
    if servers is None:
        say("no servers recorded in .stzoo/servers.json")
        return 0
    local.stop_ray(servers)
    local.stop_mlflow(servers)
    say("Ray head and MLflow server stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.launch.demo", description="the embedded default: Ray + MLflow on loopback")
    parser.add_argument("--down", action="store_true", help="stop the servers started by the demo")
    args = parser.parse_args(argv)
    return down() if args.down else run()


if __name__ == "__main__":
    sys.exit(main())
