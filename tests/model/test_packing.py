"""Packing under structured masks (data.packing): the same loss and gradients as the unpacked batch for every
mask and position scheme, nothing attended across samples, position ids restarting with each sample."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import REPO, make_batch
from components.masks.rendering import dense_allowed, render_mask, with_padding
from zoo.config.recipe import load_recipe
from zoo.model.packing import DocumentMask, pack, plan_packs, unpack
from zoo.model.video_llm import build_model

QUESTIONS = ("Which way?", "What does the person in the red shirt do after the second jump, and where?", "Why?")
ANSWERS = ("left", "yes", "The person walks from the left edge of the kitchen to the window, then turns around and "
                          "waves at the camera twice before leaving.")
# (recipe, overrides): every mask (causal, frame_block, DST) and every position scheme (RoPE, Harmonic-RoPE, LAPE)
SCHEMES = {
    "causal + rope": ("baseline", {}),
    "frame_block + rope": ("baseline", {"model.mask": "frame_block"}),
    "dst + harmonic_rope": ("mash_vlm", {}),
    "dst + rope": ("mash_vlm", {"model.position": "rope"}),
    "causal + lape (llava_st)": ("llava_st", {"train.stages": []}),
    "causal + rope, st_llm masking + mvm": ("st_llm", {}),
}
BUDGET = 2048  # room for all three samples in one row
TOLERANCE = dict(rtol=1e-4, atol=1e-5)  # float32: packed rows change only the order of sums in attention


def model_for(name: str, overrides: dict, packing: bool):
    recipe = load_recipe(REPO / "recipes" / "tiny" / f"{name}.yaml",
                         [f"{k}={v}" for k, v in {**overrides, "data.packing": packing, "data.pack_tokens": BUDGET}.items()])
    torch.manual_seed(0)
    return build_model(recipe).train()


def loss_and_grads(model, batch):
    torch.manual_seed(1)  # ST-LLM's masking draws the same tokens both times
    model.zero_grad()
    output = model(batch)
    output.loss.backward()
    return output, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_packed_batch_gives_the_loss_and_gradients_of_the_unpacked_one(scheme):
    name, overrides = SCHEMES[scheme]
    unpacked, packed = model_for(name, overrides, False), model_for(name, overrides, True)
    packed.load_state_dict(unpacked.state_dict())
    batch = make_batch(unpacked, QUESTIONS, ANSWERS, frames=unpacked.recipe.data.video.frames)
    plain, plain_grads = loss_and_grads(unpacked, batch)
    tight, tight_grads = loss_and_grads(packed, batch)
    for term, value in plain.losses.items():
        torch.testing.assert_close(tight.losses[term], value, **TOLERANCE)
    assert plain_grads.keys() == tight_grads.keys() and plain_grads
    for parameter, grad in plain_grads.items():
        torch.testing.assert_close(tight_grads[parameter], grad, **TOLERANCE, msg=lambda m: f"{parameter}: {m}")
    real = plain.sequence.attention_mask.bool()
    torch.testing.assert_close(tight.hidden[real], plain.hidden[real], **TOLERANCE)
    assert plan_packs([int(n) for n in plain.sequence.lengths()], BUDGET) == [[0, 1, 2]]  # one row: packing happened


def packed_example(name: str = "mash_vlm", budget: int | None = None):
    model = model_for(name, {}, True)
    batch = make_batch(model, QUESTIONS, ANSWERS, frames=model.recipe.data.video.frames)
    with torch.no_grad():
        sequence = model.assemble(batch, model.encode_video(batch.pixels, batch.instruction))
    positions = model.position.position_ids(sequence)
    return model, sequence, positions, pack(sequence, positions, budget or BUDGET, model.pad_id)


def test_no_token_attends_across_samples_and_each_sample_keeps_its_own_mask():
    model, sequence, _, packed = packed_example()
    rows, width = packed.document.shape
    assert rows < sequence.batch_size  # the two short samples share a row
    fn = with_padding(DocumentMask(model.mask, packed.document).mask_function(packed.sequence),
                      packed.sequence.attention_mask)
    allowed = dense_allowed(fn, rows, width, "cpu")
    document = packed.document
    across = (document.unsqueeze(2) != document.unsqueeze(1)) & (document.unsqueeze(2) >= 0)
    diagonal = torch.eye(width, dtype=torch.bool).expand(rows, -1, -1)
    assert not (allowed & across & ~diagonal).any()
    # Within a sample the packed mask is the sample's own DST mask, shifted to where the sample sits.
    own = dense_allowed(with_padding(model.mask.mask_function(sequence), sequence.attention_mask),
                        sequence.batch_size, sequence.length, "cpu")
    for row in range(rows):
        for sample in document[row].unique().tolist():
            if sample < 0:
                continue
            at = (document[row] == sample).nonzero().squeeze(1)
            n = len(at)
            assert torch.equal(allowed[row][at][:, at], own[sample, :n, :n])


def test_position_ids_restart_with_each_sample_for_harmonic_rope():
    _, sequence, positions, packed = packed_example()
    for row in range(packed.document.shape[0]):
        for sample in packed.document[row].unique().tolist():
            if sample < 0:
                continue
            at = (packed.document[row] == sample).nonzero().squeeze(1)
            n = int(sequence.lengths()[sample])
            assert torch.equal(packed.position_ids[:, row, at], positions[:, sample, :n])
            assert int(packed.position_ids[-1, row, at[0]]) == 0  # the sequential axis starts again at 0


def test_a_change_in_one_sample_leaves_the_others_hidden_states_unchanged():
    model, sequence, positions, packed = packed_example("baseline")
    other = packed.sequence.replace(inputs_embeds=packed.sequence.inputs_embeds.clone())
    first_row = packed.document[0]
    neighbour = int(first_row[first_row >= 0][-1])  # the last sample of the first row
    other.inputs_embeds[0, first_row == neighbour] += 1.0
    mask = DocumentMask(model.mask, packed.document)
    with torch.no_grad():
        hidden = [model.llm(s.inputs_embeds, render_mask(mask, s, "sdpa", torch.float32), packed.position_ids)[0]
                  for s in (packed.sequence, other)]
    others = (first_row >= 0) & (first_row != neighbour)
    assert others.any()
    torch.testing.assert_close(hidden[0][0, others], hidden[1][0, others], rtol=0, atol=0)
    assert not torch.allclose(hidden[0][0, first_row == neighbour], hidden[1][0, first_row == neighbour])


def test_packing_plans_first_fit_by_decreasing_length_and_unpacks_in_place():
    assert plan_packs([5, 3, 9, 2, 4], budget=9) == [[2], [0, 4], [1, 3]]
    assert plan_packs([12, 3], budget=9) == [[0], [1]]  # longer than the budget: a row of its own
    _, sequence, _, packed = packed_example("baseline")
    hidden = sequence.inputs_embeds
    repacked = pack(sequence, torch.zeros(1, *sequence.kind.shape, dtype=torch.long), BUDGET, 0)
    real = sequence.attention_mask.bool()
    restored = unpack(repacked.sequence.inputs_embeds, repacked, sequence.batch_size, sequence.length)
    assert torch.equal(restored[real], hidden[real]) and not restored[~real].any()
    assert 0 <= packed.pad_share < (~real).float().mean()
