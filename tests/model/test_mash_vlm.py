"""MASH-VLM against the paper: token builder, Harmonic-RoPE ids (Eq. 4-6), DST and frame-block masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.base import BuildContext
from components.compressors.mash_pooling import MASHPooling
from components.masks.dst import DSTMask
from components.masks.frame_block import FrameBlockMask
from components.masks.bidirectional import BidirectionalMask
from components.masks.rendering import dense_allowed, render_mask
from components.positions.harmonic_rope import HarmonicRoPE
from components.token_metadata import FrameFeatures, TokenKind, TokenSequence
from tests.helpers import make_batch, prompt_batch, tiny_recipe
from zoo.model.video_llm import build_model
from zoo.config.recipe import recipe_from_dict
from components.config import RecipeError

T_, S_, X_ = TokenKind.TEMPORAL, TokenKind.SPATIAL, TokenKind.TEXT


def mash_recipe(llm: str = "llama", **overrides):
    model = {"compressor": "mash_pooling", "mask": "dst", "position": "harmonic_rope", **overrides}
    return recipe_from_dict(tiny_recipe(frames=8, llm=llm, **model))


def sequence_of(kinds: list[TokenKind], pad_left: int = 0) -> TokenSequence:
    length = len(kinds) + pad_left
    kind = torch.tensor([[TokenKind.PAD] * pad_left + [int(k) for k in kinds]])
    mask = (kind != TokenKind.PAD).long()
    zeros = torch.zeros(1, length, dtype=torch.long)
    frame = torch.full((1, length), -1)
    return TokenSequence(torch.zeros(1, length, 4), mask, zeros - 100, zeros, kind, frame, frame.clone(), frame.clone(), frame.clone())


# --- the token builder --------------------------------------------------------------------------------


def test_spatial_and_temporal_tokens_match_a_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 8, 16, 3)).astype(np.float32)  # T=8 frames, 4x4 grid, D=3
    cls = rng.normal(size=(1, 8, 3)).astype(np.float32)
    compressor = MASHPooling(MASHPooling.Config(), BuildContext(frames=8, grid=(4, 4), encoder_has_cls=True))
    out = compressor(FrameFeatures(torch.from_numpy(x), torch.from_numpy(cls), (4, 4)))
    temporal = out.kind[0] == T_
    spatial = out.kind[0] == S_
    assert int(temporal.sum()) == 3 * 8 - 1 and int(spatial.sum()) == 4 * 2 * 2  # M = 3T-1, N = 4 segments x 2x2
    assert torch.nonzero(temporal).max() < torch.nonzero(spatial).min()  # temporal first, as [z_temporal, z_spatial]

    expected_temporal = np.concatenate([
        cls[0],                                   # T CLS tokens
        x[0].mean(axis=1),                        # T spatially pooled tokens
        (x[0, 1:] - x[0, :-1]).mean(axis=1),      # T-1 spatially pooled frame differences
    ])
    assert np.allclose(out.embeds[0][temporal].numpy(), expected_temporal, atol=1e-6)
    assert out.frame[0][temporal].tolist() == list(range(8)) + list(range(8)) + list(range(1, 8))

    grid = x[0].reshape(8, 4, 4, 3)
    expected_spatial = []
    for segment in range(4):  # frames (0,1), (2,3), (4,5), (6,7)
        mean = grid[2 * segment : 2 * segment + 2].mean(axis=0)
        for r in range(2):
            for c in range(2):
                expected_spatial.append(mean[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean(axis=(0, 1)))
    assert np.allclose(out.embeds[0][spatial].numpy(), np.array(expected_spatial), atol=1e-6)
    assert out.row[0][spatial].tolist() == [0, 0, 1, 1] * 4 and out.col[0][spatial].tolist() == [0, 1, 0, 1] * 4
    assert out.frame[0][spatial].tolist() == [0] * 4 + [2] * 4 + [4] * 4 + [6] * 4


def test_paper_scale_token_count_is_576_plus_47():
    compressor = MASHPooling(MASHPooling.Config(), BuildContext(frames=16, grid=(24, 24), encoder_has_cls=True))
    assert compressor.num_tokens(16, 576, (24, 24)) == 576 + 47


def test_feature_options_and_inference_tokens():
    ctx = BuildContext(frames=8, grid=(4, 4), encoder_has_cls=True)
    features = FrameFeatures(torch.randn(2, 8, 16, 3), torch.randn(2, 8, 3), (4, 4))
    pooled_only = MASHPooling(MASHPooling.Config(spatial_tokens=False, temporal_features=["pooled"]), ctx)
    assert pooled_only(features).num_tokens == 8 and pooled_only.emitted_kinds == {T_}
    spatial_at_eval = MASHPooling(MASHPooling.Config(inference_tokens="spatial"), ctx)
    assert spatial_at_eval.train()(features).num_tokens == 23 + 16  # training always sees both kinds
    evaluated = spatial_at_eval.eval()(features)
    assert evaluated.num_tokens == 16 and (evaluated.kind == S_).all()
    assert spatial_at_eval.num_tokens(8, 16, (4, 4)) == 16
    with pytest.raises(RecipeError, match="no CLS token"):
        MASHPooling(MASHPooling.Config(), BuildContext(frames=8, grid=(4, 4), encoder_has_cls=False))


# --- Harmonic-RoPE --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix, m, n, text", [(0, 2, 4, 3), (3, 2, 4, 3), (2, 5, 5, 1), (1, 4, 2, 2)])
def test_harmonic_position_ids_follow_equations_4_and_5(prefix, m, n, text):
    kinds = [X_] * prefix + [T_] * m + [S_] * n + [X_] * text
    ids = HarmonicRoPE(HarmonicRoPE.Config()).position_ids(sequence_of(kinds))
    balanced, distinct = ids[0, 0].tolist(), ids[1, 0].tolist()
    assert distinct == list(range(prefix + m + n + text))  # Eq. 4 (0-based)
    span = max(m, n)  # the paper assumes N >= M, so span = N
    # Eq. 5, 1-based ids p shifted to 0-based (p - 1) and offset by the text prefix.
    p_temporal = [span - m + i for i in range(1, m + 1)]
    p_spatial = [span - n + i for i in range(1, n + 1)]
    p_text = [span + i for i in range(1, text + 1)]
    expected = list(range(prefix)) + [prefix + p - 1 for p in p_temporal + p_spatial + p_text]
    assert balanced == expected
    if n >= m:  # the paper's case: the last temporal and last spatial ids coincide at N (1-based)
        assert balanced[prefix + m - 1] == balanced[prefix + m + n - 1] == prefix + n - 1


def test_harmonic_ids_ignore_left_padding_and_pair_frequencies_alternately():
    kinds = [X_] * 2 + [T_] * 2 + [S_] * 3 + [X_] * 2
    scheme = HarmonicRoPE(HarmonicRoPE.Config())
    plain = scheme.position_ids(sequence_of(kinds))
    padded = scheme.position_ids(sequence_of(kinds, pad_left=3))
    assert torch.equal(padded[:, :, 3:], plain)
    assert scheme.frequency_axes(8) == [0, 1, 0, 1]  # even pairs balanced (axis 0), odd pairs distinct (axis 1)
    assert HarmonicRoPE(HarmonicRoPE.Config(ids="distinct_only")).frequency_axes(8) == [1, 1, 1, 1]
    assert HarmonicRoPE(HarmonicRoPE.Config(ids="balanced_only")).frequency_axes(8) == [0, 0, 0, 0]


@pytest.mark.parametrize("llm", ["llama", "qwen2"])
def test_harmonic_rope_with_equal_axes_is_stock_rope_exactly(llm):
    torch.manual_seed(0)
    harmonic = build_model(mash_recipe(llm=llm)).eval()
    torch.manual_seed(0)
    stock = build_model(mash_recipe(llm=llm, position="rope", mask="causal")).eval()
    stock.load_state_dict(harmonic.state_dict())
    batch = make_batch(harmonic, frames=8)
    with torch.no_grad():
        sequence = harmonic.assemble(batch, harmonic.encode_video(batch.pixels))
        distinct = stock.position.position_ids(sequence)  # (1, B, L)
        mask = sequence.attention_mask
        h_equal, _ = harmonic.llm(sequence.inputs_embeds, mask, distinct.expand(2, -1, -1))
        h_stock, _ = stock.llm(sequence.inputs_embeds, mask, distinct)
        h_harmonic, _ = harmonic.llm(sequence.inputs_embeds, mask, harmonic.position.position_ids(sequence))
    assert torch.equal(h_equal, h_stock)
    assert not torch.allclose(h_harmonic, h_stock)  # the balanced ids do change something


# --- masks --------------------------------------------------------------------------------


def rendered(scheme, kinds, frames=None):
    sequence = sequence_of(kinds)
    if frames is not None:
        sequence = sequence.replace(frame=torch.tensor([frames]))
    return dense_allowed(scheme.mask_function(sequence), 1, len(kinds), "cpu")[0].int().tolist()


def test_dst_mask_matches_the_hand_written_matrix():
    # [text | T1 T2 | S1 S2 S3 | text text]
    kinds = [X_, T_, T_, S_, S_, S_, X_, X_]
    expected = [
        # x  T1 T2 S1 S2 S3 x  x
        [1, 0, 0, 0, 0, 0, 0, 0],  # text before the video: causal
        [1, 1, 0, 0, 0, 0, 0, 0],  # T1: text before, itself
        [1, 1, 1, 0, 0, 0, 0, 0],  # T2: causal among temporal tokens, no spatial
        [1, 0, 0, 1, 1, 1, 0, 0],  # S1: all spatial tokens (bidirectional), no temporal
        [1, 0, 0, 1, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],  # text after: causal over everything
        [1, 1, 1, 1, 1, 1, 1, 1],
    ]
    assert rendered(DSTMask(DSTMask.Config()), kinds) == expected


def test_dst_options_reproduce_tables_5_and_6():
    kinds = [X_, T_, T_, S_, S_, X_]
    # Table 5 setting with both kinds bidirectional: temporal queries see later temporal keys but not spatial ones;
    # spatial queries see the temporal keys before them (temporal_to_spatial: allow).
    table5 = DSTMask(DSTMask.Config(temporal="bidirectional", spatial="bidirectional", temporal_to_spatial="allow"))
    assert rendered(table5, kinds) == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ]
    # Table 6, spatial keys allowed for temporal queries: they see every spatial token, even later ones.
    allow = DSTMask(DSTMask.Config(spatial_to_temporal="allow"))
    assert rendered(allow, kinds)[1] == [1, 1, 0, 1, 1, 0]
    causal_spatial = DSTMask(DSTMask.Config(spatial="causal"))
    assert rendered(causal_spatial, kinds)[3] == [1, 0, 0, 1, 0, 0]


def test_frame_block_mask_matches_the_hand_written_matrix():
    # [text | f0 f0 | f1 f1 | text]: visual tokens see their own frame both ways and earlier frames.
    kinds = [X_, TokenKind.FRAME, TokenKind.FRAME, TokenKind.FRAME, TokenKind.FRAME, X_]
    frames = [-1, 0, 0, 1, 1, -1]
    assert rendered(FrameBlockMask(), kinds, frames) == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ]


def test_the_bidirectional_mask_lets_text_see_later_tokens_but_never_padding():
    # The calibration's broken mask (experiments/calibration.yaml): the question sees the answer after it.
    kinds = [X_, TokenKind.FRAME, X_, X_]
    assert rendered(BidirectionalMask(), kinds) == [[1] * 4] * 4
    sequence = sequence_of(kinds + [TokenKind.PAD])  # its attention mask is 0 at the padding
    allowed = render_mask(BidirectionalMask(), sequence, "sdpa", torch.float32)[0, 0].int().tolist()
    assert [row[:4] for row in allowed] == [[1] * 4] * 5 and [row[4] for row in allowed] == [0, 0, 0, 0, 1]


def test_padding_keys_are_never_attended_and_padding_rows_are_not_empty():
    sequence = sequence_of([X_, T_, S_, X_], pad_left=2)
    allowed = render_mask(DSTMask(DSTMask.Config()), sequence, "sdpa", torch.float32)[0, 0]
    assert not allowed[2:, :2].any()  # real queries never see the padding keys
    assert allowed.any(dim=1).all()
    additive = render_mask(DSTMask(DSTMask.Config()), sequence, "eager", torch.float32)[0, 0]
    assert torch.equal(additive == 0, allowed)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_through_the_llm_spatial_and_temporal_tokens_never_see_each_other(implementation):
    torch.manual_seed(0)
    data = tiny_recipe(frames=8, compressor="mash_pooling", mask="dst", position="harmonic_rope")
    data["model"]["llm"]["attn_implementation"] = implementation
    model = build_model(recipe_from_dict(data)).eval()
    batch = make_batch(model, frames=8)
    with torch.no_grad():
        sequence = model.assemble(batch, model.encode_video(batch.pixels))
        base, _ = model.run_llm(sequence)
    kind = sequence.kind[0]
    real = sequence.attention_mask[0].bool()
    after = real & (torch.arange(sequence.length) > int(torch.nonzero(sequence.is_visual[0])[-1]))
    for perturbed, other in ((T_, S_), (S_, T_)):
        target = int(torch.nonzero(kind == perturbed)[0])
        embeds = sequence.inputs_embeds.clone()
        embeds[0, target] += 3.0
        with torch.no_grad():
            moved, _ = model.run_llm(sequence.replace(inputs_embeds=embeds))
        changed = (moved[0] - base[0]).abs().amax(dim=-1) > 1e-5
        assert not changed[kind == other].any(), f"a {other.name} token saw the perturbed {perturbed.name} token"
        assert changed[after].all(), "text after the video sees both kinds"
        assert changed[kind == perturbed].any()


@pytest.mark.parametrize("llm", ["llama", "qwen2"])
def test_generate_with_cache_equals_recompute_under_dst_and_harmonic_rope(llm):
    torch.manual_seed(3)
    model = build_model(mash_recipe(llm=llm)).eval()
    batch = prompt_batch(model, ["What is happening?", "Where?"], frames=8)
    cached = model.generate(batch, max_new_tokens=10)
    assert cached.token_ids == model.generate(batch, max_new_tokens=10, use_cache=False).token_ids


# --- build-time checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, words", [
    ({"mask": "dst"}, ["model.mask", "mask 'dst' cannot be used with compressor 'all_tokens'", "spatial and temporal", "frame tokens"]),
    ({"position": "harmonic_rope"}, ["model.position", "'harmonic_rope'", "compressor 'all_tokens'"]),
    ({"compressor": {"name": "mean_pool"}, "mask": "frame_block"}, ["mask 'frame_block'", "compressor 'mean_pool'", "frame index"]),
    ({"compressor": {"name": "mash_pooling", "temporal_features": []}, "mask": "dst"}, ["mask 'dst'", "temporal tokens"]),
])
def test_impossible_mixes_fail_at_build_naming_both_components(overrides, words):
    with pytest.raises(RecipeError) as error:
        build_model(recipe_from_dict(tiny_recipe(frames=8, **overrides)))
    for word in words:
        assert word in str(error.value), str(error.value)


def test_dst_and_harmonic_rope_take_other_kinds_in_each_role():
    F_, S_low = TokenKind.FAST, TokenKind.SLOW
    mapped = DSTMask(DSTMask.Config(spatial_kinds=["slow"], temporal_kinds=["fast"]))
    standard = DSTMask(DSTMask.Config())
    assert rendered(mapped, [X_, F_, F_, S_low, S_low, S_low, X_, X_]) == rendered(standard, [X_, T_, T_, S_, S_, S_, X_, X_])
    scheme = HarmonicRoPE(HarmonicRoPE.Config(spatial_kinds=["slow"], temporal_kinds=["fast"]))
    ids = scheme.position_ids(sequence_of([X_, F_, F_, S_low, S_low, S_low, S_low, X_]))
    assert ids[0, 0].tolist() == [0, 3, 4, 1, 2, 3, 4, 5]  # fast right-aligned to the slow span, as temporal to spatial
    with pytest.raises(RecipeError, match="no kind twice"):
        DSTMask(DSTMask.Config(spatial_kinds=["fast"], temporal_kinds=["fast"]))


def test_mash_pooling_of_query_tokens_keeps_every_query_per_segment():
    compressor = MASHPooling(MASHPooling.Config(temporal_features=["pooled", "difference"]),
                             BuildContext(frames=8, grid=None, encoder_has_cls=False))
    x = torch.randn(1, 8, 4, 3)
    out = compressor(FrameFeatures(x, None, None))
    spatial = out.kind[0] == S_
    assert int(spatial.sum()) == 4 * 4 == compressor.num_tokens(8, 4, None) - (8 + 7)
    assert torch.allclose(out.embeds[0][spatial][:4], x[0, :2].mean(dim=0))  # segment 0 = frames 0, 1
