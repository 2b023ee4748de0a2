"""MASH-VLM's spatial and temporal tokens (Section 3.1).

Spatial tokens: the T frames are split into S = 4 temporal segments, each segment is
averaged over time, and each averaged map is pooled 2x2 in space; the S pooled maps
together give N = S * (h/2) * (w/2) tokens (= h * w for S = 4): 576 for CLIP-L/14-336.
Query tokens without a grid (a Q-Former's) are averaged over time only: S * P tokens.
Temporal tokens: the T CLS tokens, the T spatially averaged frames and the T - 1
spatially averaged frame differences, concatenated type by type: M = 3T - 1.
Order into the LLM: temporal then spatial, as in the paper's [z_temporal, z_spatial, z_text].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from components.base import BuildContext, Compressor
from components.registry import register
from components.token_metadata import NO_INDEX, FrameFeatures, TokenKind, VisualTokens, grid_positions
from components.config import RecipeError, bounded

TEMPORAL_FEATURES = ("cls", "pooled", "difference")


@register("compressor", "mash_pooling", "MASH-VLM: N spatial tokens (4 segments, 2x2 pooled) + M = 3T-1 temporal tokens (CLS, pooled, differences)")
class MASHPooling(Compressor):
    @dataclass
    class Config:
        segments: int = bounded(4, ge=1)
        spatial_pool: int = bounded(2, ge=1)
        spatial_tokens: bool = True  # Table 8: spatial tokens on or off
        temporal_features: list[str] = field(default_factory=lambda: list(TEMPORAL_FEATURES))  # Table 8
        inference_tokens: Literal["both", "spatial", "temporal"] = "both"  # Table 10: what the LLM sees at eval

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        unknown = [f for f in cfg.temporal_features if f not in TEMPORAL_FEATURES]
        if unknown:
            raise RecipeError(f"compressor 'mash_pooling': temporal_features {unknown} unknown; choose from {', '.join(TEMPORAL_FEATURES)}")
        if "cls" in cfg.temporal_features and not ctx.encoder_has_cls:
            raise RecipeError("compressor 'mash_pooling' uses CLS tokens as temporal tokens, but the encoder has no CLS token; "
                              "remove 'cls' from temporal_features")
        if not cfg.spatial_tokens and not cfg.temporal_features:
            raise RecipeError("compressor 'mash_pooling' with neither spatial tokens nor temporal features emits nothing")
        if cfg.inference_tokens == "spatial" and not cfg.spatial_tokens or cfg.inference_tokens == "temporal" and not cfg.temporal_features:
            raise RecipeError(f"compressor 'mash_pooling': inference_tokens {cfg.inference_tokens!r} names tokens it does not build")
        self.cfg = cfg
        # The paper's order within the temporal tokens: CLS, pooled, differences.
        self.features = [f for f in TEMPORAL_FEATURES if f in cfg.temporal_features]

    @property
    def emitted_kinds(self):
        kinds = set()
        if self.cfg.spatial_tokens:
            kinds.add(TokenKind.SPATIAL)
        if self.features:
            kinds.add(TokenKind.TEMPORAL)
        return frozenset(kinds)

    @property
    def emits_frame_index(self) -> bool:
        return True

    @property
    def emits_grid_position(self) -> bool:
        return self.cfg.spatial_tokens

    def _pooled_grid(self, grid, tokens_per_frame: int) -> tuple[int, int]:
        """Query tokens (no grid, e.g. a Q-Former's) are not pooled in space: one spatial token per query and segment."""
        if grid is None:
            return (1, tokens_per_frame)
        s = self.cfg.spatial_pool
        return (math.ceil(grid[0] / s), math.ceil(grid[1] / s))

    def num_tokens(self, frames, tokens_per_frame, grid) -> int:
        use = self.cfg.inference_tokens
        spatial = self._num_spatial(frames, grid, tokens_per_frame) if use in ("both", "spatial") else 0
        return spatial + (self._num_temporal(frames) if use in ("both", "temporal") else 0)

    def _num_spatial(self, frames: int, grid, tokens_per_frame: int) -> int:
        if not self.cfg.spatial_tokens:
            return 0
        h, w = self._pooled_grid(grid, tokens_per_frame)
        return min(self.cfg.segments, frames) * h * w

    def _num_temporal(self, frames: int) -> int:
        per = {"cls": frames, "pooled": frames, "difference": frames - 1}
        return sum(per[f] for f in self.features)

    def spatial_tokens(self, features: FrameFeatures) -> VisualTokens:
        x = features.patches
        batch, frames, per_frame, dim = x.shape
        h, w = features.grid or (1, per_frame)
        pool = self.cfg.spatial_pool if features.grid is not None else 1
        segments = torch.tensor_split(torch.arange(frames, device=x.device), min(self.cfg.segments, frames))
        maps = torch.stack([x[:, idx].mean(dim=1) for idx in segments], dim=1)  # (B, S, h*w, D)
        cells = maps.reshape(batch * len(segments), h, w, dim).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(cells, pool, ceil_mode=True, count_include_pad=False)
        ph, pw = pooled.shape[-2:]
        tokens = pooled.permute(0, 2, 3, 1).reshape(batch, len(segments) * ph * pw, dim)
        row, col = grid_positions((ph, pw) if features.grid is not None else None, ph * pw, x.device)
        # A spatial token summarises its segment; it carries the segment's first frame as its frame index.
        frame = torch.stack([idx[0] for idx in segments]).repeat_interleave(ph * pw)
        return VisualTokens.build(tokens, TokenKind.SPATIAL, frame, row.repeat(len(segments)), col.repeat(len(segments)))

    def temporal_tokens(self, features: FrameFeatures) -> VisualTokens:
        x = features.patches
        frames = x.shape[1]
        parts, frame_index = [], []
        for feature in self.features:
            if feature == "cls":
                parts.append(features.cls)
                frame_index.append(torch.arange(frames))
            elif feature == "pooled":
                parts.append(x.mean(dim=2))
                frame_index.append(torch.arange(frames))
            else:  # spatial average of the difference between neighbouring frames, indexed at the later frame
                parts.append((x[:, 1:] - x[:, :-1]).mean(dim=2))
                frame_index.append(torch.arange(1, frames))
        frame = torch.cat(frame_index).to(x.device)
        return VisualTokens.build(torch.cat(parts, dim=1), TokenKind.TEMPORAL, frame, NO_INDEX, NO_INDEX)

    def forward(self, features: FrameFeatures) -> VisualTokens:
        use = "both" if self.training else self.cfg.inference_tokens
        parts = []
        if self.features and use in ("both", "temporal"):
            parts.append(self.temporal_tokens(features))
        if self.cfg.spatial_tokens and use in ("both", "spatial"):
            parts.append(self.spatial_tokens(features))
        return VisualTokens.concat(parts)
