"""CLIP ViT (LLaVA, Video-ChatGPT, MASH-VLM): patch tokens plus the frame's CLS token."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import CLIPVisionConfig, CLIPVisionModel

from components.base import BuildContext
from components.encoders._hf_vision import HFVisionTower, load_tower
from components.config import bounded_at_build
from components.registry import register

# Architecture facts of public checkpoints, so that --meta builds need no download.
PRESETS = {
    "clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    ),
    "clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    ),
}


@register("encoder", "clip", "CLIP ViT per frame (openai/clip-vit-large-patch14-336): patch tokens + CLS, layer -2, frozen")
class CLIPEncoder(HFVisionTower):
    @dataclass
    class Config:
        pretrained: str | None = None  # local directory or hub id
        config: str | dict | None = None  # preset name or CLIPVisionConfig fields (tiny / --meta builds)
        select_layer: int = bounded_at_build(-2, "a layer of the tower: 1..depth, or -1..-depth from the end")
        frozen: bool = True

    def __init__(self, cfg: Config, ctx: BuildContext):
        model = load_tower("encoder 'clip'", CLIPVisionModel, CLIPVisionConfig, cfg.pretrained, cfg.config, PRESETS, ctx)
        super().__init__(model, cfg.select_layer, cfg.frozen, has_cls=True, kind_name="encoder 'clip'")
