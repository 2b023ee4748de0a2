"""Standard RoPE: one position id per token, counting real tokens (padding does not advance it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.base import BuildContext, PositionScheme
from components.registry import register
from components.token_metadata import TokenSequence


def sequential_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each sample (B, L); padding gets the id of its neighbour."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


@register("position", "rope", "standard 1-D rotary position ids over the whole sequence")
class RoPE(PositionScheme):
    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None, ctx: BuildContext | None = None):
        super().__init__()

    def position_ids(self, sequence: TokenSequence) -> torch.Tensor:
        return sequential_ids(sequence.attention_mask).unsqueeze(0)
