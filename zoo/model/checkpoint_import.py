"""Weights from official checkpoints of other code bases, mapped onto an STZoo model.

The mapping of each tensor is declared by the component it loads into (``foreign_keys`` on the
component class, components.weights.ForeignKeys): the BLIP-2 encoder knows LAVIS's EVA and
Q-Former names, the linear projector ``llama_proj``, the LLM ``llama_model.*``. This module only
recognises which release layout a file has and offers its tensors to the model's components in
turn (the LLM last: LLaVA's ``model.*`` also holds the tower and projector). Every tensor is
accounted for in the report: loaded, skipped on purpose, or unexpected; every model tensor the
files did not cover is listed as missing, per top-level module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import torch

from components.weights import CheckpointError, local_directory, read_state_dict
from zoo.model.lora_release import LoraRelease, is_lora_release, read_lora_release

# The model's components in the order they are offered a foreign file's tensors.
COMPONENT_ORDER = ("encoder", "projector", "compressor", "position", "llm")


@dataclass
class ImportReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # in the file, with no place in the model
    missing: dict[str, int] = field(default_factory=dict)  # per top-level module: model tensors no file covered
    missing_keys: list[str] = field(default_factory=list)  # ... and their names
    unmatched: list[str] = field(default_factory=list)  # foreign tensors no component's key map claims
    shape_mismatches: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # model weights a LoRA adapter's B @ A was added to
    lora_factors: int = 0  # the lora_A / lora_B tensors those deltas came from

    def add(self, other: "ImportReport") -> None:
        self.loaded += other.loaded
        self.skipped += other.skipped
        self.unexpected += other.unexpected

    def summary(self) -> str:
        missing = ", ".join(f"{module} {count}" for module, count in self.missing.items()) or "none"
        return (f"{len(self.loaded)} tensors loaded, {len(self.skipped)} skipped on purpose, "
                f"{len(self.unexpected)} unexpected, {len(self.merged)} merged with LoRA deltas, not covered by the files: {missing}")


def release_layout(keys) -> str | None:
    """The foreign layout of a file's tensor names (``lavis``, ``llava``, ``st_llm``), or None for STZoo's own names."""
    if any(k.startswith("model.stllm_model.") for k in keys):
        return "st_llm"
    if any(k.startswith("model.mm_projector.") for k in keys):
        return "llava"
    if any(k.startswith(("visual_encoder.", "Qformer.", "query_tokens", "ln_vision.", "llama_model.", "llm_proj.", "llama_proj."))
           for k in keys):
        return "lavis"
    return None


def st_llm_as_lavis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ST-LLM's release (STLLMForCausalLM through HF save_pretrained) holds LAVIS's modules under
    model.stllm_model.* and the LLaMA decoder at the top (model.layers, model.embed_tokens, model.norm, lm_head):
    the same tensors as a LAVIS file, renamed, so the components' LAVIS key maps read it."""
    renamed = {}
    for key, tensor in state.items():
        if key.startswith("model.stllm_model."):
            renamed[key[len("model.stllm_model."):]] = tensor
        elif key.startswith(("model.", "lm_head.")):
            renamed[f"llama_model.{key}"] = tensor
        else:
            renamed[key] = tensor
    return renamed


def eva_only_layout(keys) -> bool:
    """LAVIS ships EVA ViT-g as its own file whose keys lack the visual_encoder. prefix."""
    return all(k.startswith(("blocks.", "patch_embed.", "cls_token", "pos_embed", "norm.", "head.", "rope")) for k in keys)


def map_foreign_keys(model, state: dict[str, torch.Tensor], layout: str) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """The file's tensors under the model's names, each component mapping what it declares for ``layout``."""
    report = ImportReport()
    model_keys = set(model.state_dict())
    remaining = dict(state)
    mapped: dict[str, torch.Tensor] = {}
    for attribute in COMPONENT_ORDER:
        adapter = getattr(type(getattr(model, attribute)), "foreign_keys", {}).get(layout)
        if adapter is None:
            continue
        prefix = attribute + "."
        own_keys = {k[len(prefix):] for k in model_keys if k.startswith(prefix)}
        converted, consumed, skipped = adapter.apply(remaining, own_keys)
        report.skipped += skipped
        for name, tensor in converted.items():
            if name in own_keys:
                mapped[prefix + name] = tensor
            else:
                report.unexpected.append(f"{prefix}{name} (mapped by {attribute}, not in the model)")
        remaining = {k: v for k, v in remaining.items() if k not in consumed}
    report.unmatched = sorted(remaining)
    report.unexpected += report.unmatched
    return mapped, report


