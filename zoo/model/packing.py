"""Packing: several samples in one row of the LLM's input, each attending only to itself.

Samples are assembled, and given their position ids, exactly as unpacked; packing then lays the
real tokens of several samples end to end in one row, up to a token budget, and records which
sample each token belongs to (its document). The recipe's own mask function is composed with
"same document", so a DST or frame-block mask holds within each sample and nothing crosses
samples (a dense block-diagonal mask with sdpa/eager, a BlockMask with FlexAttention); position
ids restart with each sample whatever the scheme, because they were computed before packing.
The LLM's hidden states are put back in the unpacked (B, L) layout, so every loss is computed as
without packing: the same (hidden state, next label) pairs, the same mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.base import MaskScheme
from components.token_metadata import NO_INDEX, TokenKind, TokenSequence
from zoo.data.prompting import IGNORE


@dataclass
class PackedSequence:
    sequence: TokenSequence  # (R, W): R rows of packed samples
    position_ids: torch.Tensor  # (k, R, W): each sample's own ids, as computed unpacked
    document: torch.Tensor  # (R, W): the sample (row of the unpacked batch) of each token, -1 on padding
    offset: torch.Tensor  # (R, W): the token's index within its sample, -1 on padding

    @property
    def pad_share(self) -> float:
        return float((self.document < 0).float().mean())


def plan_packs(lengths: list[int], budget: int) -> list[list[int]]:
    """Samples per row, first fit by decreasing length; a sample longer than the budget gets a row of its own.
    Each row keeps its samples in batch order."""
    rows: list[list[int]] = []
    room: list[int] = []
    for sample in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        row = next((r for r, free in enumerate(room) if free >= lengths[sample]), None)
        if row is None:
            rows.append([sample])
            room.append(budget - lengths[sample])
        else:
            rows[row].append(sample)
            room[row] -= lengths[sample]
    return [sorted(row) for row in rows]


def pack(sequence: TokenSequence, position_ids: torch.Tensor, budget: int, pad_id: int) -> PackedSequence:
    """The right-padded ``sequence`` (and its (k, B, L) position ids) packed into rows of at most ``budget``
    tokens (wider only for a sample longer than it)."""
    lengths = [int(n) for n in sequence.lengths()]
    rows = plan_packs(lengths, budget)
    width = max(sum(lengths[s] for s in row) for row in rows)
    device = sequence.attention_mask.device
    document = torch.full((len(rows), width), -1, dtype=torch.long)
    offset = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for sample in row:
            document[r, start:start + lengths[sample]] = sample
            offset[r, start:start + lengths[sample]] = torch.arange(lengths[sample])
            start += lengths[sample]
    document, offset = document.to(device), offset.to(device)
    real = document >= 0
    sample, index = document.clamp(min=0), offset.clamp(min=0)

    def take(tensor: torch.Tensor | None, pad_value) -> torch.Tensor | None:
        if tensor is None:
            return None
        gathered = tensor[sample, index]
        keep = real.view(*real.shape, *([1] * (gathered.dim() - 2)))
        return torch.where(keep, gathered, torch.as_tensor(pad_value, dtype=gathered.dtype, device=device))

    # A sample's first token has no predecessor in it: its label is never a target unpacked, nor here.
    labels = take(sequence.labels, IGNORE).masked_fill(offset == 0, IGNORE)
    packed = TokenSequence(
        inputs_embeds=take(sequence.inputs_embeds, 0.0), attention_mask=real.long(), labels=labels,
        input_ids=take(sequence.input_ids, pad_id), kind=take(sequence.kind, int(TokenKind.PAD)),
        frame=take(sequence.frame, NO_INDEX), row=take(sequence.row, NO_INDEX), col=take(sequence.col, NO_INDEX),
        visual_index=take(sequence.visual_index, NO_INDEX), coordinate_fraction=take(sequence.coordinate_fraction, -1.0))
    positions = torch.where(real, position_ids[:, sample, index], torch.zeros((), dtype=position_ids.dtype, device=device))
    return PackedSequence(packed, positions, document, offset)


def unpack(hidden: torch.Tensor, packed: PackedSequence, batch: int, length: int) -> torch.Tensor:
    """(R, W, D) hidden states of the packed rows -> (B, L, D) in the unpacked layout, zeros on its padding."""
    real = packed.document >= 0
    out = hidden.new_zeros(batch, length, hidden.shape[-1])
    return out.index_put((packed.document[real], packed.offset[real]), hidden[real])


class DocumentMask(MaskScheme):
    """A recipe's mask within each packed sample, nothing across samples."""

    def __init__(self, scheme: MaskScheme, document: torch.Tensor):
        self.scheme = scheme
        self.document = document

    def mask_function(self, sequence: TokenSequence):
        inner = self.scheme.mask_function(sequence)
        document = self.document

        def within_document(b, h, q, kv):
            return inner(b, h, q, kv) & (document[b, q] == document[b, kv])

        return within_document
