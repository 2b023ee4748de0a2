"""LLaVA-ST's Spatial-Temporal Packer (Section 3.3, Eq. 6-8).

Point-to-region attention: each query is a downsampled feature (the mean of its region, as
the paper reads; ``query: interpolate`` for the official code's bilinear/linear resampling), the
keys and values are the full-resolution features of that region only, and the output is
query + attention. ``architecture`` says how the attention is built (the paper does not):

    official_code (default)  as LLaVA-ST's code builds it, so released weights load: q, k and v each
                             Linear(D -> A) -> GELU -> Linear(A -> A) -> LayerNorm(A), then torch's
                             nn.MultiheadAttention(A, heads) with its own in/out projections, then
                             Linear(A -> D, no bias). Parameter names follow the code's (to_q.0, to_q.2,
                             ln_q, ..., attn.in_proj_weight, attn.out_proj, to_out), under spatial / fast /
                             slow for its token_packer / token_packer_fast / token_packer_slow.
    norm_first               this project's first reading: q, k and v each LayerNorm(D) -> Linear(D -> A)
                             -> GELU -> Linear(A -> A), scaled dot-product attention over A split into
                             heads (no in/out projections), Linear(A -> D, no bias).
To reproduce a released checkpoint use ``architecture: official_code`` with ``query: interpolate``.

Cascade for a video of T frames on an h x w grid:
    spatial packer  h x w -> k1 x k1 on every frame                      (27x27 -> 9x9)
    fast stream     k1 x k1 -> k2 x k2 on every frame     -> T * k2^2    (100 * 9 = 900)
    slow stream     T -> sigma groups of frames, k1 x k1  -> sigma * k1^2 (20 * 81 = 1620)
Fast then slow into the LLM, frame-major, each token with kind, frame and row/col. A single
frame (an image) skips the packer: all its h x w tokens go in. ``attention: false`` replaces
every packer by plain average pooling with the same layout (Table 7's "w/o STP").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from components.base import BuildContext, Compressor
from components.registry import register
from components.token_metadata import FrameFeatures, TokenKind, VisualTokens, grid_positions
from components.config import RecipeError, bounded
from components.weights import ForeignKeys


class ProjectionMLP(nn.Sequential):
    def __init__(self, dim: int, width: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width))


def init_linear_layers(module: nn.Module) -> None:
    """Truncated normal (std 0.02) for every Linear, zero biases: the official code's initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def check_heads(width: int, heads: int) -> None:
    if width % heads:
        raise RecipeError(f"compressor 'llava_st_packer': attention_dim {width} is not divisible by heads {heads}")


