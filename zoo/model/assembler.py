"""Text ids + visual tokens -> the LLM's input sequence, vectorised over the batch.

Sample b is [text[:p_b] | N visual tokens | text[p_b:len_b]], padded to the longest
sample on the right (training) or on the left (batched generation, so that every
sample's next token comes at the same index).
"""

from __future__ import annotations

from typing import Callable

import torch

from components.token_metadata import NO_INDEX, TokenKind, TokenSequence, VisualTokens
from zoo.data.batch import VideoBatch
from zoo.data.prompting import IGNORE


def assemble(
    batch: VideoBatch,
    visual: VisualTokens,
    embed_text: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    pad_id: int,
    padding_side: str = "right",
) -> TokenSequence:
    device = batch.text_ids.device
    num_visual = visual.num_tokens
    lengths = batch.text_lengths.to(device) + num_visual  # (B,)
    width = int(lengths.max())
    j = torch.arange(width, device=device).unsqueeze(0)  # (1, L)
    if padding_side == "left":
        j = j - (width - lengths).unsqueeze(1)  # index within the sample; negative on the padding
    elif padding_side != "right":
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    real = (j >= 0) & (j < lengths.unsqueeze(1))
    start = batch.video_position.to(device).unsqueeze(1)
    is_visual = real & (j >= start) & (j < start + num_visual)
    is_text = real & ~is_visual
    text_index = torch.where(j < start, j, j - num_visual).clamp(0, batch.text_ids.shape[1] - 1)
    visual_index = (j - start).clamp(0, max(num_visual - 1, 0))

    text_embeds = embed_text(batch.text_ids, batch.text_fractions)
    dtype = text_embeds.dtype
    dim = text_embeds.shape[-1]
    gathered_text = torch.gather(text_embeds, 1, text_index.unsqueeze(-1).expand(-1, -1, dim))
    if num_visual:
        gathered_visual = torch.gather(visual.embeds.to(dtype), 1, visual_index.unsqueeze(-1).expand(-1, -1, dim))
        embeds = torch.where(is_visual.unsqueeze(-1), gathered_visual, gathered_text)
    else:
        embeds = gathered_text
    embeds = embeds * real.unsqueeze(-1).to(dtype)

    def per_token(text_value, visual_values: torch.Tensor | None, pad_value) -> torch.Tensor:
        out = torch.where(is_text, text_value, torch.as_tensor(pad_value, device=device))
        if num_visual and visual_values is not None:
            out = torch.where(is_visual, torch.gather(visual_values, 1, visual_index), out)
        return out

    fraction = None
    if batch.text_fractions is not None:
        fraction = per_token(torch.gather(batch.text_fractions, 1, text_index), None, -1.0)
    text_ids = torch.gather(batch.text_ids, 1, text_index)
    text_labels = torch.gather(batch.text_labels, 1, text_index)
    text_kind = torch.full_like(text_ids, int(TokenKind.TEXT))
    no_index = torch.full_like(text_ids, NO_INDEX)
    return TokenSequence(
        inputs_embeds=embeds,
        attention_mask=real.long(),
        labels=per_token(text_labels, None, IGNORE),
        input_ids=per_token(text_ids, None, pad_id),
        kind=per_token(text_kind, visual.kind, int(TokenKind.PAD)),
        frame=per_token(no_index, visual.frame, NO_INDEX),
        row=per_token(no_index, visual.row, NO_INDEX),
        col=per_token(no_index, visual.col, NO_INDEX),
        visual_index=torch.where(is_visual, visual_index, torch.as_tensor(NO_INDEX, device=device)),
        coordinate_fraction=fraction,
    )
