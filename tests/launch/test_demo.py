"""make demo's set-up that runs before any server starts: the recipes it submits and their run names."""

from __future__ import annotations

from zoo.launch import demo


def test_the_demo_finds_its_recipes_and_names_their_runs():
    for name in demo.RECIPES:
        assert (demo.REPO / "recipes" / "tiny" / f"{name}.yaml").is_file(), name
        assert demo.run_name(name).startswith(f"demo.{name}.") and len(demo.run_name(name).split(".")[-1]) == 8
