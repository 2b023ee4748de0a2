"""stzoo export: the folder loads in plain transformers (the LM), in peft (a LoRA run's adapters) and back
in STZoo (the whole model), each with the outputs the exported model gives."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import make_batch, tiny_recipe
from zoo.cli import main
from zoo.config.recipe import recipe_from_dict
from zoo.model.video_llm import VideoLLM, build_model

TEXT = "USER: Which way does the square move? ASSISTANT: left"


def saved_model(tmp_path, tuning: str = "full", mask: str = "causal"):
    """A tiny model with every weight set (LoRA B too, which starts at zero), saved as a run saves it."""
    data = tiny_recipe(mask=mask)
    data["model"]["llm"]["tuning"] = tuning
    data["model"]["llm"]["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    torch.manual_seed(0)
    model = build_model(recipe_from_dict(data))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    model.eval()
    model.save_pretrained(tmp_path / "run" / "final")
    return model, tmp_path / "run"


def text_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer(TEXT)["input_ids"]])


def video_logits(model, batch) -> torch.Tensor:
    """The LM's logits over the whole video + text sequence, and the loss on the answers."""
    with torch.no_grad():
        output = model(batch)
        return torch.cat([model.llm.logits(output.hidden).flatten(), output.loss.reshape(1)])


def test_an_export_loads_in_transformers_and_back_in_stzoo_with_the_same_outputs(tmp_path, capsys):
    model, run = saved_model(tmp_path, mask="frame_block")
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out), "--max-shard-size", "100KB"]) == 0
    assert "AutoModelForCausalLM.from_pretrained" in capsys.readouterr().out

    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / shard).is_file() for shard in shards)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "stzoo" and config["components"]["mask"] == "frame_block"
    assert config["recipe_fingerprint"] == model.recipe.fingerprint() and config["lora_adapter"] is None

    plain = AutoModelForCausalLM.from_pretrained(out / "llm").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "llm")
    ids = text_ids(model.tokenizer)
    assert torch.equal(text_ids(tokenizer), ids)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, model.llm.hf(ids).logits, rtol=0, atol=1e-6)

    again = VideoLLM.from_pretrained(out)
    batch = make_batch(model, frames=4)
    assert torch.equal(video_logits(again, batch), video_logits(model, batch))
    assert again.generate(batch, max_new_tokens=4).texts == model.generate(batch, max_new_tokens=4).texts


def test_a_lora_run_exports_its_adapter_in_peft_format_and_the_merged_lm(tmp_path):
    model, run = saved_model(tmp_path, tuning="lora")
    out = tmp_path / "export"
    assert main(["export", str(run / "final"), "--out", str(out)]) == 0
    ids = text_ids(model.tokenizer)
    with torch.no_grad():
        tuned = model.llm.hf(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(out / "llm_base").eval()
        untuned = base(ids).logits
        adapted = PeftModel.from_pretrained(base, out / "llm_adapter").eval()
        torch.testing.assert_close(adapted(input_ids=ids).logits, tuned, rtol=0, atol=1e-6)
        merged = AutoModelForCausalLM.from_pretrained(out / "llm").eval()
        torch.testing.assert_close(merged(ids).logits, tuned, rtol=1e-5, atol=1e-5)
    assert (tuned - untuned).abs().max() > 1e-3  # the adapter changes the answer: the comparison can fail
    adapter = json.loads((out / "llm_adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["base_model_name_or_path"] == str(out / "llm_base")
    assert not any("lora" in key for key in json.loads((out / "config.json").read_text())["whole_model"])
    again = VideoLLM.from_pretrained(out)
    batch = make_batch(model, frames=4)
    assert torch.equal(video_logits(again, batch), video_logits(model, batch))


def test_an_export_of_a_path_that_does_not_exist_says_so(tmp_path, capsys):
    assert main(["export", str(tmp_path / "no_such_run"), "--out", str(tmp_path / "x")]) == 2
    assert f"{tmp_path / 'no_such_run'}: no such checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_shard_that_is_missing_is_one_sentence(tmp_path):
    model, run = saved_model(tmp_path)
    model.save_pretrained(tmp_path / "sharded", max_shard_bytes=100_000)
    first = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[0]
    first.unlink()
    with pytest.raises(Exception, match=rf"model.safetensors.index.json: unreadable .*corrupt or truncated"):
        VideoLLM.from_pretrained(tmp_path / "sharded")


def test_an_export_never_replaces_a_folder_that_is_not_an_earlier_export(tmp_path, capsys):
    model, run = saved_model(tmp_path)
    assert main(["export", str(run), "--out", str(run)]) == 2  # the run folder itself
    assert "is not an earlier STZoo export" in capsys.readouterr().err and (run / "final" / "recipe.yaml").is_file()
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0  # an earlier export is replaced
