"""The data model: what flows between components.

    video (B,T,3,H,W)
      -> encoder     FrameFeatures  (B,T,P,Dv) + optional per-frame CLS, grid (h, w)
      -> projector   FrameFeatures  (B,T,P,D)
      -> compressor  VisualTokens   (B,N,D) + per-token kind / frame / row / col
      -> assembler   TokenSequence  (B,L,D) + the same metadata for every position

Masks and positions read only the metadata, never positions in a list, which is what
lets every mask work with every compressor that emits the token kinds it needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum

import torch


class TokenKind(IntEnum):
    """What a position of the LLM's input sequence holds."""

    PAD = 0
    TEXT = 1
    FRAME = 2  # a patch or query token of one frame, kept as it came out of the encoder
    CLS = 3  # a frame's CLS token
    SPATIAL = 4  # MASH-VLM spatial token: pooled over time, keeps row/col
    TEMPORAL = 5  # MASH-VLM temporal token: one per frame (or frame pair), no row/col
    FAST = 6  # LLaVA-ST fast stream: every frame, coarse grid
    SLOW = 7  # LLaVA-ST slow stream: temporal groups, fine grid
    GLOBAL = 8  # a token summarising the whole video
    SEPARATOR = 9  # a learned separator between frames or between video and text

    @classmethod
    def visual(cls) -> list["TokenKind"]:
        return [k for k in cls if k not in (cls.PAD, cls.TEXT)]

    @classmethod
    def parse(cls, name: str) -> "TokenKind":
        try:
            return cls[name.upper()]
        except KeyError:
            valid = ", ".join(k.name.lower() for k in cls)
            raise ValueError(f"unknown token kind {name!r}; valid kinds: {valid}") from None


NO_INDEX = -1  # frame/row/col of a token that has none (text, a video-level token)


@dataclass
class FrameFeatures:
    """Per-frame features out of an encoder (or a projector).

    patches: (B, T, P, D) patch or query tokens of every frame.
    cls: (B, T, D) the frame's CLS token, or None for encoders without one.
    grid: (h, w) with h * w == P when the tokens form a spatial grid, None for query tokens.
    """

    patches: torch.Tensor
    cls: torch.Tensor | None = None
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.patches.dim() != 4:
            raise ValueError(f"FrameFeatures.patches must be (B, T, P, D), got shape {tuple(self.patches.shape)}")
        if self.grid is not None and self.grid[0] * self.grid[1] != self.patches.shape[2]:
            raise ValueError(f"FrameFeatures grid {self.grid} does not hold {self.patches.shape[2]} tokens per frame")
        if self.cls is not None and self.cls.shape[:2] != self.patches.shape[:2]:
            raise ValueError("FrameFeatures.cls must be (B, T, D) with the same B and T as the patches")

    @property
    def batch_size(self) -> int:
        return self.patches.shape[0]

    @property
    def num_frames(self) -> int:
        return self.patches.shape[1]

    @property
    def tokens_per_frame(self) -> int:
        return self.patches.shape[2]

    @property
    def dim(self) -> int:
        return self.patches.shape[3]

    def map(self, fn) -> "FrameFeatures":
        """The same features with ``fn`` applied to the patch and CLS tensors (a projector, a dtype cast)."""
        return FrameFeatures(fn(self.patches), None if self.cls is None else fn(self.cls), self.grid)


