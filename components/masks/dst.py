"""MASH-VLM's DST attention (Section 3.3, Tables 5 and 6).

Within a kind: temporal tokens causal, spatial tokens bidirectional (each switchable).
Across kinds: each direction is blocked (the disentangling mask M^D) or fully allowed;
``spatial_to_temporal`` is about spatial keys seen by temporal queries, as the paper's
K -> Q notation. Text, and any query meeting a text key, stays causal.

The ablations of the paper are option values: Table 5 runs spatial_to_temporal: block,
temporal_to_spatial: allow (with temporal tokens first this is causal across kinds),
Table 6's "without disentangling" row allows both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from components.base import BuildContext, MaskScheme
from components.registry import register
from components.tokens import TokenKind, TokenSequence

KINDS = len(TokenKind)


@register("mask", "dst", "MASH-VLM DST attention: spatial bidirectional, temporal causal, no spatial<->temporal, text causal")
class DSTMask(MaskScheme):
    required_kinds = frozenset({TokenKind.SPATIAL, TokenKind.TEMPORAL})

    @dataclass
    class Config:
        temporal: Literal["causal", "bidirectional"] = "causal"
        spatial: Literal["causal", "bidirectional"] = "bidirectional"
        spatial_to_temporal: Literal["block", "allow"] = "block"  # spatial keys -> temporal queries
        temporal_to_spatial: Literal["block", "allow"] = "block"  # temporal keys -> spatial queries

    def __init__(self, cfg: Config, ctx: BuildContext | None = None):
        self.cfg = cfg
        bidirectional = torch.zeros(KINDS, dtype=torch.bool)
        bidirectional[TokenKind.TEMPORAL] = cfg.temporal == "bidirectional"
        bidirectional[TokenKind.SPATIAL] = cfg.spatial == "bidirectional"
        cross = torch.zeros(KINDS, KINDS, dtype=torch.bool)  # [query kind, key kind] -> allowed
        cross[TokenKind.TEMPORAL, TokenKind.SPATIAL] = cfg.spatial_to_temporal == "allow"
        cross[TokenKind.SPATIAL, TokenKind.TEMPORAL] = cfg.temporal_to_spatial == "allow"
        self.bidirectional, self.cross = bidirectional, cross

    def mask_function(self, sequence: TokenSequence):
        kind = sequence.kind
        bidirectional = self.bidirectional.to(kind.device)
        cross = self.cross.to(kind.device)

        def dst(b, h, q, kv):
            q_kind, kv_kind = kind[b, q], kind[b, kv]
            causal = q >= kv
            q_video = (q_kind == TokenKind.SPATIAL) | (q_kind == TokenKind.TEMPORAL)
            kv_video = (kv_kind == TokenKind.SPATIAL) | (kv_kind == TokenKind.TEMPORAL)
            within = causal | bidirectional[q_kind]
            across = cross[q_kind, kv_kind]
            video_pair = torch.where(q_kind == kv_kind, within, across)
            return torch.where(q_video & kv_video, video_pair, causal)

        return dst
