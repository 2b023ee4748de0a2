"""Weights from official checkpoints of other code bases, mapped onto an STZoo model by name.

LAVIS / InstructBLIP / ST-LLM ``.pth`` files name things their own way:
    visual_encoder.blocks.N.attn.qkv.weight + q_bias + v_bias   (EVA ViT-g, separate q/v biases)
    ln_vision.*, query_tokens, Qformer.bert.*, llm_proj.* (llama_proj.* in ST-LLM), llama_model.*
The separate EVA q/v biases become the single qkv bias HF's InstructBLIP vision model has
(with zeros for k, which has no bias). Every tensor is accounted for in the report:
loaded, skipped on purpose (heads the model does not use), or unexpected; every model
tensor the files did not cover is listed as missing, per top-level module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from components.weights import CheckpointError, local_directory, read_state_dict

# (pattern, replacement) applied in order; the first match wins.
LAVIS_RULES: list[tuple[str, str]] = [
    (r"^visual_encoder\.cls_token$", "encoder.vision.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "encoder.vision.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "encoder.vision.embeddings.patch_embedding."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"encoder.vision.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"encoder.vision.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$", r"encoder.vision.encoder.layers.\1.self_attn.qkv.weight"),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"encoder.vision.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.", r"encoder.vision.encoder.layers.\1.mlp.\2."),
    (r"^ln_vision\.", "encoder.vision.post_layernorm."),
    (r"^query_tokens$", "encoder.query_tokens"),
    (r"^Qformer\.bert\.embeddings\.LayerNorm\.", "encoder.qformer.embeddings.layernorm."),
    (r"^Qformer\.bert\.embeddings\.(word|position)_embeddings\.", r"encoder.qformer.embeddings.\1_embeddings."),
    (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.", r"encoder.qformer.encoder.layer.\1.\2.attention."),
    (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.", r"encoder.qformer.encoder.layer.\1."),
    (r"^(llm_proj|llama_proj|opt_proj|t5_proj)\.", "projector.proj."),
    (r"^llama_model\.", "llm.hf."),
]
# Present in official files, unused by the model on purpose.
LAVIS_SKIPPED = [r"^Qformer\.cls\.", r"^Qformer\.bert\.embeddings\.position_ids$", r"^visual_encoder\.head\.", r"^temp$"]
QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")

# LLaVA-1.5 / LLaVA-OneVision releases: the LLM at model.* and lm_head.*, the projector at
# model.mm_projector.{0,2}, and (OneVision) the vision tower at model.vision_tower.vision_tower.*
LLAVA_RULES: list[tuple[str, str]] = [
    (r"^model\.mm_projector\.(\d+)\.", r"projector.layers.\1."),
    (r"^model\.vision_tower\.vision_tower\.", "encoder.model."),
    (r"^model\.", "llm.hf.model."),
    (r"^lm_head\.", "llm.hf.lm_head."),
]
LLAVA_SKIPPED = [r"^model\.image_newline$"]


@dataclass
class ImportReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # in the file, with no place in the model
    missing: dict[str, int] = field(default_factory=dict)  # per top-level module: model tensors no file covered
    shape_mismatches: list[str] = field(default_factory=list)

    def summary(self) -> str:
        missing = ", ".join(f"{module} {count}" for module, count in self.missing.items()) or "none"
        return (f"{len(self.loaded)} tensors loaded, {len(self.skipped)} skipped on purpose, "
                f"{len(self.unexpected)} unexpected, not covered by the files: {missing}")


def is_lavis_layout(keys) -> bool:
    return any(k.startswith(("visual_encoder.", "Qformer.", "query_tokens", "ln_vision.", "llama_model.", "llm_proj.", "llama_proj.")) for k in keys)


def eva_only_layout(keys) -> bool:
    """LAVIS ships EVA ViT-g as its own file whose keys lack the visual_encoder. prefix."""
    return all(k.startswith(("blocks.", "patch_embed.", "cls_token", "pos_embed", "norm.", "head.", "rope")) for k in keys)


def map_lavis_keys(state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict[str, torch.Tensor], ImportReport]:
    report = ImportReport()
    if eva_only_layout(state):
        state = {f"visual_encoder.{k}": v for k, v in state.items()}
    mapped: dict[str, torch.Tensor] = {}
    biases: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        bias = QV_BIAS.match(key)
        if bias:
            biases.setdefault(int(bias.group(1)), {})[bias.group(2)] = tensor
            continue
        if any(re.match(pattern, key) for pattern in LAVIS_SKIPPED):
            report.skipped.append(key)
            continue
        target = _apply_rules(key)
        target = _adapt_llm_prefix(target, model_keys) if target else None
        if target is None or target not in model_keys:
            report.unexpected.append(key)
            continue
        mapped[target] = tensor
    for layer, parts in biases.items():
        q, v = parts.get("q_bias"), parts.get("v_bias")
        target = f"encoder.vision.encoder.layers.{layer}.self_attn.qkv.bias"
        if q is None or v is None or target not in model_keys:
            report.unexpected.extend(f"visual_encoder.blocks.{layer}.attn.{name}" for name in parts)
            continue
        mapped[target] = torch.cat([q, torch.zeros_like(q), v])  # k has no bias in EVA
    return mapped, report


def _apply_rules(key: str, rules=LAVIS_RULES) -> str | None:
    for pattern, replacement in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def _adapt_llm_prefix(target: str, model_keys: set[str]) -> str:
    """LLM weights sit under a PEFT wrapper when the recipe tunes with LoRA; LoRA-wrapped linears keep theirs in base_layer."""
    if not target.startswith("llm.hf.") or target in model_keys:
        return target
    rest = target[len("llm.hf."):]
    for candidate in (f"llm.hf.base_model.model.{rest}",
                      f"llm.hf.base_model.model.{rest}".replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")):
        if candidate in model_keys:
            return candidate
    return target


def is_llava_layout(keys) -> bool:
    return any(k.startswith("model.mm_projector.") for k in keys)


def map_llava_keys(state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict[str, torch.Tensor], ImportReport]:
    report = ImportReport()
    mapped = {}
    for key, tensor in state.items():
        if any(re.match(pattern, key) for pattern in LLAVA_SKIPPED):
            report.skipped.append(key)
            continue
        target = _apply_rules(key, LLAVA_RULES)
        target = _adapt_llm_prefix(target, model_keys) if target else None
        if target is None or target not in model_keys:
            report.unexpected.append(key)
            continue
        mapped[target] = tensor
    return mapped, report


def import_checkpoints(model, paths: list[str | Path]) -> ImportReport:
    """Load official-format (LAVIS, ST-LLM) or STZoo-format files into ``model``; one report for all of them."""
    model_state = model.state_dict()
    model_keys = set(model_state)
    total = ImportReport()
    covered: set[str] = set()
    for path in paths:
        state = read_state_dict(local_directory(str(path), "model.init_from", ("*.json", "*.safetensors", "*.bin", "*.pth")),
                                owner="model.init_from")
        if is_llava_layout(state):
            mapped, report = map_llava_keys(state, model_keys)
        elif is_lavis_layout(state) or eva_only_layout(state):
            mapped, report = map_lavis_keys(state, model_keys)
        else:
            mapped = {k: v for k, v in state.items() if k in model_keys}
            report = ImportReport(unexpected=[k for k in state if k not in model_keys])
        for key, tensor in mapped.items():
            if tuple(tensor.shape) != tuple(model_state[key].shape):
                report.shape_mismatches.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(model_state[key].shape)}")
        if report.shape_mismatches:
            raise CheckpointError(f"{path} does not match the model: {len(report.shape_mismatches)} shape mismatches, "
                                  f"e.g. {report.shape_mismatches[0]}; check the recipe's architecture against the checkpoint")
        with torch.no_grad():
            for key, tensor in mapped.items():
                model_state[key].copy_(tensor.to(model_state[key].dtype))
        report.loaded = sorted(mapped)
        covered.update(mapped)
        total.loaded += report.loaded
        total.skipped += report.skipped
        total.unexpected += report.unexpected
    for key in model_keys - covered:
        module = key.split(".")[0]
        total.missing[module] = total.missing.get(module, 0) + 1
    return total
