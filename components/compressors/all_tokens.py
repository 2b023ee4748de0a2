"""Every token of every frame, in frame order (LLaVA/Video-LLaVA style; ST-LLM's S-T tokens)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.base import BuildContext, Compressor
from components.registry import register
from components.token_metadata import FrameFeatures, TokenKind, VisualTokens, grid_positions


@register("compressor", "all_tokens", "all T x P frame tokens in frame order, each with its frame and grid position")
class AllTokens(Compressor):
    @dataclass
    class Config:
        include_cls: bool = False  # put each frame's CLS token after its patches

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        self.include_cls = cfg.include_cls and ctx.encoder_has_cls

    @property
    def emitted_kinds(self):
        return frozenset({TokenKind.FRAME, TokenKind.CLS} if self.include_cls else {TokenKind.FRAME})

    @property
    def emits_frame_index(self) -> bool:
        return True

    @property
    def emits_grid_position(self) -> bool:
        return True

    def num_tokens(self, frames, tokens_per_frame, grid) -> int:
        return frames * (tokens_per_frame + int(self.include_cls))

    def forward(self, features: FrameFeatures) -> VisualTokens:
        x = features.patches
        batch, frames, per_frame, dim = x.shape
        row, col = grid_positions(features.grid, per_frame, x.device)
        kind = torch.full((per_frame,), int(TokenKind.FRAME), device=x.device)
        if self.include_cls:
            x = torch.cat([x, features.cls.unsqueeze(2)], dim=2)
            row = torch.cat([row, row.new_full((1,), -1)])
            col = torch.cat([col, col.new_full((1,), -1)])
            kind = torch.cat([kind, kind.new_full((1,), int(TokenKind.CLS))])
            per_frame += 1
        frame = torch.arange(frames, device=x.device).repeat_interleave(per_frame)
        return VisualTokens.build(
            x.reshape(batch, frames * per_frame, dim), kind.repeat(frames), frame, row.repeat(frames), col.repeat(frames)
        )
