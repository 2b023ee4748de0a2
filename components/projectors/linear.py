"""A single linear map into the LLM (BLIP-2's and ST-LLM's llm_proj)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.base import BuildContext, Projector
from components.registry import register


@register("projector", "linear", "one Linear layer: vision dim -> LLM hidden size (ST-LLM, BLIP-2)")
class LinearProjector(Projector):
    @dataclass
    class Config:
        bias: bool = True

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        self.proj = nn.Linear(ctx.encoder_dim, ctx.llm_hidden_size, bias=cfg.bias)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.to(self.proj.weight.dtype))
