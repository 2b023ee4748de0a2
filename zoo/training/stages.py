"""Progressive training: stages that each start from the previous stage's weights.

A stage is the recipe with its own overrides (data, learning rate, tuning, LAPE on or off)
and a list of parameter-name globs that train; every other parameter is frozen. The hand-off
between stages is the previous stage's weights with any LoRA merged into the base, so a
stage that tunes with LoRA always starts with fresh adapters (LLaVA-ST stage 3: "merge the
stage-2 LoRA and add a new one").
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_model, save_model

from zoo.model.checkpoint import init_from_record
from zoo.model.video_llm import VideoLLM, build_model
from zoo.config.recipe import Recipe, StageSpec, apply_overrides, recipe_from_dict
from components.config import RecipeError, Sources

HANDOFF = "handoff.safetensors"
INIT_FROM_RECORD = "init_from.json"  # beside the hand-off: where the first stage's weights came from


def stage_recipe(recipe: Recipe, stage: StageSpec) -> Recipe:
    data = recipe.to_dict()
    data["train"]["stages"] = []
    sources = Sources(default=f"{recipe.source} (stage {stage.name})")
    data = apply_overrides(data, stage.set, sources, source=f"{recipe.source}: train.stages[{stage.name}].set")
    data["name"] = f"{recipe.name}.{stage.name}"
    return recipe_from_dict(data, sources, source=recipe.source)


def apply_trainable(model: VideoLLM, patterns: list[str], stage: str) -> list[str]:
    """Freeze everything, then unfreeze the parameters matching ``patterns``; returns the trained names."""
    if not patterns:
        return [n for n, p in model.named_parameters() if p.requires_grad]
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise RecipeError(f"train.stages[{stage}].trainable: {pattern!r} matches no parameter of the model "
                              f"(names look like {names[0]!r}, {names[-1]!r})")
    trained = []
    for name, param in model.named_parameters():
        param.requires_grad_(any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns))
        if param.requires_grad:
            trained.append(name)
    return trained


def build_stage_model(recipe: Recipe, stage: StageSpec, handoff: Path | None, run_fingerprint: str | None = None) -> VideoLLM:
    """The stage's model: built without LoRA, the previous stage's weights loaded, then the stage's tuning and trainable set.
    ``run_fingerprint``: the staged recipe's own, which its checkpoints and evaluations name (its run is named by it)."""
    tuning = recipe.model.llm.options.tuning
    structure = recipe_from_dict(apply_overrides(recipe.to_dict(), {"model.llm.tuning": "full"}, Sources()), source=recipe.source)
    model = build_model(structure, load_pretrained=handoff is None)
    if handoff is not None:
        missing, unexpected = load_model(model, str(handoff), strict=False)
        if missing or unexpected:
            raise RecipeError(f"stage {stage.name}: the previous stage's weights do not fit this stage's model "
                              f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[:2]}); "
                              "stages may change options, not the architecture")
        record = handoff.parent / INIT_FROM_RECORD
        if record.is_file():
            model.inherited_init_from = json.loads(record.read_text())
    model.recipe = recipe
    model.recipe_fingerprint = run_fingerprint or recipe.fingerprint()
    model.llm.apply_tuning(tuning)
    apply_trainable(model, stage.trainable, stage.name)
    return model


def write_handoff(model: VideoLLM, directory: Path) -> Path:
    record = init_from_record(model)  # before the merge: the table names the stage's own tensors
    model.llm.merge_lora()
    directory.mkdir(parents=True, exist_ok=True)
    if record is not None:
        (directory / INIT_FROM_RECORD).write_text(json.dumps(record, indent=2))
    save_model(model, str(directory / HANDOFF))
    return directory / HANDOFF


@dataclass
class Stage:
    """One training stage as a launcher runs it: a recipe without stages of its own, and what it trains."""

    recipe: Recipe  # the recipe with this stage's overrides applied
    spec: StageSpec | None = None  # None: the recipe has no stages and trains as it is
    run_fingerprint: str | None = None  # the staged recipe's fingerprint (the run's), kept by the stage's model

    @property
    def name(self) -> str | None:
        return self.spec.name if self.spec else None

    def build_model(self, handoff: Path | None) -> VideoLLM | None:
        """The model this stage starts from; None for an unstaged recipe (the trainer builds it)."""
        return None if self.spec is None else build_stage_model(self.recipe, self.spec, handoff, self.run_fingerprint)


def plan_stages(recipe: Recipe) -> list[Stage]:
    """The stages every launcher runs in order: the recipe's own, or the recipe itself as the only one."""
    if not recipe.train.stages:
        return [Stage(recipe)]
    return [Stage(stage_recipe(recipe, spec), spec, recipe.fingerprint()) for spec in recipe.train.stages]
