"""What the Hugging Face vision towers (CLIP, SigLIP, BLIP-2's EVA ViT) have in common.

Features are taken at ``select_layer`` as LLaVA does (-2: the penultimate layer); the
layers after it are removed, which gives the same features for less compute and memory
(LLaVA-OneVision removes SigLIP's last layer the same way).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from components.base import BuildContext, VisionEncoder
from components.token_metadata import FrameFeatures
from components.config import RecipeError
from components.weights import ForeignKeys, resolve_hf_config, unreachable_message

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_layer(kind_name: str, select_layer: int, num_layers: int) -> int:
    """Number of layers to keep so that the last kept layer's output is ``hidden_states[select_layer]``."""
    keep = select_layer if select_layer > 0 else num_layers + 1 + select_layer
    if not 1 <= keep <= num_layers:
        raise RecipeError(
            f"{kind_name}: select_layer {select_layer} is outside a tower of {num_layers} layers "
            f"(use 1..{num_layers} or -1..-{num_layers})"
        )
    return keep


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    for name, module in model.named_modules():
        if name.endswith("encoder.layers") and isinstance(module, nn.ModuleList):
            return module
    raise TypeError(f"{type(model).__name__} has no encoder.layers")


class HFVisionTower(VisionEncoder):
    # LLaVA-1.5 / LLaVA-OneVision releases keep the HF vision model (CLIPVisionModel, SigLipVisionModel) at
    # model.vision_tower.vision_tower.*; the tower here is its inner vision_model.
    foreign_keys = {"llava": ForeignKeys(rules=((r"^model\.vision_tower\.vision_tower\.vision_model\.", "model."),))}

    """A per-frame HF vision tower cut at ``select_layer``; subclasses say whether token 0 is a CLS token."""

    def __init__(self, model: nn.Module, select_layer: int, frozen: bool, has_cls: bool, kind_name: str,
                 mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        super().__init__()
        layers = encoder_layers(model)
        keep = check_layer(kind_name, select_layer, len(layers))
        del layers[keep:]
        self.model = model
        self._has_cls = has_cls
        self._mean, self._std = tuple(mean), tuple(std)
        self._captured: torch.Tensor | None = None
        layers[keep - 1].register_forward_hook(self._capture)
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def _capture(self, module, inputs, output) -> None:
        self._captured = output[0] if isinstance(output, tuple) else output

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()  # no dropout in a frozen tower, whatever the rest of the model does
        return self

    @property
    def config(self):
        return self.model.config

    @property
    def embed_dim(self) -> int:
        return self.config.hidden_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def grid(self) -> tuple[int, int]:
        side = self.config.image_size // self.config.patch_size
        return (side, side)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def has_cls(self) -> bool:
        return self._has_cls

    def hf_config(self) -> dict:
        return self.config.to_dict()

    def frame_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """(F, 3, H, W) -> (F, tokens, D) at the selected layer."""
        self.model(pixel_values=frames)
        tokens, self._captured = self._captured, None
        return tokens

    def forward(self, pixels: torch.Tensor, instruction=None) -> FrameFeatures:
        batch, frames = pixels.shape[:2]
        flat = pixels.flatten(0, 1).to(dtype=next(self.model.parameters()).dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.frame_tokens(flat)
        tokens = tokens.unflatten(0, (batch, frames))
        if self._has_cls:
            return FrameFeatures(tokens[:, :, 1:], tokens[:, :, 0], self.grid)
        return FrameFeatures(tokens, None, self.grid)


def load_tower(kind_name: str, model_class, config_class, pretrained: str | None, config, presets, ctx: BuildContext):
    """The HF tower: pretrained weights when the build loads them, else initialised from the config."""
    hf_config = resolve_hf_config(kind_name, config_class, pretrained, config, presets)
    if pretrained and ctx.load_pretrained and not ctx.meta:
        try:
            model = model_class.from_pretrained(pretrained)
        except (OSError, ValueError) as error:
            raise RecipeError(unreachable_message(kind_name, pretrained, error)) from None
        check_same_architecture(kind_name, pretrained, model.config, config, hf_config)
        return model
    return model_class(hf_config)


def check_same_architecture(kind_name: str, pretrained: str, loaded, config, expected) -> None:
    """A recipe that states a config must describe the checkpoint it loads."""
    if config is None:
        return
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
    differ = [k for k in keys if hasattr(expected, k) and getattr(loaded, k, None) != getattr(expected, k)]
    if differ:
        detail = ", ".join(f"{k}: recipe {getattr(expected, k)} vs checkpoint {getattr(loaded, k, None)}" for k in differ)
        raise RecipeError(f"{kind_name}: the checkpoint {pretrained!r} does not match the recipe's config ({detail})")
