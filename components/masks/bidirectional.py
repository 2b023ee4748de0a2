"""Full attention: every token sees every other one, later ones included.

An encoder's attention. In a decoder trained on next-token prediction it lets each answer token see the
one it has to predict, so training learns to copy and the model has nothing to copy from when it
generates. It is here as the broken variant a calibration must catch (experiments/calibration.yaml),
and for prefix-LM experiments that pair it with a recipe of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.base import BuildContext, MaskScheme
from components.registry import register
from components.token_metadata import TokenSequence


@register("mask", "bidirectional", "every token sees every token, later ones too (leaks the answer in a decoder)")
class BidirectionalMask(MaskScheme):
    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None, ctx: BuildContext | None = None):
        pass

    def mask_function(self, sequence: TokenSequence):
        def everything(b, h, q, kv):
            return q >= 0  # a tensor, like every mask function's answer (padding keys are masked by the renderer)

        return everything
