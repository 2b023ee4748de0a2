"""The assembled model: every encoder x projector x compressor trains, masks and positions reach the LLM."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

from components.base import MaskScheme
from components.token_metadata import TokenKind
from tests.helpers import TINY_ENCODERS, make_batch, tiny_recipe
from zoo.data.batch import VideoSample, collate
from zoo.model.video_llm import build_model
from zoo.data.prompting import encode, question_turns
from zoo.config.recipe import recipe_from_dict
from components.config import RecipeError


@pytest.mark.parametrize("encoder", sorted(TINY_ENCODERS))
@pytest.mark.parametrize("projector", ["linear", "mlp2x_gelu"])
@pytest.mark.parametrize("compressor", ["all_tokens", {"name": "mean_pool", "frames_per_group": 2}])
def test_every_encoder_projector_compressor_trains(encoder, projector, compressor):
    torch.manual_seed(0)
    model = build_model(recipe_from_dict(tiny_recipe(encoder=encoder, projector=projector, compressor=compressor)))
    batch = make_batch(model)
    output = model(batch)
    assert torch.isfinite(output.loss) and output.loss > 0
    expected_visual = model.visual_token_count(4)
    assert int(output.sequence.is_visual[0].sum()) == expected_visual
    output.loss.backward()
    projector_grads = [p.grad for p in model.projector.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in projector_grads)
    assert all(p.grad is None for p in model.encoder.parameters())  # frozen by default
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.llm.parameters())


def test_token_metadata_follows_frames_and_grid(build_tiny):
    model = build_tiny()
    batch = make_batch(model)
    sequence = model(batch).sequence
    visual = sequence.is_visual[0]
    frames = sequence.frame[0][visual]
    rows, cols = sequence.row[0][visual], sequence.col[0][visual]
    per_frame = model.encoder.tokens_per_frame  # 4 x 4 grid of the tiny CLIP
    assert frames.tolist() == [t for t in range(4) for _ in range(per_frame)]
    assert rows[:per_frame].tolist() == [r for r in range(4) for _ in range(4)]
    assert cols[:per_frame].tolist() == [c for _ in range(4) for c in range(4)]
    # Text before and after the video, labels only on the answer.
    start = int(batch.video_position[0])
    assert (sequence.kind[0][:start] == TokenKind.TEXT).all()
    answer_ids = sequence.labels[0][sequence.labels[0] != -100].tolist()
    assert model.tokenizer.decode(answer_ids) == "a square moves</s>"


def test_right_padding_leaves_the_shorter_sample_unchanged(build_tiny):
    model = build_tiny().eval()
    batch = make_batch(model, questions=("Q?", "A much longer question about the video?"), answers=("yes", "no"))
    single = make_batch(model, questions=("Q?",), answers=("yes",))
    with torch.no_grad():
        both = model(batch)
        alone = model(single)
    length = int(alone.sequence.attention_mask.sum())
    assert torch.allclose(both.hidden[0, :length], alone.hidden[0, :length], atol=1e-5)


@dataclass
class FramesIsolated(MaskScheme):
    """Test-only structured mask: a visual token sees only its own frame (both ways) and the text before it."""

    def mask_function(self, sequence):
        kind, frame = sequence.kind, sequence.frame

        def fn(b, h, q, kv):
            q_visual = (kind[b, q] != TokenKind.TEXT) & (kind[b, q] != TokenKind.PAD)
            kv_visual = (kind[b, kv] != TokenKind.TEXT) & (kind[b, kv] != TokenKind.PAD)
            same_frame = frame[b, q] == frame[b, kv]
            return torch.where(q_visual & kv_visual, same_frame, q >= kv)

        return fn


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_an_injected_mask_controls_what_each_token_sees(implementation):
    torch.manual_seed(0)
    data = tiny_recipe()
    data["model"]["llm"]["attn_implementation"] = implementation
    model = build_model(recipe_from_dict(data)).eval()
    model.mask = FramesIsolated()
    batch = make_batch(model)
    with torch.no_grad():
        sequence = model.assemble(batch, model.encode_video(batch.pixels))
        base, _ = model.run_llm(sequence)
        frame = sequence.frame[0]
        visual = sequence.is_visual[0]
        target = int(torch.nonzero(visual & (frame == 0))[3])  # a frame-0 token, not the first one
        embeds = sequence.inputs_embeds.clone()
        embeds[0, target] += 5.0
        moved, _ = model.run_llm(sequence.replace(inputs_embeds=embeds))
    changed = (moved[0] - base[0]).abs().amax(dim=-1) > 1e-4
    frame0 = visual & (frame == 0)
    assert changed[frame0].all(), "every frame-0 token sees the perturbed one (bidirectional within the frame)"
    assert not changed[visual & (frame != 0)].any(), "other frames never see frame 0"
    after = torch.arange(sequence.length) > int(torch.nonzero(visual)[-1])
    assert changed[after & (sequence.attention_mask[0] == 1)].all(), "text after the video sees everything"
    assert not changed[~visual & ~after].any(), "text before the video is not affected"


def test_eager_and_sdpa_render_the_same_attention(build_tiny):
    outputs = []
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        data = tiny_recipe()
        data["model"]["llm"]["attn_implementation"] = implementation
        model = build_model(recipe_from_dict(data)).eval()
        model.mask = FramesIsolated()
        with torch.no_grad():
            outputs.append(model(make_batch(model)).hidden)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)


def test_flash_attention_with_a_structured_mask_is_refused(monkeypatch):
    from components.masks.causal import CausalMask

    monkeypatch.setattr(CausalMask, "is_causal", False)
    data = tiny_recipe()
    data["model"]["llm"]["attn_implementation"] = "flash_attention_2"
    with pytest.raises(RecipeError, match="flash_attention_2 ignores custom masks"):
        build_model(recipe_from_dict(data))


def test_frozen_and_lora_tuning_train_what_they_say():
    data = tiny_recipe()
    data["model"]["llm"]["tuning"] = "frozen"
    frozen = build_model(recipe_from_dict(data))
    assert not any(p.requires_grad for p in frozen.llm.parameters())
    assert all(p.requires_grad for p in frozen.projector.parameters())
    data["model"]["llm"]["tuning"] = "lora"
    data["model"]["llm"]["lora"] = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    lora = build_model(recipe_from_dict(data))
    trainable = [n for n, p in lora.llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and not any("k_proj" in n for n in trainable)
    output = lora(make_batch(lora))
    output.loss.backward()
    assert all(p.grad is not None for n, p in lora.llm.named_parameters() if p.requires_grad)


def test_mean_pool_stride_without_a_grid_fails_at_build_naming_the_component():
    with pytest.raises(RecipeError, match="mean_pool.*spatial_stride 2 needs a patch grid"):
        build_model(recipe_from_dict(tiny_recipe(encoder="blip2_qformer", compressor={"name": "mean_pool", "spatial_stride": 2})))


def test_select_layer_truncation_gives_the_full_towers_hidden_state():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from components.encoders.clip import CLIPEncoder
    from components.base import BuildContext
    from tests.helpers import TINY_VIT

    torch.manual_seed(0)
    full = CLIPVisionModel(CLIPVisionConfig(**TINY_VIT)).eval()
    cfg = CLIPEncoder.Config(config=TINY_VIT, select_layer=-2)
    encoder = CLIPEncoder(cfg, BuildContext(frames=2))
    encoder.model.load_state_dict(full.state_dict(), strict=False)
    pixels = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        expected = full(pixel_values=pixels[0], output_hidden_states=True).hidden_states[-2]
        features = encoder(pixels)
    from components.encoders._hf_vision import encoder_layers

    assert len(encoder_layers(encoder.model)) == 2  # the third layer is never run
    assert torch.allclose(features.cls[0], expected[:, 0], atol=1e-6)
    assert torch.allclose(features.patches[0], expected[:, 1:], atol=1e-6)


def test_the_qformer_reads_the_instruction():
    torch.manual_seed(0)
    model = build_model(recipe_from_dict(tiny_recipe(encoder="blip2_qformer"))).eval()
    pixels = torch.randn(1, 2, 3, 32, 32)
    tokenizer = model.encoder.instruction_tokenizer

    def features(text):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        return model.encoder(pixels, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}).patches

    with torch.no_grad():
        a, b, again = features("what is the person doing?"), features("where is this?"), features("what is the person doing?")
    assert a.shape == (1, 2, 4, 32)
    assert torch.equal(a, again) and not torch.allclose(a, b)


def test_masks_and_positions_are_reused_when_the_layout_repeats(build_tiny):
    model = build_tiny().eval()
    batch = make_batch(model)
    with torch.no_grad():
        first = model.attention_inputs(model.assemble(batch, model.encode_video(batch.pixels)))
        again = model.attention_inputs(model.assemble(batch, model.encode_video(batch.pixels)))
        other = make_batch(model, questions=("A different question of another length?", "Which way?"))
        third = model.attention_inputs(model.assemble(other, model.encode_video(other.pixels)))
    assert again[1] is first[1]  # the same layout: the cached position ids
    assert third[1] is not first[1] and third[1].shape != first[1].shape
    model.mask = FramesIsolated()  # a different scheme never sees the old one's masks
    with torch.no_grad():
        swapped = model.attention_inputs(model.assemble(batch, model.encode_video(batch.pixels)))
    assert swapped[0] is not first[0]


# The normalisation each encoder's image processor applies (CLIP's and BLIP-2's OpenAI constants, SigLIP's 0.5).
PROCESSOR_STATS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "blip2_qformer": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@pytest.mark.parametrize("encoder", sorted(PROCESSOR_STATS))
def test_the_model_normalises_uint8_frames_as_the_encoders_processor_does(encoder):
    """Loaders hand uint8 frames at the encoder's size; the model normalises them, per batch, on its device. The
    visual tokens equal those of frames normalised by hand with the processor's constants, in bf16 as in fp32."""
    torch.manual_seed(0)
    model = build_model(recipe_from_dict(tiny_recipe(encoder=encoder))).eval()
    size = model.encoder.image_size
    frames = torch.randint(0, 256, (2, 4, 3, size, size), dtype=torch.uint8)
    mean, std = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in PROCESSOR_STATS[encoder])
    by_hand = ((frames.double() / 255 - mean) / std).float()
    normalised = model.normalise(frames)
    assert normalised.dtype == torch.float32 and (normalised - by_hand).abs().max() < 1e-5
    instruction = make_batch(model).instruction
    with torch.no_grad():
        assert torch.allclose(model.encode_video(frames, instruction).embeds,
                              model.encode_video(by_hand, instruction).embeds, atol=1e-5)
        model.to(torch.bfloat16)  # the constants stay float32: a bf16 model gets the same normalised pixels
        assert (model.normalise(frames) - by_hand).abs().max() < 1e-5


def test_a_batch_mixing_uint8_frames_and_normalised_floats_is_refused(build_tiny):
    model = build_tiny()
    conversation = encode(model.tokenizer, model.recipe.prompt, question_turns("What happens?"))
    samples = [VideoSample(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), conversation),
               VideoSample(torch.zeros(4, 3, 32, 32), conversation)]
    with pytest.raises(ValueError, match="all be uint8 frames or all normalised floats"):
        collate(samples, model.pad_id)
