"""Any timm ViT by model name (EVA, DINOv2, SigLIP variants...): patch tokens plus prefix tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import timm
import torch

from components.base import BuildContext, VisionEncoder
from components.registry import register
from components.token_metadata import FrameFeatures
from components.config import RecipeError, bounded_at_build
from components.errors import error_reason


@register("encoder", "timm", "any timm ViT by model name (EVA, DINOv2, SigLIP variants): patch tokens, first prefix token as CLS")
class TimmEncoder(VisionEncoder):
    @dataclass
    class Config:
        model_name: str = "vit_base_patch16_224"
        pretrained: str | None = None  # "hub" for timm's default weights, or a local checkpoint file
        model_kwargs: dict = field(default_factory=dict)  # passed to timm.create_model (img_size, depth, ...)
        select_layer: int = bounded_at_build(-1, "a block counted from the end: -1..-depth")  # -1: the final features (after the last norm); -k: output of block n-k+1
        frozen: bool = True

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        kwargs = dict(cfg.model_kwargs)
        load_hub = cfg.pretrained == "hub" and ctx.load_pretrained and not ctx.meta
        if cfg.pretrained and cfg.pretrained != "hub" and ctx.load_pretrained and not ctx.meta:
            kwargs["pretrained_cfg_overlay"] = {"file": cfg.pretrained}
            load_hub = True
        try:
            self.model = timm.create_model(cfg.model_name, pretrained=load_hub, num_classes=0, **kwargs)
        except RuntimeError as error:
            raise RecipeError(f"encoder 'timm': could not create {cfg.model_name!r} ({error_reason(error)})") from None
        except Exception as error:  # unknown names, bad kwargs, unreachable hub
            raise RecipeError(f"encoder 'timm': {cfg.model_name!r} with {kwargs or 'no options'} failed: {type(error).__name__}: {error}") from None
        if not hasattr(self.model, "patch_embed") or not hasattr(self.model, "blocks"):
            raise RecipeError(f"encoder 'timm': {cfg.model_name!r} is not a ViT (no patch_embed/blocks); use a ViT-family model")
        self.select_layer = cfg.select_layer
        blocks = len(self.model.blocks)
        if not (-blocks <= cfg.select_layer <= -1):
            raise RecipeError(f"encoder 'timm': select_layer {cfg.select_layer} is outside -1..-{blocks}")
        data_cfg = timm.data.resolve_data_config({}, model=self.model)
        # The patch embedding knows the size actually built (img_size overrides the pretrained config's).
        self._image_size = int(self.model.patch_embed.img_size[-1])
        self._mean = tuple(data_cfg["mean"])
        self._std = tuple(data_cfg["std"])
        if cfg.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    @property
    def embed_dim(self) -> int:
        return self.model.num_features

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.model.patch_embed.grid_size)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def has_cls(self) -> bool:
        return getattr(self.model, "num_prefix_tokens", 0) > 0

    @property
    def image_size(self) -> int:
        return self._image_size

    def forward(self, pixels: torch.Tensor, instruction=None) -> FrameFeatures:
        batch, frames = pixels.shape[:2]
        flat = pixels.flatten(0, 1).to(dtype=next(self.model.parameters()).dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.select_layer == -1:
                tokens = self.model.forward_features(flat)
            else:
                blocks = len(self.model.blocks)
                tokens = self.model.forward_intermediates(
                    flat, indices=[blocks + self.select_layer], norm=False, output_fmt="NLC",
                    intermediates_only=True, return_prefix_tokens=True,
                )[0]
                tokens = torch.cat([tokens[1], tokens[0]], dim=1) if isinstance(tokens, tuple) else tokens
        prefix = getattr(self.model, "num_prefix_tokens", 0)
        tokens = tokens.unflatten(0, (batch, frames))
        patches = tokens[:, :, prefix:]
        cls = tokens[:, :, 0] if prefix else None
        return FrameFeatures(patches, cls, self.grid)
