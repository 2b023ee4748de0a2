"""TC-LLaVA's frame-wise block causal mask: a visual token sees every visual token of its own
frame (both ways) and of all earlier frames; text stays causal over everything before it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.base import BuildContext, MaskScheme
from components.registry import register
from components.token_metadata import TokenKind, TokenSequence


@register("mask", "frame_block", "TC-LLaVA frame-block causal: visual tokens see their own and earlier frames, text causal")
class FrameBlockMask(MaskScheme):
    needs_frame_index = True

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None, ctx: BuildContext | None = None):
        pass

    def mask_function(self, sequence: TokenSequence):
        kind, frame = sequence.kind, sequence.frame

        def frame_block(b, h, q, kv):
            q_framed = (kind[b, q] != TokenKind.TEXT) & (kind[b, q] != TokenKind.PAD) & (frame[b, q] >= 0)
            kv_framed = (kind[b, kv] != TokenKind.TEXT) & (kind[b, kv] != TokenKind.PAD) & (frame[b, kv] >= 0)
            return torch.where(q_framed & kv_framed, frame[b, kv] <= frame[b, q], q >= kv)

        return frame_block
