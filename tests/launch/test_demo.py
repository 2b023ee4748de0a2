"""make demo's set-up that runs before any server starts: the recipes it submits and their run names."""

from __future__ import annotations

from zoo.launch import demo
from zoo.launch.demo import HOME, shell_exports
from zoo.launch.servers import LocalServers


def test_the_demo_finds_its_recipes_and_names_their_runs():
    for name in demo.RECIPES:
        assert (demo.REPO / "recipes" / "tiny" / f"{name}.yaml").is_file(), name
        assert demo.run_name(name).startswith(f"demo.{name}.") and len(demo.run_name(name).split(".")[-1]) == 8


def test_the_demo_says_what_another_shell_needs_to_reach_its_servers():
    servers = LocalServers(home=str(HOME), mlflow_url="http://127.0.0.1:5123", dashboard_url="http://127.0.0.1:8266")
    assert shell_exports(servers).splitlines() == [
        f"export MLFLOW_TRACKING_URI=http://127.0.0.1:5123 STZOO_HOME={HOME}",
        "  ray job submit --address http://127.0.0.1:8266 --working-dir . -- python -m ray_jobs.train RECIPE"]
