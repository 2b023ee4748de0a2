"""Rendering a mask scheme for the attention implementation in use.

One mask function serves every implementation: it is evaluated by broadcasting index
tensors for a dense mask (sdpa: boolean, eager: additive float, since eager adds the
mask to the scores), and handed to FlexAttention's create_block_mask as is.
Padding keys are never attended; every query may attend to itself, so a padding row
is never empty (an empty row gives NaN in softmax).
"""

from __future__ import annotations

import torch

from components.base import MaskFunction, MaskScheme
from components.token_metadata import TokenSequence

DENSE_IMPLEMENTATIONS = ("eager", "sdpa")


def with_padding(fn: MaskFunction, attention_mask: torch.Tensor) -> MaskFunction:
    valid = attention_mask.bool()

    def masked(b, h, q, kv):
        return (fn(b, h, q, kv) & valid[b, kv]) | (q == kv)

    return masked


def dense_allowed(fn: MaskFunction, batch: int, length: int, device) -> torch.Tensor:
    """The mask function evaluated on every (b, q, kv): a (B, L, L) boolean tensor."""
    b = torch.arange(batch, device=device).view(-1, 1, 1)
    q = torch.arange(length, device=device).view(1, -1, 1)
    kv = torch.arange(length, device=device).view(1, 1, -1)
    h = torch.zeros((), dtype=torch.long, device=device)
    return fn(b, h, q, kv).expand(batch, length, length)


def render_mask(scheme: MaskScheme, sequence: TokenSequence, implementation: str, dtype: torch.dtype):
    """The 4-D mask (or BlockMask) that the HF attention implementation ``implementation`` takes as is.

    A plain causal scheme returns the 2-D padding mask instead: HF builds causal+padding
    itself, and sdpa/FlashAttention can then use their fused causal kernels.
    """
    if scheme.is_causal:
        return sequence.attention_mask
    fn = with_padding(scheme.mask_function(sequence), sequence.attention_mask)
    batch, length = sequence.attention_mask.shape
    device = sequence.attention_mask.device
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        return create_block_mask(fn, batch, None, length, length, device=device)
    if implementation not in DENSE_IMPLEMENTATIONS:
        raise ValueError(f"no mask rendering for attention implementation {implementation!r}")
    allowed = dense_allowed(fn, batch, length, device).unsqueeze(1)
    if implementation == "sdpa":
        return allowed
    blocked = torch.finfo(dtype).min
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, blocked)
