"""Text ids + visual tokens -> the LLM's input sequence, vectorised over the batch.

Sample b is [text[:p_b] | N visual tokens | text[p_b:len_b]], padded to the longest
sample on the right (training) or on the left (batched generation, so that every
sample's next token comes at the same index).
"""

from __future__ import annotations

import functools
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
    """One gather per output: each position of the sequence indexes a source laid out as [the sample's text |
    its visual tokens | one padding slot]. At tiny sizes the step is milliseconds and every small tensor op
    counts (benchmarks/overhead.py): this takes a third of the ops a where() per field and kind did."""
    device = batch.text_ids.device
    num_visual = visual.num_tokens
    index, real = source_index(batch, num_visual, padding_side, device)

    text_embeds = embed_text(batch.text_ids, batch.text_fractions)
    size, dim = text_embeds.shape[0], text_embeds.shape[-1]
    source = torch.cat([text_embeds, visual.embeds.to(text_embeds.dtype), text_embeds.new_zeros(size, 1, dim)], 1)
    embeds = torch.gather(source, 1, index.unsqueeze(-1).expand(-1, -1, dim))

    metadata = metadata_source(batch, visual, pad_id)
    labels, input_ids, kind, frame, row, col, visual_index = torch.gather(
        metadata, 2, index.unsqueeze(0).expand(len(METADATA), -1, -1)).unbind(0)
    fraction = None
    if batch.text_fractions is not None:
        fractions = torch.cat([batch.text_fractions, batch.text_fractions.new_full((size, num_visual + 1), -1.0)], 1)
        fraction = torch.gather(fractions, 1, index)
    return TokenSequence(inputs_embeds=embeds, attention_mask=real.long(), labels=labels, input_ids=input_ids,
                         kind=kind, frame=frame, row=row, col=col, visual_index=visual_index,
                         coordinate_fraction=fraction)


def source_index(batch: VideoBatch, num_visual: int, padding_side: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position (B, L): its index into [text | visual | padding slot], and whether it is a real token.

    Sample b is [text[:p_b] | N visual tokens | text[p_b:len_b]], padded on the right (training) or on the
    left (batched generation). Both depend only on the text lengths, the video positions and N, so a batch
    laid out like a recent one reads them back (the model's mask cache does the same one step later)."""
    layout = (tuple(batch.text_lengths.tolist()), tuple(batch.video_position.tolist()), batch.text_ids.shape[1],
              num_visual, padding_side, str(device))
    return _source_index(*layout)


@functools.lru_cache(maxsize=64)
def _source_index(text_lengths: tuple, video_position: tuple, text_width: int, num_visual: int, padding_side: str,
                  device: str) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor(text_lengths, device=device) + num_visual  # (B,)
    width = int(lengths.max())
    j = torch.arange(width, device=device).unsqueeze(0)  # (1, L)
    if padding_side == "left":
        j = j - (width - lengths).unsqueeze(1)  # index within the sample; negative on the padding
    elif padding_side != "right":
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    real = (j >= 0) & (j < lengths.unsqueeze(1))
    start = torch.tensor(video_position, device=device).unsqueeze(1)
    after_video = j >= start + num_visual
    index = torch.where(after_video, j - num_visual, j)  # text before and after the video
    index = torch.where((j >= start) & ~after_video, j - start + text_width, index)
    return torch.where(real, index, text_width + num_visual), real


# The integer fields of a TokenSequence, in the order metadata_source stacks them.
METADATA = ("labels", "input_ids", "kind", "frame", "row", "col", "visual_index")


def metadata_source(batch: VideoBatch, visual: VisualTokens, pad_id: int) -> torch.Tensor:
    """(fields, B, text + visual + 1): each field's value for every text token, visual token and the padding."""
    size, text_width = batch.text_ids.shape
    num_visual = visual.num_tokens
    text_fields, token_fields, padding_fields = constant_fields(pad_id, batch.text_ids.device)
    text = torch.cat([torch.stack([batch.text_labels, batch.text_ids]), text_fields.expand(-1, size, text_width)])
    shown = torch.stack([visual.kind, visual.frame, visual.row, visual.col,
                         torch.arange(num_visual, device=text.device).expand(size, -1)])
    tokens = torch.cat([token_fields.expand(-1, size, num_visual), shown])
    return torch.cat([text, tokens, padding_fields.expand(-1, size, 1)], 2)


@functools.lru_cache(maxsize=8)
def constant_fields(pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fields that are constants, per kind of position (built once: a small tensor costs microseconds):
    a text token's kind and indices, a visual token's label and id, and everything of the padding."""
    def column(*values: int) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device).view(-1, 1, 1)

    return (column(int(TokenKind.TEXT), NO_INDEX, NO_INDEX, NO_INDEX, NO_INDEX), column(IGNORE, pad_id),
            column(IGNORE, pad_id, int(TokenKind.PAD), NO_INDEX, NO_INDEX, NO_INDEX, NO_INDEX))
