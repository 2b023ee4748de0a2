"""SigLIP ViT (LLaVA-OneVision, LLaVA-ST): patch tokens only, the last layer dropped."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import SiglipVisionConfig, SiglipVisionModel

from components.base import BuildContext
from components.encoders._hf_vision import HFVisionTower, load_tower
from components.config import bounded_at_build
from components.registry import register

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

PRESETS = {
    # google/siglip-so400m-patch14-384: 27x27 = 729 patches of 1152-d
    "siglip-so400m-patch14-384": dict(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
        image_size=384, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
    ),
}


@register("encoder", "siglip", "SigLIP ViT per frame (google/siglip-so400m-patch14-384): 27x27 patch tokens, no CLS, last layer dropped")
class SigLIPEncoder(HFVisionTower):
    @dataclass
    class Config:
        pretrained: str | None = None
        config: str | dict | None = None
        select_layer: int = bounded_at_build(-2, "a layer of the tower: 1..depth, or -1..-depth from the end")  # = LLaVA-OneVision's "last layer removed"
        frozen: bool = True

    def __init__(self, cfg: Config, ctx: BuildContext):
        model = load_tower("encoder 'siglip'", SiglipVisionModel, SiglipVisionConfig, cfg.pretrained, cfg.config, PRESETS, ctx)
        # The pooling head reads the last layer, which is gone; drop it so no parameter sits unused.
        vision = getattr(model, "vision_model", model)
        if getattr(vision, "head", None) is not None:
            vision.head = None
            vision.use_head = False
            model.config.vision_use_head = False
        super().__init__(model, cfg.select_layer, cfg.frozen, has_cls=False, kind_name="encoder 'siglip'",
                         mean=SIGLIP_MEAN, std=SIGLIP_STD)
