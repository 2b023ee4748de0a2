"""The plain causal mask: every token attends to itself and everything before it."""

from __future__ import annotations

from dataclasses import dataclass

from components.base import BuildContext, MaskScheme
from components.registry import register
from components.token_metadata import TokenSequence


@register("mask", "causal", "standard causal attention over the whole sequence (LLaVA, ST-LLM, LLaVA-ST)")
class CausalMask(MaskScheme):
    is_causal = True

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None, ctx: BuildContext | None = None):
        pass

    def mask_function(self, sequence: TokenSequence):
        def causal(b, h, q, kv):
            return q >= kv

        return causal
