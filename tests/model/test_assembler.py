"""The LLM's input sequence, checked token by token on a batch small enough to write out by hand."""

from __future__ import annotations

import torch

from components.token_metadata import NO_INDEX, TokenKind, VisualTokens
from zoo.data.batch import VideoBatch
from zoo.data.prompting import IGNORE
from zoo.model.assembler import assemble

PAD = 0
T, V, P = int(TokenKind.TEXT), int(TokenKind.TEMPORAL), int(TokenKind.PAD)


def hand_batch() -> tuple[VideoBatch, VisualTokens]:
    """Sample 0: text ids 11 12 13 with the video after 11; sample 1: text 21 22 with the video first.
    Two visual tokens a sample (embeddings 100+k for sample 0, 200+k for sample 1), frames 0 and 1."""
    batch = VideoBatch(
        pixels=torch.zeros(2, 1, 3, 2, 2),
        text_ids=torch.tensor([[11, 12, 13], [21, 22, PAD]]),
        text_labels=torch.tensor([[IGNORE, 12, 13], [IGNORE, 22, IGNORE]]),
        text_lengths=torch.tensor([3, 2]),
        video_position=torch.tensor([1, 0]),
        text_fractions=torch.tensor([[-1.0, 0.25, -1.0], [0.5, -1.0, -1.0]]),
    )
    embeds = torch.tensor([[100.0, 101.0], [200.0, 201.0]]).unsqueeze(-1)
    visual = VisualTokens.build(embeds, TokenKind.TEMPORAL, frame=torch.tensor([0, 1]))
    return batch, visual


def embed_ids(ids, fractions):
    return ids.float().unsqueeze(-1)  # a token's embedding is its id: the layout reads off the sequence


def test_right_padding_lays_out_text_video_text_then_padding():
    batch, visual = hand_batch()
    s = assemble(batch, visual, embed_ids, PAD)
    assert s.inputs_embeds[..., 0].tolist() == [[11, 100, 101, 12, 13], [200, 201, 21, 22, 0]]
    assert s.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert s.input_ids.tolist() == [[11, PAD, PAD, 12, 13], [PAD, PAD, 21, 22, PAD]]
    assert s.labels.tolist() == [[IGNORE, IGNORE, IGNORE, 12, 13], [IGNORE, IGNORE, IGNORE, 22, IGNORE]]
    assert s.kind.tolist() == [[T, V, V, T, T], [V, V, T, T, P]]
    assert s.frame.tolist() == [[NO_INDEX, 0, 1, NO_INDEX, NO_INDEX], [0, 1, NO_INDEX, NO_INDEX, NO_INDEX]]
    assert s.visual_index.tolist() == [[NO_INDEX, 0, 1, NO_INDEX, NO_INDEX], [0, 1, NO_INDEX, NO_INDEX, NO_INDEX]]
    assert s.row.tolist() == s.col.tolist() == [[NO_INDEX] * 5] * 2
    assert s.coordinate_fraction.tolist() == [[-1.0, -1.0, -1.0, 0.25, -1.0], [-1.0, -1.0, 0.5, -1.0, -1.0]]


def test_left_padding_puts_the_padding_first_for_generation():
    batch, visual = hand_batch()
    s = assemble(batch, visual, embed_ids, PAD, padding_side="left")
    assert s.inputs_embeds[..., 0].tolist() == [[11, 100, 101, 12, 13], [0, 200, 201, 21, 22]]
    assert s.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert s.kind.tolist() == [[T, V, V, T, T], [P, V, V, T, T]]
    assert s.input_ids[1].tolist() == [PAD, PAD, PAD, 21, 22]


def test_gradients_reach_the_visual_tokens_and_the_text_embeddings_once_each():
    batch, visual = hand_batch()
    visual.embeds.requires_grad_(True)
    text = torch.zeros(2, 3, 1, requires_grad=True)
    s = assemble(batch, visual, lambda ids, fractions: text, PAD)
    s.inputs_embeds.sum().backward()
    assert visual.embeds.grad[..., 0].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert text.grad[..., 0].tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]  # the text padding feeds nothing
