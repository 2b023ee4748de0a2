"""A rotary embedding that takes several axes of position ids.

Position ids come as (axes, B, L); frequency pair k of the head is rotated by the ids
of axis ``frequency_axes[k]``. One axis read by every pair is stock RoPE, bit for bit;
Harmonic-RoPE reads two axes alternately. The module is a subclass of the LLM's own
rotary class, built from the same config, so its inv_freq is the stock one and any
``from_pretrained`` re-initialisation treats it as the stock module.
"""

from __future__ import annotations

import torch
from torch import nn

_CLASSES: dict[type, type] = {}


class _AxisRotaryForward:
    frequency_axes: tuple[int, ...] = ()

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        if position_ids.dim() == 2:
            position_ids = position_ids.unsqueeze(0)
        axes = torch.as_tensor(self.frequency_axes, device=position_ids.device)
        if int(axes.max()) >= position_ids.shape[0]:
            raise ValueError(
                f"the rotary embedding reads {int(axes.max()) + 1} position axes but got {position_ids.shape[0]}"
            )
        positions = position_ids.permute(1, 2, 0)[..., axes].float()  # (B, L, head_dim / 2)
        freqs = positions * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def axis_rotary_class(stock_class: type) -> type:
    """``Axis<Stock>`` — e.g. AxisLlamaRotaryEmbedding — a subclass of the LLM's rotary class."""
    if stock_class not in _CLASSES:
        _CLASSES[stock_class] = type(f"Axis{stock_class.__name__}", (_AxisRotaryForward, stock_class), {})
    return _CLASSES[stock_class]


def install_axis_rotary(decoder: nn.Module, frequency_axes: list[int]) -> nn.Module:
    """Replace ``decoder.rotary_emb`` (an HF decoder such as LlamaModel) by the multi-axis version."""
    stock = decoder.rotary_emb
    stock_class = next(c for c in type(stock).__mro__ if c.__module__.startswith("transformers."))
    if stock.rope_type not in ("default", "linear", "llama3"):
        # Dynamic scalings recompute inv_freq from the longest position seen, which has no single meaning across axes.
        raise ValueError(f"rope_type {stock.rope_type!r} is not supported by the multi-axis rotary embedding")
    half = stock.inv_freq.shape[0]
    if len(frequency_axes) != half:
        raise ValueError(f"frequency_axes has {len(frequency_axes)} entries for {half} rotary frequencies")
    # Built from the same config, so inv_freq (and any rope scaling) is computed exactly as the stock one.
    module = axis_rotary_class(stock_class)(config=stock.config).to(stock.inv_freq.device)
    module.frequency_axes = tuple(int(a) for a in frequency_axes)
    decoder.rotary_emb = module
    return module
