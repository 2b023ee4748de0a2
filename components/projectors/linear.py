"""A single linear map into the LLM (BLIP-2's and ST-LLM's llm_proj)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.base import BuildContext, Projector
from components.registry import register
from components.weights import CheckpointError, ForeignKeys, load_prefixed_state_dict
from components.errors import error_reason


@register("projector", "linear", "one Linear layer: vision dim -> LLM hidden size (ST-LLM, BLIP-2)")
class LinearProjector(Projector):
    # LAVIS-family releases: llm_proj (BLIP-2, InstructBLIP), llama_proj (ST-LLM), opt_proj, t5_proj.
    foreign_keys = {"lavis": ForeignKeys(rules=((r"^(llm_proj|llama_proj|opt_proj|t5_proj)\.", "proj."),))}

    @dataclass
    class Config:
        bias: bool = True
        pretrained: str | None = None  # a checkpoint holding trained projection weights (an HF InstructBLIP dir)
        pretrained_prefix: str = "language_projection."  # their name prefix in that checkpoint

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        self.proj = nn.Linear(ctx.encoder_dim, ctx.llm_hidden_size, bias=cfg.bias)
        if cfg.pretrained and ctx.load_pretrained and not ctx.meta:
            state = load_prefixed_state_dict(cfg.pretrained, {cfg.pretrained_prefix: ""}, owner="projector 'linear'")
            try:
                self.proj.load_state_dict(state)
            except RuntimeError as error:
                raise CheckpointError(f"projector 'linear': {cfg.pretrained!r} does not fit a {ctx.encoder_dim} -> "
                                      f"{ctx.llm_hidden_size} projection ({error_reason(error, 160)})") from None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.to(self.proj.weight.dtype))
