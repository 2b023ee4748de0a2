"""The package's floors: each imports only floors below it (module-level and function-level
imports alike), siblings on one floor not each other, and no module imports itself back
through a cycle. The floors are those of zoo/__init__.py's docstring."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from tests.helpers import REPO

# Lowest first; the packages on one floor are siblings and never import each other.
FLOORS: list[tuple[str, ...]] = [
    ("components", "zoo.runtime"),
    ("zoo.config",),
    ("zoo.data",),
    ("zoo.model",),
    ("zoo.training", "zoo.evaluation"),
    ("zoo.runs",),
    ("zoo.launch", "zoo.cli", "zoo.lmms"),
    ("ray_jobs",),
]
PACKAGES = ("components", "zoo", "ray_jobs")


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module ``name`` imports, at any depth of its code (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def floor_of(name: str) -> tuple[int, str]:
    for level, packages in enumerate(FLOORS):
        for package in packages:
            if name == package or name.startswith(package + "."):
                return level, package
    return -1, name  # zoo/__init__.py: the floors' table of contents, imports nothing


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_every_module_sits_on_a_floor():
    unplaced = [name for name in module_files() if floor_of(name)[0] < 0 and name != "zoo"]
    assert not unplaced, f"modules outside every floor (add them to a floor package): {unplaced}"


def test_no_import_reaches_up_or_sideways():
    wrong = []
    for name, targets in import_graph().items():
        level, package = floor_of(name)
        for target in sorted(targets):
            target_level, target_package = floor_of(target)
            if target_level > level or (target_level == level and target_package != package):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports from a lower floor to a higher one (or between siblings):\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The walk itself: an import hidden in a function and a relative import are both found."""
    package = tmp_path / "zoo" / "model"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    source = package / "thing.py"
    source.write_text("from . import other\n\ndef f():\n    from zoo.runs.tracking import client\n")
    modules = {"zoo.model.thing": source, "zoo.model.other": source, "zoo.runs.tracking": source}
    assert imports_of("zoo.model.thing", source, modules) == {"zoo.model.other", "zoo.runs.tracking"}
    assert floor_of("zoo.runs.tracking")[0] > floor_of("zoo.model.thing")[0]


def test_no_function_is_over_sixty_lines():
    """Small functions that do one thing (the counter-example: LLaVA's 300-line input preparation)."""
    long = []
    for directory in (*PACKAGES, "benchmarks", "tests"):
        for path in (REPO / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_every_registry_kind_has_components():
    """The registry lists exactly the kinds that have components (no kind waiting for its first one)."""
    from components import registry

    catalogue = registry.catalogue()
    assert set(catalogue) == set(registry.KINDS)
    assert all(catalogue[kind] for kind in registry.KINDS), {kind: len(entries) for kind, entries in catalogue.items()}


def test_every_module_imports():
    """Every module of the package and of the benchmarks imports (make bench has no other test)."""
    failures = []
    for directory in (*PACKAGES, "benchmarks"):
        for path in sorted((REPO / directory).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name.endswith("__main__"):
                continue  # runs the CLI on import
            try:
                importlib.import_module(name)
            except Exception as error:  # every failure is reported, not only the first
                failures.append(f"{name}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)
