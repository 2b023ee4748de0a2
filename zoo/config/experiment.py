"""Experiment files: a base recipe, named variants (override sets) and seeds.

    name: mash_vlm_table7
    paper: MASH-VLM Table 7 (positional embeddings)
    base: ../recipes/mash_vlm.yaml          # paper scale
    tiny: ../recipes/tiny/mash_vlm.yaml     # CPU scale, same mechanisms
    seeds: [0, 1, 2]
    columns: [binary.avg, multiple_choice.accuracy]
    set: {model.mask.name: dst}              # applied to every variant
    variants:
      distinct_only: {set: {model.position.ids: distinct_only}, paper: {UNSCENE Binary: 45.36, MVBench: 55.51}}

``expectations:`` state, before any run, what the comparison must show (``{variant: V, column: C, expect:
above|below, than: W}`` or ``expect: chance|above_chance``); `stzoo compare` reports each as held or not.
``reference:`` names the variant `stzoo compare` measures every other one against (default: the first).
A variant may name ``evaluate_from: OTHER``: it is not trained, OTHER's model is
evaluated under this variant's overrides (inference-time ablations, MASH-VLM Table 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from zoo.config.recipe import Recipe, _load_chain, apply_overrides, recipe_from_dict
from components.config import RecipeError, Sources, load_yaml, validate


@dataclass
class Variant:
    set: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # this variant's own recipes (comparing architectures), else the experiment's
    tiny: str | None = None
    description: str = ""
    evaluate_from: str | None = None
    paper: dict[str, float | None] = field(default_factory=dict)  # the paper's numbers for this row (None: not reported)


@dataclass
class Expectation:
    """What a comparison must show, written before the runs: ``variant``'s ``column`` lies ``above`` or ``below``
    the variant ``than`` (the 95% interval of the paired difference excludes 0 that way), at ``chance`` (its
    interval lies within the column's chance level +- ``margin``) or ``above_chance`` (its interval lies above it)."""

    variant: str
    column: str
    expect: Literal["above", "below", "chance", "above_chance"]
    than: str | None = None
    why: str = ""
    margin: float = 5.0  # chance: the whole interval within chance +- margin points (a wide interval is no evidence)


@dataclass
class Experiment:
    name: str
    variants: dict[str, Variant]
    base: str | None = None
    tiny: str | None = None
    description: str = ""
    paper: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    columns: list[str] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None  # the variant `stzoo compare` measures differences from (default: the first)
    expectations: list[Expectation] = field(default_factory=list)
    source: str | None = None

    def recipe_path(self, scale: str = "paper", variant: str | None = None) -> Path:
        own = self.variants[variant] if variant else None
        chosen = (own.tiny or self.tiny) if scale == "tiny" and own else (own.base or self.base) if own else (
            self.tiny if scale == "tiny" else self.base)
        if chosen is None:
            raise RecipeError(f"{self.source}: no {scale} recipe (set '{'tiny' if scale == 'tiny' else 'base'}:')")
        return (Path(self.source).parent / chosen).resolve()

    def recipe(self, variant: str, seed: int | None = None, scale: str = "paper", extra: list[str] | None = None) -> Recipe:
        """The resolved recipe of one variant (and seed)."""
        if variant not in self.variants:
            raise RecipeError(f"{self.source}: no variant {variant!r}; variants: {', '.join(self.variants)}")
        path = self.recipe_path(scale, variant)
        sources = Sources(default=str(path))
        data = _load_chain(path, sources)
        data = apply_overrides(data, self.set, sources, source=f"{self.source} (set)")
        data = apply_overrides(data, self.variants[variant].set, sources, source=f"{self.source} (variant {variant})")
        if seed is not None:
            data = apply_overrides(data, {"train.seed": seed}, sources, source=f"{self.source} (seed)")
        data = apply_overrides(data, list(extra or []), sources)
        data["name"] = f"{self.name}.{variant}"
        return recipe_from_dict(data, sources, source=str(path))


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: experiment file not found")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    experiment = validate(Experiment, data, "", Sources(default=str(path)))
    experiment.source = str(path)
    if experiment.reference is not None and experiment.reference not in experiment.variants:
        raise RecipeError(f"{path}: reference: no variant {experiment.reference!r}; variants: {', '.join(experiment.variants)}")
    check_expectations(experiment, path)
    for name, variant in experiment.variants.items():
        if variant.evaluate_from is not None and variant.evaluate_from not in experiment.variants:
            raise RecipeError(f"{path}: variants.{name}.evaluate_from: no variant {variant.evaluate_from!r}")
    return experiment


def check_expectations(experiment: Experiment, path: Path) -> None:
    for index, expectation in enumerate(experiment.expectations):
        where = f"{path}: expectations[{index}]"
        for name in (expectation.variant, expectation.than):
            if name is not None and name not in experiment.variants:
                raise RecipeError(f"{where}: no variant {name!r}; variants: {', '.join(experiment.variants)}")
        if (expectation.expect in ("above", "below")) != (expectation.than is not None):
            raise RecipeError(f"{where}: 'expect: {expectation.expect}' " + ("needs 'than: VARIANT'" if expectation.than is None
                                                                     else "takes no 'than:' (it compares with chance)"))
        if experiment.columns and expectation.column not in experiment.columns:
            raise RecipeError(f"{where}: column {expectation.column!r} is not among the experiment's columns")
