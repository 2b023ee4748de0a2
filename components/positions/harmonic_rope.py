"""MASH-VLM's Harmonic-RoPE (Section 3.2, Eq. 4-6, Table 7).

Two axes of position ids. Distinct ids (Eq. 4) count every real token: stock RoPE.
Balanced ids (Eq. 5): over [prefix text P | temporal M | spatial N | text L] with N >= M,
    prefix 0..P-1, spatial P..P+N-1, temporal P+N-M..P+N-1, text P+N..P+N+L-1
(0-based; the paper writes 1-based ids without a prefix), so the last temporal and the
last spatial token are equally far from every text token. In general both kinds are
right-aligned in a span of max(N, M) ids, and tokens are placed by their kind, not by
their order in the sequence. Even frequency pairs (k = 0, 2, ...) read the balanced
ids, odd pairs the distinct ids (Eq. 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from components.base import BuildContext, Compressor, PositionScheme
from components.positions.rope import sequential_ids
from components.registry import register
from components.token_metadata import TokenKind, TokenSequence

BALANCED, DISTINCT = 0, 1


def balanced_ids(sequence: TokenSequence, spatial_kinds=(TokenKind.SPATIAL,), temporal_kinds=(TokenKind.TEMPORAL,)) -> torch.Tensor:
    """Eq. 5 with a text prefix, for every sample: (B, L)."""
    distinct = sequential_ids(sequence.attention_mask)
    real = sequence.attention_mask.bool()
    temporal = torch.isin(sequence.kind, torch.tensor([int(k) for k in temporal_kinds], device=real.device)) & real
    spatial = torch.isin(sequence.kind, torch.tensor([int(k) for k in spatial_kinds], device=real.device)) & real
    video = temporal | spatial
    m = temporal.sum(dim=1, keepdim=True)
    n = spatial.sum(dim=1, keepdim=True)
    span = torch.maximum(m, n)
    # P: real tokens before the first video token (all of them if there is no video).
    before_video = (video.long().cumsum(dim=1) == 0) & real
    prefix = before_video.sum(dim=1, keepdim=True)
    after_video = real & ~video & ~before_video
    temporal_rank = temporal.long().cumsum(dim=1) - 1
    spatial_rank = spatial.long().cumsum(dim=1) - 1
    ids = torch.where(after_video, distinct - m - n + span, distinct)
    ids = torch.where(spatial, prefix + span - n + spatial_rank, ids)
    ids = torch.where(temporal, prefix + span - m + temporal_rank, ids)
    return ids


@register("position", "harmonic_rope", "MASH-VLM Harmonic-RoPE: balanced ids on even frequency pairs, distinct ids on odd")
class HarmonicRoPE(PositionScheme):
    @dataclass
    class Config:
        ids: Literal["harmonic", "distinct_only", "balanced_only"] = "harmonic"  # Table 7
        spatial_kinds: list[str] = field(default_factory=lambda: ["spatial"])  # which kinds play each role
        temporal_kinds: list[str] = field(default_factory=lambda: ["temporal"])

    def __init__(self, cfg: Config, ctx: BuildContext | None = None):
        super().__init__()
        self.ids = cfg.ids
        self.spatial_kinds = tuple(TokenKind.parse(k) for k in cfg.spatial_kinds)
        self.temporal_kinds = tuple(TokenKind.parse(k) for k in cfg.temporal_kinds)
        self.required_kinds = frozenset(self.spatial_kinds + self.temporal_kinds)

    @property
    def num_axes(self) -> int:
        return 2

    def frequency_axes(self, head_dim: int) -> list[int]:
        pairs = head_dim // 2
        if self.ids == "distinct_only":
            return [DISTINCT] * pairs
        if self.ids == "balanced_only":
            return [BALANCED] * pairs
        return [BALANCED if k % 2 == 0 else DISTINCT for k in range(pairs)]

    def position_ids(self, sequence: TokenSequence) -> torch.Tensor:
        return torch.stack([balanced_ids(sequence, self.spatial_kinds, self.temporal_kinds),
                            sequential_ids(sequence.attention_mask)])

    def check_compatible(self, compressor: Compressor) -> str | None:
        problem = super().check_compatible(compressor)
        if problem:
            return problem
        others = compressor.emitted_kinds - self.required_kinds
        if others:
            names = " and ".join(sorted(k.name.lower() for k in others))
            return f"it places only spatial and temporal tokens, not {names} tokens"
        return None