class PointToRegionAttention(nn.Module):
    """``architecture: norm_first``. queries (G, D) attend to their own regions (G, R, D); ``valid`` (G, R) marks real keys."""

    def __init__(self, dim: int, width: int, heads: int):
        super().__init__()
        check_heads(width, heads)
        self.heads = heads
        self.q, self.k, self.v = ProjectionMLP(dim, width), ProjectionMLP(dim, width), ProjectionMLP(dim, width)
        self.out = nn.Linear(width, dim, bias=False)
        init_linear_layers(self)

    def forward(self, queries: torch.Tensor, regions: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        groups, size, _ = regions.shape
        split = lambda x, n: x.view(groups, n, self.heads, -1).transpose(1, 2)  # noqa: E731
        q = split(self.q(queries.unsqueeze(1)), 1)
        k, v = split(self.k(regions), size), split(self.v(regions), size)
        mask = None if valid is None else valid[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return queries + self.out(attended.transpose(1, 2).reshape(groups, -1))


def official_projection(dim: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width))


class OfficialRegionAttention(nn.Module):
    """``architecture: official_code``: the same point-to-region attention built, and named, as LLaVA-ST's code."""

    def __init__(self, dim: int, width: int, heads: int):
        super().__init__()
        check_heads(width, heads)
        self.to_q, self.to_k, self.to_v = (official_projection(dim, width) for _ in range(3))
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.to_out = nn.Linear(width, dim, bias=False)
        init_linear_layers(self)  # attn.in_proj_weight keeps torch's xavier init, as in the code

    def forward(self, queries: torch.Tensor, regions: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_q(self.to_q(queries.unsqueeze(1)))
        k, v = self.ln_k(self.to_k(regions)), self.ln_v(self.to_v(regions))
        padding = None if valid is None else ~valid  # True marks a key to ignore
        attended, _ = self.attn(q, k, v, key_padding_mask=padding, need_weights=False)
        return queries + self.to_out(attended[:, 0])


ARCHITECTURES = {"official_code": OfficialRegionAttention, "norm_first": PointToRegionAttention}


@register("compressor", "llava_st_packer", "LLaVA-ST STP: point-to-region spatial packer, fast (k2 x k2 per frame) + slow (sigma groups) streams")
class SpatialTemporalPacker(Compressor):
    @dataclass
    class Config:
        k1: int = bounded(9, ge=1)  # spatial packer output side
        k2: int = bounded(3, ge=1)  # fast stream side
        sigma: int = bounded(20, ge=1)  # slow stream frame groups
        attention_dim: int = bounded(1024, ge=1)
        heads: int = bounded(8, ge=1)
        attention: bool = True  # false: average pooling with the same layout (Table 7, w/o STP)
        query: Literal["average", "interpolate"] = "average"  # paper: region mean; official code: resampling
        architecture: Literal["official_code", "norm_first"] = "official_code"  # how the attention is built (above)

    # LLaVA-ST's release: its three packers' attention modules (the code spells "devide").
    foreign_keys = {"llava": ForeignKeys(rules=(
        (r"^model\.vision_resampler\.token_packer\.devide_attention\.", "spatial."),
        (r"^model\.vision_resampler\.token_packer_fast\.devide_attention\.", "fast."),
        (r"^model\.vision_resampler\.token_packer_slow\.devide_attention\.", "slow."),
    ))}

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        if ctx.grid is None:
            raise RecipeError("compressor 'llava_st_packer' packs a patch grid, but the encoder emits query tokens; use siglip, clip or timm")
        h, w = ctx.grid
        if h % cfg.k1 or w % cfg.k1 or cfg.k1 % cfg.k2:
            raise RecipeError(f"compressor 'llava_st_packer': the {h}x{w} grid must divide into k1={cfg.k1} regions per side "
                              f"and k1 into k2={cfg.k2}; choose k1 dividing {h} and k2 dividing k1")
        self.cfg = cfg
        if cfg.attention:
            dim, attention = ctx.llm_hidden_size, ARCHITECTURES[cfg.architecture]
            self.spatial = attention(dim, cfg.attention_dim, cfg.heads)
            self.fast = attention(dim, cfg.attention_dim, cfg.heads)
            self.slow = attention(dim, cfg.attention_dim, cfg.heads)

    @property
    def emitted_kinds(self):
        return frozenset({TokenKind.FAST, TokenKind.SLOW, TokenKind.FRAME})

    @property
    def emits_frame_index(self) -> bool:
        return True

    @property
    def emits_grid_position(self) -> bool:
        return True

    def groups(self, frames: int) -> int:
        return min(self.cfg.sigma, frames)

    def num_tokens(self, frames, tokens_per_frame, grid) -> int:
        if frames == 1:
            return tokens_per_frame
        return frames * self.cfg.k2**2 + self.groups(frames) * self.cfg.k1**2

    # --- packers -------------------------------------------------------------------------

    def pack_space(self, x: torch.Tensor, side: int, attention: nn.Module | None) -> torch.Tensor:
        """(N, h, w, D) -> (N, side, side, D): each output point attends to its (h/side) x (w/side) region."""
        n, h, w, dim = x.shape
        rh, rw = h // side, w // side
        regions = x.view(n, side, rh, side, rw, dim).permute(0, 1, 3, 2, 4, 5).reshape(n * side * side, rh * rw, dim)
        if self.cfg.query == "interpolate":
            grid = x.permute(0, 3, 1, 2)
            queries = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
            queries = queries.permute(0, 2, 3, 1).reshape(n * side * side, dim)
        else:
            queries = regions.mean(dim=1)
        packed = queries if attention is None else attention(queries, regions)
        return packed.view(n, side, side, dim)

    def pack_time(self, x: torch.Tensor, groups: int, attention: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, s, s, D) -> (B, G, s, s, D): each point attends to its location across its group of frames."""
        batch, frames, side, _, dim = x.shape
        group_of = torch.div(torch.arange(frames, device=x.device) * groups, frames, rounding_mode="floor")
        size = math.ceil(frames / groups)
        slot = torch.arange(frames, device=x.device) - torch.searchsorted(group_of, group_of)  # position within the group
        regions = x.new_zeros(batch, groups, size, side, side, dim)
        regions[:, group_of, slot] = x
        valid = torch.zeros(groups, size, dtype=torch.bool, device=x.device)
        valid[group_of, slot] = True
        regions = regions.permute(0, 1, 3, 4, 2, 5).reshape(batch * groups * side * side, size, dim)
        valid = valid[None, :, None, None, :].expand(batch, groups, side, side, size).reshape(-1, size)
        if self.cfg.query == "interpolate":
            line = x.permute(0, 2, 3, 4, 1).reshape(batch * side * side, dim, frames)
            queries = F.interpolate(line, size=groups, mode="linear", align_corners=False)
            queries = queries.view(batch, side, side, dim, groups).permute(0, 4, 1, 2, 3).reshape(-1, dim)
        else:
            queries = (regions * valid.unsqueeze(-1)).sum(dim=1) / valid.sum(dim=1, keepdim=True)
        packed = queries if attention is None else attention(queries, regions, valid)
        first_frames = torch.searchsorted(group_of, torch.arange(groups, device=x.device))
        return packed.view(batch, groups, side, side, dim), first_frames

    # --- forward ---------------------------------------------------------------------------

    def forward(self, features: FrameFeatures) -> VisualTokens:
        x = features.patches
        batch, frames, per_frame, dim = x.shape
        h, w = features.grid
        if frames == 1:  # an image: every token goes in
            row, col = grid_positions((h, w), per_frame, x.device)
            return VisualTokens.build(x.reshape(batch, per_frame, dim), TokenKind.FRAME, 0, row, col)
        use = self.cfg.attention
        packed = self.pack_space(x.reshape(batch * frames, h, w, dim), self.cfg.k1, self.spatial if use else None)
        fast = self.pack_space(packed, self.cfg.k2, self.fast if use else None).view(batch, frames, self.cfg.k2**2, dim)
        slow, first_frames = self.pack_time(packed.view(batch, frames, self.cfg.k1, self.cfg.k1, dim),
                                            self.groups(frames), self.slow if use else None)
        groups = slow.shape[1]
        fast_row, fast_col = grid_positions((self.cfg.k2, self.cfg.k2), self.cfg.k2**2, x.device)
        slow_row, slow_col = grid_positions((self.cfg.k1, self.cfg.k1), self.cfg.k1**2, x.device)
        fast_tokens = VisualTokens.build(
            fast.reshape(batch, frames * self.cfg.k2**2, dim), TokenKind.FAST,
            torch.arange(frames, device=x.device).repeat_interleave(self.cfg.k2**2), fast_row.repeat(frames), fast_col.repeat(frames),
        )
        slow_tokens = VisualTokens.build(
            slow.reshape(batch, groups * self.cfg.k1**2, dim), TokenKind.SLOW,
            first_frames.repeat_interleave(self.cfg.k1**2), slow_row.repeat(groups), slow_col.repeat(groups),
        )
        return VisualTokens.concat([fast_tokens, slow_tokens])
