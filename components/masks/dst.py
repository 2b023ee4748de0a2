"""MASH-VLM's DST attention (Section 3.3, Tables 5 and 6).

Within a kind: temporal tokens causal, spatial tokens bidirectional (each switchable).
Across kinds: each direction is blocked (the disentangling mask M^D) or fully allowed;
``spatial_to_temporal`` is about spatial keys seen by temporal queries, as the paper's
K -> Q notation. Text, and any query meeting a text key, stays causal.

The ablations of the paper are option values: Table 5 runs spatial_to_temporal: block,
temporal_to_spatial: allow (with temporal tokens first this is causal across kinds),
Table 6's "without disentangling" row allows both directions.

``spatial_kinds`` / ``temporal_kinds`` say which token kinds play each role, so DST applies to
other compressors' streams too (LLaVA-ST's slow stream as spatial, its fast stream as temporal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from components.base import BuildContext, MaskScheme
from components.registry import register
from components.token_metadata import TokenKind, TokenSequence
from components.config import RecipeError

KINDS = len(TokenKind)


@register("mask", "dst", "MASH-VLM DST attention: spatial bidirectional, temporal causal, no spatial<->temporal, text causal")
class DSTMask(MaskScheme):
    @dataclass
    class Config:
        temporal: Literal["causal", "bidirectional"] = "causal"
        spatial: Literal["causal", "bidirectional"] = "bidirectional"
        spatial_to_temporal: Literal["block", "allow"] = "block"  # spatial keys -> temporal queries
        temporal_to_spatial: Literal["block", "allow"] = "block"  # temporal keys -> spatial queries
        spatial_kinds: list[str] = field(default_factory=lambda: ["spatial"])
        temporal_kinds: list[str] = field(default_factory=lambda: ["temporal"])

    def __init__(self, cfg: Config, ctx: BuildContext | None = None):
        self.cfg = cfg
        spatial = [TokenKind.parse(k) for k in cfg.spatial_kinds]
        temporal = [TokenKind.parse(k) for k in cfg.temporal_kinds]
        if set(spatial) & set(temporal) or not spatial or not temporal:
            raise RecipeError("mask 'dst': spatial_kinds and temporal_kinds must each name a token kind, and no kind twice")
        self.required_kinds = frozenset(spatial + temporal)
        role = torch.zeros(KINDS, dtype=torch.long)  # 0: not a video role, 1: spatial, 2: temporal
        role[spatial], role[temporal] = 1, 2
        bidirectional = torch.zeros(3, dtype=torch.bool)
        bidirectional[1] = cfg.spatial == "bidirectional"
        bidirectional[2] = cfg.temporal == "bidirectional"
        cross = torch.zeros(3, 3, dtype=torch.bool)  # [query role, key role] -> allowed
        cross[2, 1] = cfg.spatial_to_temporal == "allow"
        cross[1, 2] = cfg.temporal_to_spatial == "allow"
        self.role, self.bidirectional, self.cross = role, bidirectional, cross

    def mask_function(self, sequence: TokenSequence):
        role = self.role.to(sequence.kind.device)[sequence.kind]  # (B, L) role of every position
        bidirectional = self.bidirectional.to(role.device)
        cross = self.cross.to(role.device)

        def dst(b, h, q, kv):
            q_role, kv_role = role[b, q], role[b, kv]
            causal = q >= kv
            within = causal | bidirectional[q_role]
            across = cross[q_role, kv_role]
            video_pair = torch.where(q_role == kv_role, within, across)
            return torch.where((q_role > 0) & (kv_role > 0), video_pair, causal)

        return dst
