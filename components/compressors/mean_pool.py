"""Mean pooling over time (all frames, or groups of frames) and optionally over the patch grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from components.base import BuildContext, Compressor
from components.registry import register
from components.token_metadata import NO_INDEX, FrameFeatures, TokenKind, VisualTokens, grid_positions
from components.config import RecipeError, bounded


@register("compressor", "mean_pool", "mean over groups of frames (default: all) and optionally over s x s patch cells")
class MeanPool(Compressor):
    @dataclass
    class Config:
        frames_per_group: int = bounded(0, ge=0)  # 0: one group of all frames -> purely spatial tokens
        spatial_stride: int = bounded(1, ge=1)  # average s x s grid cells (needs a patch grid)

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        if cfg.spatial_stride > 1 and ctx.grid is None:
            raise RecipeError(
                f"compressor 'mean_pool' with spatial_stride {cfg.spatial_stride} needs a patch grid, "
                "but the encoder emits query tokens; set spatial_stride: 1"
            )
        self.frames_per_group = cfg.frames_per_group
        self.stride = cfg.spatial_stride
        self.pools_all_frames = cfg.frames_per_group == 0 or cfg.frames_per_group >= ctx.frames

    @property
    def emitted_kinds(self):
        return frozenset({TokenKind.SPATIAL if self.pools_all_frames else TokenKind.FRAME})

    @property
    def emits_frame_index(self) -> bool:
        return not self.pools_all_frames

    @property
    def emits_grid_position(self) -> bool:
        return True

    def _groups(self, frames: int) -> int:
        return 1 if self.frames_per_group == 0 else math.ceil(frames / self.frames_per_group)

    def _pooled_grid(self, grid):
        if grid is None or self.stride == 1:
            return grid
        return (math.ceil(grid[0] / self.stride), math.ceil(grid[1] / self.stride))

    def num_tokens(self, frames, tokens_per_frame, grid) -> int:
        pooled = self._pooled_grid(grid)
        per_group = tokens_per_frame if pooled is None else pooled[0] * pooled[1]
        return self._groups(frames) * per_group

    def forward(self, features: FrameFeatures) -> VisualTokens:
        x = features.patches
        batch, frames, per_frame, dim = x.shape
        groups = self._groups(frames)
        chunks = torch.tensor_split(torch.arange(frames, device=x.device), groups)
        pooled = torch.stack([x[:, idx].mean(dim=1) for idx in chunks], dim=1)  # (B, G, P, D)
        grid = features.grid
        if self.stride > 1:
            h, w = grid
            cells = pooled.reshape(batch * groups, h, w, dim).permute(0, 3, 1, 2)
            cells = F.avg_pool2d(cells, self.stride, ceil_mode=True, count_include_pad=False)
            grid = (cells.shape[2], cells.shape[3])
            pooled = cells.permute(0, 2, 3, 1).reshape(batch, groups, grid[0] * grid[1], dim)
        per_group = pooled.shape[2]
        row, col = grid_positions(grid, per_group, x.device)
        if groups == 1:
            kind, frame = TokenKind.SPATIAL, NO_INDEX
        else:
            kind = TokenKind.FRAME
            frame = torch.stack([idx[0] for idx in chunks]).repeat_interleave(per_group)
        return VisualTokens.build(
            pooled.reshape(batch, groups * per_group, dim), kind, frame, row.repeat(groups), col.repeat(groups)
        )
