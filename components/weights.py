"""Reading weights: safetensors (whole or sharded), or torch files with weights_only=True.

Nothing here unpickles arbitrary objects: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from huggingface_hub import snapshot_download
from safetensors.torch import load_file

from components.config import RecipeError
from components.errors import error_reason


class CheckpointError(RecipeError):
    """A checkpoint that is missing, corrupt, or does not match the model."""


def unreachable_message(kind_name: str, pretrained: str, error: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = "is not a local directory" + (" and HF_HUB_OFFLINE=1 keeps the hub out" if offline else " and the hub did not serve it")
    return (
        f"{kind_name}: could not load {pretrained!r}: it {where} ({type(error).__name__}: {error_reason(error, 160)}). "
        "Download it where the hub is reachable (hf download ID --local-dir DIR) and set pretrained: to DIR, "
        "or give config: to build without weights"
    )


def resolve_hf_config(owner: str, config_class, pretrained: str | None, config, presets: dict[str, dict]):
    """An HF config from a recipe's ``config:`` (a preset name or the config's fields), else from ``pretrained``."""
    if isinstance(config, str):
        if config not in presets:
            raise RecipeError(f"{owner}: unknown config preset {config!r}; presets: {', '.join(sorted(presets))}")
        return config_class(**presets[config])
    if isinstance(config, dict):
        return config_class(**config)
    if pretrained:
        try:
            loaded = config_class.from_pretrained(pretrained)
        except (OSError, ValueError) as error:
            raise RecipeError(unreachable_message(owner, pretrained, error)) from None
        return loaded
    raise RecipeError(f"{owner}: give pretrained: (a directory or hub id) or config: (a preset name or config fields)")


def local_directory(pretrained: str, owner: str, patterns: tuple[str, ...] = ("*.json", "*.safetensors")) -> Path:
    """A local directory holding ``pretrained``: the path itself, or the hub snapshot (cached, or downloaded when allowed)."""
    path = Path(pretrained)
    if path.exists():
        return path
    try:
        return Path(snapshot_download(pretrained, allow_patterns=list(patterns)))
    except Exception as error:  # the hub client raises many types; all mean "not available here"
        raise CheckpointError(unreachable_message(owner, pretrained, error)) from None


def torch_load_problem(error: Exception, holds: str) -> str:
    """Why torch.load(weights_only=True) refused a file: it holds objects other than ``holds`` (a pickle of
    code, which is never run), or the error's own words (truncated, not a torch file)."""
    text = " ".join(str(error).split())
    if "weights_only" in text or "Unsupported" in text:
        return f"it holds objects other than {holds}"
    return f"{type(error).__name__}: {error_reason(error, 120)}"


def read_state_dict(path: Path, owner: str) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, a sharded safetensors directory, or a torch file (weights only)."""
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(read_state_dict(path / shard, owner))
            return state
        torch_index = path / "pytorch_model.bin.index.json"
        if torch_index.is_file():  # older releases (LLaVA-1.5) ship torch shards
            shards = sorted(set(json.loads(torch_index.read_text())["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(read_state_dict(path / shard, owner))
            return state
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) or sorted(path.glob("*.pth"))
        if not files:
            raise CheckpointError(f"{owner}: {path} holds no weights (.safetensors, .bin or .pth)")
        state = {}
        for file in files:
            state.update(read_state_dict(file, owner))
        return state
    if not path.is_file():
        raise CheckpointError(f"{owner}: checkpoint file {path} not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{owner}: {path} is not a readable safetensors file ({error}); re-save or re-download it") from None
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(
            f"{owner}: {path} could not be read as weights ({type(error).__name__}: {error_reason(error, 160)}); "
            "it is corrupt, or it holds objects other than tensors (only weights are ever loaded)"
        ) from None
    if isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], dict):
        loaded = loaded["model"]  # LAVIS and many training scripts nest the weights under "model"
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{owner}: {path} does not hold a mapping of names to tensors")
    return loaded


def load_prefixed_state_dict(pretrained: str, prefixes: dict[str, str], owner: str) -> dict[str, torch.Tensor]:
    """The tensors of ``pretrained`` whose names start with a key of ``prefixes``, renamed to its value."""
    state = read_state_dict(local_directory(pretrained, owner), owner)
    out = {}
    for name, tensor in state.items():
        for old, new in prefixes.items():
            if name.startswith(old):
                out[new + name[len(old):]] = tensor
                break
    if not out:
        raise CheckpointError(f"{owner}: {pretrained!r} has no weights under {', '.join(prefixes)}")
    return out


Converter = Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], list[str]]]


@dataclass(frozen=True)
class ForeignKeys:
    """How one component's tensors are named in a foreign release (torchtitan's state_dict_adapter,
    timm's checkpoint_filter_fn), declared on the component class under the release's layout name.

    Targets are the component's own parameter names (``vision.encoder.layers.0...``, not
    ``encoder.vision...``). ``rules`` are (pattern, replacement) pairs tried in order; ``skipped``
    are tensors the component leaves out on purpose; ``convert`` takes the whole state and returns
    tensors that are not a plain rename (EVA's separate q and v biases) with the keys it consumed;
    ``resolve`` finds where a mapped name really sits among the component's own names (an LLM
    wrapped by peft keeps its weights under ``base_model.model``).
    """

    rules: tuple[tuple[str, str], ...]
    skipped: tuple[str, ...] = ()
    convert: Converter | None = None
    resolve: Callable[[str, set[str]], str] | None = None

    def apply(self, state: dict[str, torch.Tensor], own_keys: set[str]) -> tuple[dict[str, torch.Tensor], set[str], list[str]]:
        """(tensors under the component's own names, every foreign key consumed, the keys skipped on purpose)."""
        mapped, consumed, skipped = {}, set(), []
        if self.convert is not None:
            converted, used = self.convert(state)
            mapped.update(converted)
            consumed.update(used)
        for key, tensor in state.items():
            if key in consumed:
                continue
            if any(re.match(pattern, key) for pattern in self.skipped):
                skipped.append(key)
                consumed.add(key)
                continue
            target = next((re.sub(p, r, key) for p, r in self.rules if re.match(p, key)), None)
            if target is None:
                continue
            mapped[self.resolve(target, own_keys) if self.resolve else target] = tensor
            consumed.add(key)
        return mapped, consumed, skipped
