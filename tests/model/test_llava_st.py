"""LLaVA-ST: the packer's point-to-region attention, LAPE's tables and coordinates, progressive stages."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from components.base import BuildContext
from components.compressors.llava_st_packer import SpatialTemporalPacker
from components.positions.lape import LAPE, CoordinateCodec
from components.token_metadata import FrameFeatures, TokenKind
from tests.helpers import tiny_recipe
from tests.helpers import make_batch
from zoo.data.grounding import GroundingStyle, parse_span
from zoo.data.batch import VideoSample, collate
from zoo.model.video_llm import build_model
from zoo.data.prompting import encode
from zoo.config.recipe import load_recipe, recipe_from_dict
from zoo.training.stages import build_stage_model, plan_stages, stage_recipe, write_handoff

REPO_TINY = "recipes/tiny/llava_st.yaml"


def packer(grid=(27, 27), dim=8, **options) -> SpatialTemporalPacker:
    config = SpatialTemporalPacker.Config(**{"attention_dim": 16, "heads": 2, **options})
    torch.manual_seed(0)
    return SpatialTemporalPacker(config, BuildContext(frames=100, llm_hidden_size=dim, grid=grid)).eval()


def test_a_packer_query_attends_only_to_its_own_region():
    stp = packer()
    x = torch.randn(1, 27, 27, 8)
    with torch.no_grad():
        base = stp.pack_space(x, 9, stp.spatial)  # (1, 9, 9, D); region (i, j) covers rows 3i..3i+2, cols 3j..3j+2
        inside = x.clone()
        inside[0, 4, 7] += 5.0  # row 4, col 7 lies in region (1, 2)
        moved = stp.pack_space(inside, 9, stp.spatial)
    changed = (moved - base).abs().amax(dim=-1)[0] > 1e-6
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(changed, expected)


def test_slow_stream_queries_see_only_their_group_of_frames():
    stp = packer(grid=(4, 4), k1=2, k2=1, sigma=4)
    x = torch.randn(1, 8, 2, 2, 8)
    with torch.no_grad():
        base, first = stp.pack_time(x, 4, stp.slow)
        moved_input = x.clone()
        moved_input[0, 5, 1, 0] += 5.0  # frame 5 is in group 2 (frames 4, 5)
        moved, _ = stp.pack_time(moved_input, 4, stp.slow)
    changed = (moved - base).abs().amax(dim=-1)[0] > 1e-6
    assert first.tolist() == [0, 2, 4, 6]
    assert changed.nonzero().tolist() == [[2, 1, 0]]


@pytest.mark.parametrize("frames, fast, slow", [(100, 900, 1620), (16, 144, 1296), (30, 270, 1620)])
def test_token_layout_for_100_and_16_frames(frames, fast, slow):
    stp = packer()
    features = FrameFeatures(torch.randn(1, frames, 729, 8), None, (27, 27))
    with torch.no_grad():
        out = stp(features)
    assert stp.num_tokens(frames, 729, (27, 27)) == out.num_tokens == fast + slow
    kinds = out.kind[0]
    assert int((kinds == TokenKind.FAST).sum()) == fast and int((kinds == TokenKind.SLOW).sum()) == slow
    assert (torch.nonzero(kinds == TokenKind.FAST).max() < torch.nonzero(kinds == TokenKind.SLOW).min())  # fast then slow
    assert out.frame[0][kinds == TokenKind.FAST].tolist() == [t for t in range(frames) for _ in range(9)]
    image = stp(FrameFeatures(torch.randn(1, 1, 729, 8), None, (27, 27)))
    assert image.num_tokens == 729  # an image skips the packer


def test_without_attention_the_packer_averages_with_the_same_layout():
    stp = packer(grid=(4, 4), k1=2, k2=1, sigma=2, attention=False)
    x = torch.arange(2 * 16, dtype=torch.float).view(1, 2, 16, 1).expand(1, 2, 16, 8)
    out = stp(FrameFeatures(x.contiguous(), None, (4, 4)))
    assert out.num_tokens == 2 * 1 + 2 * 4
    assert torch.allclose(out.embeds[0, 0], x[0, 0].mean(dim=0))  # fast token of frame 0 = the frame's mean
    grid0 = x[0, 0].view(4, 4, 8)
    assert torch.allclose(out.embeds[0, 2], grid0[:2, :2].mean(dim=(0, 1)))  # slow token (group 0, cell 0,0)


def lape(bins=5, dim=4, **options) -> LAPE:
    torch.manual_seed(0)
    return LAPE(LAPE.Config(bins=bins, **options), BuildContext(frames=8, llm_hidden_size=dim, grid=(4, 4)))


def test_lape_resizes_its_tables_as_the_official_code_by_default():
    """F.interpolate's default (align_corners=False), as the code: output i samples row (i + 0.5) * M / size - 0.5."""
    scheme = lape()
    mean = (scheme.input_table + scheme.output_table) / 2
    with torch.no_grad():
        doubled = scheme.axis_embedding(1, 10)  # samples rows -0.25 (clamped to 0), 0.25, 0.75, ..., 4.25 (clamped to 4)
    assert torch.allclose(doubled[0], mean[1][0], atol=1e-6) and torch.allclose(doubled[9], mean[1][4], atol=1e-6)
    assert torch.allclose(doubled[1], 0.75 * mean[1][0] + 0.25 * mean[1][1], atol=1e-6)
    assert torch.allclose(doubled[2], 0.25 * mean[1][0] + 0.75 * mean[1][1], atol=1e-6)