def refuse_unbuilt_modules(path, report: ImportReport) -> None:
    """Tensors no component claims are modules the recipe does not build (ST-LLM's QA release adds BT-Adapter
    temporal modules to its EVA tower): loading the rest would give a different model than the release's."""
    if not report.unmatched:
        return
    modules = sorted({re.sub(r"\.\d+(?=\.|$)", ".*", key.rsplit(".", 1)[0]) for key in report.unmatched})
    raise CheckpointError(f"{path}: {len(report.unmatched)} tensors belong to modules no component of this recipe builds "
                          f"({', '.join(modules[:6])}{', ...' if len(modules) > 6 else ''}; e.g. {report.unmatched[0]}); "
                          "the release is refused rather than half-loaded: use a recipe whose components build them")


def read_release(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """A full checkpoint's tensors and its layout (None: STZoo's own names); ST-LLM's read under LAVIS's names."""
    state = read_state_dict(path, owner="model.init_from")
    if eva_only_layout(state):
        state = {f"visual_encoder.{k}": v for k, v in state.items()}
    layout = release_layout(state)
    if layout == "st_llm":
        return st_llm_as_lavis(state), "lavis"
    return state, layout


def map_release(model, path, state: dict[str, torch.Tensor], layout: str | None) -> tuple[dict[str, torch.Tensor], ImportReport]:
    """The file's tensors under the model's names, shapes checked; modules the model does not build refused."""
    model_state = model.state_dict()
    if layout is not None:
        mapped, report = map_foreign_keys(model, state, layout)
        refuse_unbuilt_modules(path, report)
    else:
        mapped = {k: v for k, v in state.items() if k in model_state}
        report = ImportReport(unexpected=[k for k in state if k not in model_state])
    check_shapes(path, mapped, model_state, report)
    report.loaded = sorted(mapped)
    return mapped, report


def merge_lora(model, release: LoraRelease, layout: str) -> list[str]:
    """Add each LoRA delta to its base weight (LLaVA's builder merges the same way); the names merged into."""
    mapped, report = map_foreign_keys(model, release.deltas, layout)
    if report.unexpected:
        raise CheckpointError(f"{release.path}: the LoRA adapter wraps {len(report.unexpected)} modules with no place in "
                              f"this model (e.g. {report.unexpected[0]}); its base model differs from the recipe's")
    model_state = model.state_dict()
    check_shapes(release.path, mapped, model_state, report)
    with torch.no_grad():
        for key, delta in mapped.items():
            model_state[key].copy_((model_state[key].float() + delta).to(model_state[key].dtype))
    return sorted(mapped)


def copy_into(model, mapped: dict[str, torch.Tensor]) -> None:
    model_state = model.state_dict()
    with torch.no_grad():
        for key, tensor in mapped.items():
            model_state[key].copy_(tensor.to(model_state[key].dtype))


def import_checkpoints(model, paths: list[str | Path]) -> ImportReport:
    """Load official-format (LAVIS, ST-LLM, LLaVA) or STZoo-format files into ``model``; one report for all of them.
    LoRA output directories (peft's adapter files) are merged after every full checkpoint, in the order given."""
    patterns = ("*.json", "*.safetensors", "*.bin", "*.pth")
    directories = [local_directory(str(path), "model.init_from", patterns) for path in paths]
    total = ImportReport()
    adapters = [p for p in directories if is_lora_release(p)]
    for path in [p for p in directories if p not in adapters]:
        mapped, report = map_release(model, path, *read_release(path))
        copy_into(model, mapped)
        total.add(report)
    for path in adapters:
        release = read_lora_release(path)
        layout = release_layout(release.trainables) or "llava"  # LLaVA's train.py wrote it: its names unless they say otherwise
        mapped, report = map_release(model, path, release.trainables, layout)
        copy_into(model, mapped)
        total.add(report)
        total.merged += merge_lora(model, release, layout)
        total.lora_factors += release.factors
    covered = set(total.loaded)
    for key in sorted(set(model.state_dict()) - covered):
        module = key.split(".")[0]
        total.missing[module] = total.missing.get(module, 0) + 1
        total.missing_keys.append(key)
    return total


@dataclass
class CoverageRow:
    component: str
    tensors: int
    from_files: int  # loaded from model.init_from
    own_pretrained: int  # not in the files, but the component loaded its own pretrained weights
    allowed_random: int  # named by model.allow_random, or LoRA adapters (new by design)
    random: int  # none of the above: left at their initialisation


def coverage(model, report: ImportReport, allow_random: list[str]) -> list[CoverageRow]:
    """Where each component's tensors came from after an import, one row per top-level module."""
    loaded, missing, names = set(report.loaded), set(report.missing_keys), list(model.state_dict())
    rows = []
    for component in dict.fromkeys(key.split(".")[0] for key in names):
        keys = [k for k in names if k.split(".")[0] == component]
        spec = getattr(model.recipe.model, component, None)
        own = bool(getattr(getattr(spec, "options", None), "pretrained", None))
        absent = [k for k in keys if k in missing]
        allowed = [k for k in absent if "lora_" in k or any(component == p or fnmatch(k, p) for p in allow_random)]
        rest = len(absent) - len(allowed)
        rows.append(CoverageRow(component, len(keys), sum(k in loaded for k in keys), rest if own else 0,
                                len(allowed), 0 if own else rest))
    return rows


def format_coverage(rows: list[CoverageRow]) -> str:
    header = f"{'component':<12} {'tensors':>8} {'from files':>11} {'own weights':>12} {'allowed random':>15} {'random':>7}"
    lines = [header] + [f"{r.component:<12} {r.tensors:>8} {r.from_files:>11} {r.own_pretrained:>12} {r.allowed_random:>15} "
                        f"{r.random:>7}" for r in rows]
    return "\n".join(lines)


def check_coverage(model, report: ImportReport, allow_random: list[str]) -> None:
    """Strict init_from: a parameter left random that nobody allowed is refused, naming components and tensors."""
    names = list(model.state_dict())
    unknown = [p for p in allow_random if not any(k.split(".")[0] == p or fnmatch(k, p) for k in names)]
    if unknown:
        raise CheckpointError(f"model.allow_random: {', '.join(map(repr, unknown))} names no component or parameter of "
                              f"this model (components: {', '.join(dict.fromkeys(k.split('.')[0] for k in names))})")
    rows = [row for row in coverage(model, report, allow_random) if row.random]
    if not rows:
        return
    first = next(k for k in report.missing_keys if k.split(".")[0] == rows[0].component and "lora_" not in k
                 and not any(fnmatch(k, p) for p in allow_random))
    # A file tensor mapped into the same component but matching none of its names is most likely a rename.
    near = [u for u in report.unexpected if u.startswith(tuple(row.component + "." for row in rows))]
    stray = f"; the files hold {len(near)} tensors mapped there with no place in the model, e.g. {near[0]}" if near else ""
    counts = ", ".join(f"{row.component} {row.random}" for row in rows)
    raise CheckpointError(
        f"model.init_from: {sum(r.random for r in rows)} tensors would stay at their random initialisation ({counts}; "
        f"e.g. {first}){stray}; add the checkpoint that holds them, or name them under model.allow_random "
        f"(e.g. allow_random: [{', '.join(r.component for r in rows)}]) if that is intended; "
        "stzoo build RECIPE --check-init prints the whole table")


def check_shapes(path, mapped: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], report: ImportReport) -> None:
    for key, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(model_state[key].shape):
            report.shape_mismatches.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(model_state[key].shape)}")
    if report.shape_mismatches:
        raise CheckpointError(f"{path} does not match the model: {len(report.shape_mismatches)} shape mismatches, "
                              f"e.g. {report.shape_mismatches[0]}; check the recipe's architecture against the checkpoint")
