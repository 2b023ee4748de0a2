"""LoRA releases as LLaVA's training script saves them, read as LLaVA's model builder loads them.

With ``lora_enable``, LLaVA's (and LLaVA-ST's) train.py writes the output directory through peft:
``adapter_config.json`` and ``adapter_model.safetensors`` (``adapter_model.bin`` with older peft) holding each
wrapped linear's ``lora_A``/``lora_B`` under ``base_model.model.<module>``, plus ``non_lora_trainables.bin``
(torch.save of every other trained tensor, the projector, packer and coordinate tables, same prefix). Its builder
loads the base model, then the non-LoRA trainables over it, then merges each pair into its base weight:
W + scaling * B @ A with scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). This module reads such a
directory into those two parts; the importer maps both onto the model with the release layout's key maps.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from components.weights import CheckpointError, read_state_dict

PEFT_PREFIX = "base_model.model."
# peft drops the adapter name when it saves; a state dict saved by hand may still carry it (lora_A.default.weight).
LORA_TENSOR = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[A-Za-z_]\w*)?\.weight$")


@dataclass
class LoraRelease:
    path: Path
    deltas: dict[str, torch.Tensor]  # the base weight's name in the release's layout -> scaling * B @ A
    trainables: dict[str, torch.Tensor]  # every tensor that is not a LoRA factor, under the release's names
    factors: int  # lora_A and lora_B tensors read (two per delta)


def is_lora_release(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file()


def lora_scaling(path: Path, config: dict) -> float:
    """peft's scaling of B @ A, from adapter_config.json; the variants whose merge is not W + s * B @ A are refused."""
    where = f"{path / 'adapter_config.json'}"
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{where}: peft_type {config.get('peft_type')!r} is not LoRA; only LoRA adapters are merged")
    for option in ("use_dora", "rank_pattern", "alpha_pattern"):
        if config.get(option):
            raise CheckpointError(f"{where}: {option} is set; only plain LoRA (one r and lora_alpha for every module, "
                                  "no DoRA) is merged: merge it with peft's merge_and_unload and import the merged model")
    try:
        r, alpha = int(config["r"]), float(config["lora_alpha"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{where} gives no valid r and lora_alpha; it is not a complete peft LoRA config") from None
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (path / name).is_file():
            return read_state_dict(path / name, owner="model.init_from")
    raise CheckpointError(f"{path} has adapter_config.json but no adapter_model.safetensors or adapter_model.bin; "
                          "copy the whole directory the LoRA run saved")


def lora_deltas(path: Path, weights: dict[str, torch.Tensor], config: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base weight name -> scaling * B @ A, the adapter file's other tensors), each LoRA pair checked whole."""
    scaling, r = lora_scaling(path, config), int(config["r"])
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    rest = {}
    for key, tensor in weights.items():
        match = LORA_TENSOR.match(key)
        if match is None:
            if "lora_" in key:  # lora_embedding_A, lora_magnitude_vector...: variants this merge does not compute
                raise CheckpointError(f"{path}: {key} is a LoRA tensor of a kind only linear LoRA merges are read for; "
                                      "merge the adapter with peft's merge_and_unload and import the merged model")
            rest[key] = tensor
            continue
        pairs.setdefault(match["module"], {})[match["side"]] = tensor
    deltas = {}
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            absent = "lora_B" if "A" in pair else "lora_A"
            raise CheckpointError(f"{path}: {module} has no {absent} beside its "
                                  f"{'lora_A' if 'A' in pair else 'lora_B'}; the adapter file is incomplete")
        a, b = pair["A"], pair["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != r or b.shape[1] != r:
            raise CheckpointError(f"{path}: {module}.lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not make a "
                                  f"rank-{r} pair as adapter_config.json's r says; the adapter does not match its config")
        delta = scaling * (b.float() @ a.float())
        deltas[f"{module}.weight"] = delta.T if config.get("fan_in_fan_out") else delta
    return deltas, rest


def without_peft_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in state.items()}


def read_lora_release(path: Path) -> LoraRelease:
    """The LoRA deltas and the other trained tensors of a LoRA output directory, under the base model's names."""
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path / 'adapter_config.json'} is not readable JSON ({error}); re-copy the LoRA directory") from None
    weights = without_peft_prefix(adapter_weights(path))
    deltas, rest = lora_deltas(path, weights, config)
    trainables = dict(rest)
    if (path / "non_lora_trainables.bin").is_file():
        trainables.update(without_peft_prefix(read_state_dict(path / "non_lora_trainables.bin", owner="model.init_from")))
    return LoraRelease(path, deltas, trainables, factors=2 * len(deltas))
