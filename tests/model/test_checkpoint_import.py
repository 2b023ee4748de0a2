"""Foreign releases through the components' declared key maps: a LLaVA-OneVision-layout release written
as LLaVA's save_pretrained shards it, and the hooks a component declares (loss terms) are enforced."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForCausalLM, Qwen2Config, SiglipVisionConfig, SiglipVisionModel

from components.compressors.all_tokens import AllTokens
from components.registry import register
from tests.helpers import TINY_LLM, TINY_VIT, make_batch, tiny_recipe
from zoo.config.recipe import recipe_from_dict
from zoo.model.video_llm import build_model


def write_llava_release(directory, vocab_size: int, vision: dict = TINY_VIT) -> dict[str, torch.Tensor]:
    """LlavaQwenForCausalLM's names: the LM at model.* and lm_head.*, the SigLIP tower at
    model.vision_tower.vision_tower.vision_model.*, the projector at model.mm_projector.{0,2}, and image_newline;
    in two safetensors shards with HF's model.safetensors.index.json."""
    torch.manual_seed(7)
    language = AutoModelForCausalLM.from_config(Qwen2Config(**TINY_LLM["qwen2"], vocab_size=vocab_size))
    tower = SiglipVisionModel(SiglipVisionConfig(**vision))
    projector = nn.Sequential(nn.Linear(TINY_VIT["hidden_size"], 64), nn.GELU(), nn.Linear(64, 64))
    state = {k: v.clone() for k, v in language.state_dict().items()}
    # The official towers (transformers 4's CLIPVisionModel, LLaVA-NeXT's vendored SigLipVisionModel) nest
    # the transformer as vision_model; transformers 5's SiglipVisionModel names it without that level.
    inner = {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}
    state.update({f"model.vision_tower.vision_tower.vision_model.{k}": v.clone() for k, v in inner.items()})
    state.update({f"model.mm_projector.{k}": v.clone() for k, v in projector.state_dict().items()})
    state["model.image_newline"] = torch.randn(64)
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    directory.mkdir(parents=True)
    for file, keys in shards.items():
        save_file({k: state[k].contiguous() for k in keys}, str(directory / file), metadata={"format": "pt"})
    weight_map = {key: file for file, keys in shards.items() for key in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return state


def test_a_llava_release_loads_through_the_components_key_maps(tmp_path):
    data = tiny_recipe(encoder="siglip", llm="qwen2")
    model = build_model(recipe_from_dict(data))
    release = write_llava_release(tmp_path / "llava", vocab_size=model.llm.config.vocab_size)
    data["model"]["init_from"] = [str(tmp_path / "llava")]
    imported = build_model(recipe_from_dict(data))
    report = imported.import_report
    state = imported.state_dict()
    # Every weight of the tower, projector and LLM came from the file, unchanged.
    assert not report.missing.get("encoder") and not report.missing.get("projector") and not report.missing.get("llm")
    assert torch.equal(state["projector.layers.2.weight"], release["model.mm_projector.2.weight"])
    assert torch.equal(state["llm.hf.model.layers.1.mlp.up_proj.weight"], release["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(state["llm.hf.lm_head.weight"], release["lm_head.weight"])
    assert torch.equal(state["encoder.model.encoder.layers.0.self_attn.q_proj.weight"],
                       release["model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"])
    assert report.skipped == ["model.image_newline"]
    # The tower drops its last layer (LLaVA-OneVision's select_layer -2): that layer and the head have no place.
    assert report.unexpected and all("encoder.layers.2." in k or "post_layernorm" in k or "head" in k for k in report.unexpected)
    assert len(report.loaded) + len(report.skipped) + len(report.unexpected) == len(release)


@register("compressor", "test_undeclared_loss", "all tokens, with a loss term it does not declare (test only)")
class UndeclaredLoss(AllTokens):
    @dataclass
    class Config:
        pass

    def __init__(self, cfg, ctx):
        super().__init__(AllTokens.Config(), ctx)

    def extra_losses(self, model, batch, visual, sequence, hidden):
        return {"surprise": hidden.mean()}


def test_a_loss_term_a_compressor_does_not_declare_is_refused():
    model = build_model(recipe_from_dict(tiny_recipe(compressor="test_undeclared_loss"))).train()
    with pytest.raises(TypeError, match=r"compressor 'test_undeclared_loss' returned loss terms \['surprise'\]"):
        model(make_batch(model))
    assert model.loss_terms == ("ce",)