def test_lape_embedding_is_the_mean_of_the_two_rows_and_interpolates_between_them():
    scheme = lape(align_corners=True)  # the first and last outputs pinned to the first and last rows
    mean = (scheme.input_table + scheme.output_table) / 2
    with torch.no_grad():
        exact = scheme.axis_embedding(1, 5)
        halfway = scheme.axis_embedding(2, 9)  # points at 0, 0.5, 1, ... bins apart
    assert torch.equal(exact, mean[1])
    assert torch.allclose(halfway[0::2], mean[2], atol=1e-6)
    assert torch.allclose(halfway[1::2], (mean[2][:-1] + mean[2][1:]) / 2, atol=1e-6)
    features = FrameFeatures(torch.zeros(1, 5, 16, 4), None, (4, 4))
    with torch.no_grad():
        added = scheme.add_visual_embedding(features).patches[0]
        rows, cols, time = scheme.axis_embedding(1, 4), scheme.axis_embedding(2, 4), scheme.axis_embedding(0, 5)
    assert torch.allclose(added[3, 2 * 4 + 1], time[3] + rows[2] + cols[1], atol=1e-6)  # T[t] + H[row] + W[col]


def test_coordinates_round_trip_within_one_bin():
    bins = 100
    style = GroundingStyle("coordinate_tokens", bins)
    codec = CoordinateCodec(bins)
    rng = random.Random(0)
    for _ in range(200):
        start, end = sorted(rng.random() for _ in range(2))
        text, coordinates, _ = codec.rewrite(style.span(start, end))
        # What a model trained on the two-hot target emits: the heavier of the two neighbouring tokens.
        emitted = text
        for a, b, fraction in coordinates:
            token = text[a:b]
            index = int(token[2:-1]) + (1 if fraction >= 0.5 else 0)
            emitted = emitted.replace(token, f"<t{index}>", 1)
        decoded = parse_span(emitted, bins)
        assert abs(decoded[0] - start) <= 1 / (bins - 1) and abs(decoded[1] - end) <= 1 / (bins - 1)


def lape_model():
    torch.manual_seed(0)
    data = tiny_recipe(encoder="siglip", frames=4, position={"name": "lape", "bins": 10},
                       compressor={"name": "llava_st_packer", "k1": 2, "k2": 1, "sigma": 2, "attention_dim": 16, "heads": 2})
    return build_model(recipe_from_dict(data))


def test_a_coordinate_is_a_blended_input_and_a_two_hot_target(monkeypatch):
    model = lape_model().eval()
    conversation = encode(model.tokenizer, model.recipe.prompt,
                          [{"from": "human", "value": "When?"}, {"from": "gpt", "value": "<t3.30>"}],
                          codec=model.position.text_codec)
    index = next(i for i, f in enumerate(conversation.fractions) if f >= 0)
    token = conversation.ids[index]
    assert model.tokenizer.decode([token]) == "<t3>" and conversation.fractions[index] == pytest.approx(0.3)
    batch = collate([VideoSample(torch.randn(4, 3, 32, 32), conversation)], model.pad_id)
    with torch.no_grad():
        embeds = model.embed_text(batch.text_ids, batch.text_fractions)
    table = model.position.input_table[0]
    assert torch.allclose(embeds[0, index], 0.7 * table[3] + 0.3 * table[4], atol=1e-6)

    # The soft-label loss, as a function of where the model puts its probability, is lowest at (<t3>, <t4>).
    target_logit = model.position.text_vocab + 3
    sequence = model(batch).sequence
    hidden = torch.zeros(1, sequence.length, 8)
    losses = {}
    for pair in range(8):
        def peaked(h, pair=pair):
            probs = torch.full((h.shape[0], model.position.text_vocab + 30), 1e-6)
            probs[:, model.position.text_vocab + pair] = 0.7
            probs[:, model.position.text_vocab + pair + 1] = 0.3
            return probs.log()
        monkeypatch.setattr(model, "logits", peaked)
        labels = torch.full_like(sequence.labels, -100)
        position = int(torch.nonzero(sequence.coordinate_fraction[0] >= 0)[0])
        labels[0, position] = target_logit
        losses[pair] = float(model.language_loss(hidden, labels, sequence.coordinate_fraction))
    assert min(losses, key=losses.get) == 3


def test_lape_works_beside_harmonic_rope():
    data = tiny_recipe(frames=8, compressor="mash_pooling", mask="dst",
                       position={"name": "lape", "bins": 10, "sequence": "harmonic_rope"})
    model = build_model(recipe_from_dict(data))
    out = model(make_batch(model, frames=8))
    out.loss.backward()
    assert model.position.num_axes == 2 and model.position.input_table.grad is not None


