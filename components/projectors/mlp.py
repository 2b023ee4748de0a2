"""LLaVA-1.5's two-layer MLP with GELU (MASH-VLM, LLaVA-OneVision, LLaVA-ST)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.base import BuildContext, Projector
from components.config import bounded
from components.registry import register
from components.weights import ForeignKeys


@register("projector", "mlp2x_gelu", "LLaVA-1.5 projector: Linear -> GELU -> Linear into the LLM hidden size")
class MLPProjector(Projector):
    # LLaVA releases: model.mm_projector.{0,2}; image_newline (LLaVA's image-grid separator) has no place here.
    foreign_keys = {"llava": ForeignKeys(rules=((r"^model\.mm_projector\.(\d+)\.", r"layers.\1."),),
                                         skipped=(r"^model\.image_newline$",))}

    @dataclass
    class Config:
        hidden_size: int | None = bounded(None, ge=1)  # default: the LLM hidden size, as in LLaVA

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        hidden = cfg.hidden_size or ctx.llm_hidden_size
        # Named 0/2 like LLaVA's nn.Sequential so released projector weights load by name.
        self.layers = nn.Sequential(nn.Linear(ctx.encoder_dim, hidden), nn.GELU(), nn.Linear(hidden, ctx.llm_hidden_size))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.to(self.layers[0].weight.dtype))