@dataclass
class VisualTokens:
    """What a compressor hands to the LLM: N tokens per sample, each with its metadata.

    embeds: (B, N, D). kind, frame, row, col: (B, N) long tensors; frame/row/col are -1
    where a token has no such index.
    """

    embeds: torch.Tensor
    kind: torch.Tensor
    frame: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    # Index of each token in the compressor's full (unmasked) token list; lets a loss pair a
    # masked pass with the reference pass. -1 where not meaningful.
    source_index: torch.Tensor | None = None
    reference: "VisualTokens | None" = None  # the unmasked tokens, when these are a masked subset

    def __post_init__(self) -> None:
        shape = self.embeds.shape[:2]
        for name in ("kind", "frame", "row", "col"):
            value = getattr(self, name)
            if value.shape != shape:
                raise ValueError(f"VisualTokens.{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")

    @property
    def num_tokens(self) -> int:
        return self.embeds.shape[1]

    @classmethod
    def build(
        cls,
        embeds: torch.Tensor,
        kind: TokenKind | torch.Tensor,
        frame: torch.Tensor | int = NO_INDEX,
        row: torch.Tensor | int = NO_INDEX,
        col: torch.Tensor | int = NO_INDEX,
    ) -> "VisualTokens":
        """Tokens whose metadata is given per token (1-D of length N, broadcast over the batch) or as one value."""
        batch, n = embeds.shape[:2]

        def expand(value) -> torch.Tensor:
            tensor = torch.as_tensor(value, dtype=torch.long, device=embeds.device)
            return tensor.expand(n).expand(batch, n).contiguous() if tensor.dim() <= 1 else tensor

        return cls(embeds, expand(int(kind) if isinstance(kind, TokenKind) else kind), expand(frame), expand(row), expand(col))

    @classmethod
    def concat(cls, parts: list["VisualTokens"]) -> "VisualTokens":
        """Parts one after another along the token axis (e.g. MASH-VLM's temporal then spatial tokens)."""
        return cls(
            torch.cat([p.embeds for p in parts], dim=1),
            torch.cat([p.kind for p in parts], dim=1),
            torch.cat([p.frame for p in parts], dim=1),
            torch.cat([p.row for p in parts], dim=1),
            torch.cat([p.col for p in parts], dim=1),
        )

    def select(self, index: torch.Tensor) -> "VisualTokens":
        """The tokens at ``index`` (B, K) of every sample, metadata kept (dynamic masking)."""
        gather = lambda t: torch.gather(t, 1, index)  # noqa: E731 - a one-line local helper
        embeds = torch.gather(self.embeds, 1, index.unsqueeze(-1).expand(-1, -1, self.embeds.shape[-1]))
        source = self.source_index if self.source_index is not None else torch.arange(
            self.num_tokens, device=index.device
        ).expand(index.shape[0], -1)
        return VisualTokens(
            embeds, gather(self.kind), gather(self.frame), gather(self.row), gather(self.col),
            gather(source),
        )


@dataclass
class TokenSequence:
    """The LLM's input: text and visual tokens interleaved, padded to one length.

    inputs_embeds: (B, L, D). attention_mask: (B, L) 1 for real tokens, 0 for padding.
    labels: (B, L) target ids, -100 outside the answers. input_ids: (B, L) text token ids,
    the pad id at visual and padding positions. kind/frame/row/col: (B, L) metadata, the
    TEXT kind and -1 indices for text. visual_index: (B, L) the token's index in the
    VisualTokens it came from, -1 for text and padding.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    input_ids: torch.Tensor
    kind: torch.Tensor
    frame: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    visual_index: torch.Tensor
    coordinate_fraction: torch.Tensor | None = None  # (B, L) LAPE coordinate fractions, -1 elsewhere

    @property
    def batch_size(self) -> int:
        return self.inputs_embeds.shape[0]

    @property
    def length(self) -> int:
        return self.inputs_embeds.shape[1]

    @property
    def is_visual(self) -> torch.Tensor:
        return (self.kind != TokenKind.PAD) & (self.kind != TokenKind.TEXT)

    def lengths(self) -> torch.Tensor:
        """Number of real (non-padding) tokens of each sample."""
        return self.attention_mask.sum(dim=1)

    def replace(self, **changes) -> "TokenSequence":
        return dataclasses.replace(self, **changes)


def grid_positions(grid: tuple[int, int] | None, tokens: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each of ``tokens`` tokens laid out row-major on ``grid`` (-1 without a grid)."""
    index = torch.arange(tokens, device=device)
    if grid is None:
        none = torch.full((tokens,), NO_INDEX, dtype=torch.long, device=device)
        return none, none.clone()
    return index // grid[1], index % grid[1]
