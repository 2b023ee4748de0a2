"""Rotary positions survive loading, cached generation equals recompute, checkpoints round-trip exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from tests.helpers import TINY_LLM, make_batch, prompt_batch, tiny_recipe
from zoo.data.batch import VideoSample, collate
from zoo.data.prompting import encode, question_turns
from zoo.model.video_llm import VideoLLM, build_model
from zoo.config.recipe import recipe_from_dict
from components.weights import CheckpointError


def expected_inv_freq(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def test_the_axis_rotary_survives_loading_pretrained_weights(tmp_path):
    # An HF checkpoint on disk, loaded through the recipe's pretrained: path.
    hf = AutoModelForCausalLM.from_config(LlamaConfig(**TINY_LLM["llama"], vocab_size=260))
    hf.save_pretrained(tmp_path / "llm")
    data = tiny_recipe()
    data["model"]["llm"] = {"name": "llama", "pretrained": str(tmp_path / "llm"), "tokenizer": "byte"}
    model = build_model(recipe_from_dict(data))
    rotary = model.llm.decoder.rotary_emb
    assert type(rotary).__name__ == "AxisLlamaRotaryEmbedding"
    assert torch.equal(rotary.inv_freq, expected_inv_freq(16))
    assert torch.equal(model.llm.decoder.layers[0].self_attn.q_proj.weight, hf.model.layers[0].self_attn.q_proj.weight)
    # And through a whole-model checkpoint.
    model.save_pretrained(tmp_path / "video_llm")
    loaded = VideoLLM.from_pretrained(tmp_path / "video_llm")
    assert torch.equal(loaded.llm.decoder.rotary_emb.inv_freq, expected_inv_freq(16))


def test_one_axis_rotary_is_stock_rope_bit_for_bit(build_tiny):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    model = build_tiny()
    axis = model.llm.decoder.rotary_emb
    stock = LlamaRotaryEmbedding(model.llm.config)
    ids = torch.tensor([[0, 1, 2, 5, 9, 100, 1000]])
    x = torch.zeros(1, 7, 64)
    for mine, theirs in zip(axis(x, ids.unsqueeze(0)), stock(x, ids)):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("llm", ["llama", "qwen2"])
def test_cached_generation_equals_full_recompute(llm):
    torch.manual_seed(1)
    model = build_model(recipe_from_dict(tiny_recipe(llm=llm))).eval()
    batch = prompt_batch(model, ["Describe the video.", "What moves?"])
    cached = model.generate(batch, max_new_tokens=12)
    recomputed = model.generate(batch, max_new_tokens=12, use_cache=False)
    assert cached.token_ids == recomputed.token_ids
    assert all(len(ids) > 0 for ids in cached.token_ids)


def test_batched_generation_with_left_padding_matches_one_by_one(build_tiny):
    model = build_tiny().eval()
    questions = ["Describe the video in detail, please.", "What?"]
    together = model.generate(prompt_batch(model, questions), max_new_tokens=10)
    for index, question in enumerate(questions):
        alone_batch = prompt_batch(model, questions)
        alone_batch = collate([VideoSample(alone_batch.pixels[index], encode(
            model.tokenizer, model.recipe.prompt, question_turns(question), for_generation=True))], model.pad_id)
        alone = model.generate(alone_batch, max_new_tokens=10)
        assert alone.token_ids[0] == together.token_ids[index]


def test_generation_stops_at_the_answer_end(build_tiny, monkeypatch):
    model = build_tiny().eval()
    eos = model.tokenizer.eos_token_id
    letters = model.tokenizer("ok", add_special_tokens=False)["input_ids"]
    script = iter([letters[0], letters[1], eos, letters[0]])

    def scripted_logits(hidden):  # the LM says "o", "k", then "</s>", then would go on
        logits = torch.zeros(*hidden.shape[:-1], len(model.tokenizer))
        logits[..., next(script)] = 1.0
        return logits

    monkeypatch.setattr(model.llm, "logits", scripted_logits)
    out = model.generate(prompt_batch(model, ["Q?"]), max_new_tokens=8)
    assert out.finished == [True] and out.token_ids == [letters] and out.texts == ["ok"]


def test_save_load_round_trip_gives_identical_logits(tmp_path, build_tiny):
    model = build_tiny(encoder="blip2_qformer").eval()
    batch = make_batch(model)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = VideoLLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.recipe.model.encoder.options.instruction_tokenizer.endswith("instruction_tokenizer")
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.loss, b.loss)
    assert (tmp_path / "ckpt" / "tokenizer").is_dir() and not list(tmp_path.glob(".ckpt.*"))


def test_a_corrupted_or_mismatched_checkpoint_is_refused(tmp_path, build_tiny):
    model = build_tiny()
    model.save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        VideoLLM.from_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "ckpt")  # replaces the broken one
    with pytest.raises(CheckpointError, match="does not match the model"):
        VideoLLM.from_pretrained(tmp_path / "ckpt", overrides={"model.projector": {"name": "linear"}})
    with pytest.raises(CheckpointError, match="not an STZoo checkpoint"):
        VideoLLM.from_pretrained(tmp_path)


def test_torch_checkpoints_load_weights_only(tmp_path):
    import pickle

    from components.weights import read_state_dict

    class NotATensor:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"w": torch.ones(2)}, tmp_path / "good.pt")
    assert torch.equal(read_state_dict(tmp_path / "good.pt", "test")["w"], torch.ones(2))
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"w": NotATensor()}, handle)
    with pytest.raises(CheckpointError, match="evil.pt could not be read as weights"):
        read_state_dict(tmp_path / "evil.pt", "test")