def trained_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def named_by(model, patterns):
    import fnmatch

    return {n for n, _ in model.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def test_each_stage_trains_exactly_what_it_names(tmp_path):
    recipe = load_recipe(REPO_TINY)
    stages = recipe.train.stages
    first = build_stage_model(stage_recipe(recipe, stages[0]), stages[0], None)
    assert trained_names(first) == named_by(first, stages[0].trainable)
    assert not any("lora_" in n or n.startswith(("llm.", "position.")) for n in trained_names(first))
    assert first.visual_position is None  # LAPE zeroed on the visual side in stage 1
    handoff = write_handoff(first, tmp_path / "s1")

    second = build_stage_model(stage_recipe(recipe, stages[1]), stages[1], handoff)
    trained = trained_names(second)
    assert trained == named_by(second, stages[1].trainable)
    assert {"position.input_table", "position.output_table"} <= trained
    assert any("lora_A" in n for n in trained)
    assert second.visual_position is not None
    with torch.no_grad():  # pretend stage 2 trained its LoRA
        for name, param in second.named_parameters():
            if "lora_B" in name:
                param.normal_()
    merged_reference = {k: v.clone() for k, v in _merged_llm_weights(second).items()}
    handoff = write_handoff(second, tmp_path / "s2")

    third = build_stage_model(stage_recipe(recipe, stages[2]), stages[2], handoff)
    assert trained_names(third) == named_by(third, stages[2].trainable)
    lora_b = [p for n, p in third.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.detach().abs().sum()) == 0 for p in lora_b)  # fresh adapters
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in third.llm.named_parameters()
            if "lora_" not in n}
    for name, weight in merged_reference.items():
        assert torch.allclose(base[name], weight), name  # stage 3 starts from stage 2 with its LoRA merged in


def test_every_stage_model_carries_the_staged_recipes_fingerprint_its_run_is_named_by():
    recipe = load_recipe(REPO_TINY)
    stages = plan_stages(recipe)
    model = stages[0].build_model(None)
    assert model.recipe_fingerprint == recipe.fingerprint() != stages[0].recipe.fingerprint()


def test_a_stage_that_names_a_frozen_encoder_trains_it():
    # The paper-scale encoder is frozen; a stage listing encoder.* must still get gradients there.
    recipe = load_recipe(REPO_TINY, ["model.encoder.frozen=true"])
    stages = recipe.train.stages
    named = build_stage_model(stage_recipe(recipe, stages[0]), stages[0], None)
    named.train()
    named(make_batch(named, frames=8)).loss.backward()
    # Every encoder weight on the path to the selected layer (the post-norm lies after it).
    grads = {n: p.grad for n, p in named.named_parameters() if n.startswith("encoder.") and "post_layernorm" not in n}
    assert grads and all(g is not None and float(g.abs().sum()) > 0 for g in grads.values())
    assert named.encoder.model.training  # dropout and the like behave as in training

    unnamed = dataclasses.replace(stages[0], trainable=["compressor.*"])
    kept = build_stage_model(stage_recipe(recipe, unnamed), unnamed, None)
    kept.train()
    kept(make_batch(kept, frames=8)).loss.backward()
    assert all(p.grad is None for n, p in kept.named_parameters() if n.startswith("encoder."))
    assert kept.encoder.frozen and not kept.encoder.model.training


def _merged_llm_weights(model):
    import copy

    llm = copy.deepcopy(model.llm)
    llm.merge_lora()
    return {n: p for n, p in llm.named_parameters() if ".layers.0.self_attn.q_proj" in n}


def test_a_stage_naming_no_parameter_is_refused():
    from zoo.config.recipe import StageSpec
    from components.config import RecipeError

    recipe = load_recipe(REPO_TINY)
    stage = StageSpec(name="broken", trainable=["packer.*"])
    with pytest.raises(RecipeError, match="'packer.\\*' matches no parameter"):
        build_stage_model(stage_recipe(recipe, stage), stage, None)


def test_a_staged_run_keeps_the_first_stages_import_table_to_its_final_model(tmp_path):
    """Later stages start from the hand-off, not from model.init_from: the table must travel with it."""
    source = build_model(load_recipe(REPO_TINY))
    source.save_pretrained(tmp_path / "source")
    recipe = load_recipe(REPO_TINY, [f"model.init_from=[{tmp_path / 'source'}]"])
    stages = recipe.train.stages
    model, handoff = None, None
    for index, stage in enumerate(stages):
        model = build_stage_model(stage_recipe(recipe, stage), stage, handoff)
        assert (getattr(model, "import_report", None) is not None) == (index == 0)
        handoff = write_handoff(model, tmp_path / f"s{index}")
    model.save_pretrained(tmp_path / "final")
    record = json.loads((tmp_path / "final" / "stzoo.json").read_text())["init_from"]
    assert record["files"] == [str(tmp_path / "source")]
    rows = {row["component"]: row for row in record["coverage"]}
    assert rows["compressor"]["from_files"] == rows["compressor"]["tensors"] > 0 and rows["llm"]["random"] == 0
