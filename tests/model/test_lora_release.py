"""LLaVA-ST's LoRA stages as its training script saves them (issue 16, last part).

The LoRA directory is written the way LLaVA's train.py writes it with lora_enable, through peft itself: the model
(LlavaQwenForCausalLM's names: Qwen2 at model.* and lm_head, projector, packers and coordinate tables attached
under model.*) is wrapped by get_peft_model with LLaVA's target modules (every nn.Linear's last name outside
mm_projector / vision_tower / vision_resampler, lm_head excluded), the LoRA factors and the stage's trainables
(packers and tables) are changed as training would, then saved exactly as the script does: the "lora_" parameters
through PeftModel.save_pretrained(state_dict=...), every other trainable parameter with torch.save into
non_lora_trainables.bin, config.json beside them. The reference is peft's own merge_and_unload on that model.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, Qwen2Config

from components.weights import CheckpointError
from tests.helpers import TINY_LLM
from tests.model.test_llava_st_release import AXIS_NAMES, PACKERS, DevideAttention, llava_st_recipe, write_llava_st_release
from zoo.config.recipe import recipe_from_dict
from zoo.model.video_llm import build_model

RANK, ALPHA = 4, 8
MULTIMODAL = ("mm_projector", "vision_tower", "vision_resampler")


def llava_qwen(release: dict[str, torch.Tensor], vocab: int) -> nn.Module:
    """Qwen2ForCausalLM with LLaVA-ST's extra modules where LlavaQwenModel keeps them, holding the base release."""
    model = AutoModelForCausalLM.from_config(Qwen2Config(**TINY_LLM["qwen2"], vocab_size=vocab))
    model.model.mm_projector = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64))
    model.model.vision_resampler = nn.Module()
    for name in PACKERS:
        packer = nn.Module()
        packer.devide_attention = DevideAttention()
        setattr(model.model.vision_resampler, name, packer)
    for axis in AXIS_NAMES:
        for side in ("input", "output"):
            setattr(model.model, f"{axis}_{side}_embeddings", nn.Embedding(100, 64))
    missing, _ = model.load_state_dict(release, strict=False)
    assert not missing, missing
    return model


def linear_targets(model: nn.Module) -> list[str]:
    """LLaVA's find_all_linear_names: the last name of every Linear outside the multimodal modules, not lm_head."""
    names = {name.split(".")[-1] for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and not any(word in name for word in MULTIMODAL)}
    return sorted(names - {"lm_head"})


def write_lora_run(directory, release: dict[str, torch.Tensor], vocab: int, safetensors: bool):
    """A stage-2 LoRA run's output directory; returns the peft model it came from."""
    torch.manual_seed(5)
    base = llava_qwen(release, vocab)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.05, target_modules=linear_targets(base), task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    for name, parameter in model.named_parameters():
        stage_two = "vision_resampler" in name or "_embeddings" in name and "embed_tokens" not in name
        if stage_two:
            parameter.requires_grad_(True)
        if stage_two or "lora_B" in name:  # what training would have changed (peft starts lora_B at zero)
            with torch.no_grad():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    lora = {k: t.detach().clone() for k, t in model.named_parameters() if "lora_" in k}
    non_lora = {k: t.detach().clone() for k, t in model.named_parameters() if "lora_" not in k and t.requires_grad}
    directory.mkdir(parents=True)
    model.config.save_pretrained(directory)
    model.save_pretrained(directory, state_dict=lora, safe_serialization=safetensors)
    torch.save(non_lora, directory / "non_lora_trainables.bin")
    return model.eval()


@pytest.fixture(scope="module", params=[True, False], ids=["adapter_safetensors", "adapter_bin"])
def runs(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("llava_st_lora")
    data = llava_st_recipe()
    vocab = build_model(recipe_from_dict(data)).llm.config.vocab_size
    release = write_llava_st_release(root / "base", vocab, data["model"]["encoder"]["config"])
    peft_model = write_lora_run(root / "stage2", release, vocab, safetensors=request.param)
    return root, vocab, peft_model.merge_and_unload()


def imported(root, tuning: str = "full", lora_directory: str = "stage2"):
    data = llava_st_recipe()
    data["model"]["llm"]["tuning"] = tuning
    data["model"]["init_from"] = [str(root / lora_directory), str(root / "base")]  # the order does not matter
    return build_model(recipe_from_dict(data))


def test_the_adapter_files_are_what_peft_writes(runs):
    root, _, _ = runs
    files = {path.name for path in (root / "stage2").iterdir()}
    assert {"adapter_config.json", "non_lora_trainables.bin", "config.json"} <= files
    assert files & {"adapter_model.safetensors", "adapter_model.bin"}
    saved = json.loads((root / "stage2" / "adapter_config.json").read_text())
    assert saved["r"] == RANK and saved["lora_alpha"] == ALPHA
    assert sorted(saved["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_a_lora_run_merges_into_its_base_as_peft_merges_it(runs, tuning):
    root, vocab, merged = runs
    model = imported(root, tuning)
    report = model.import_report
    assert report.lora_factors == 2 * 2 * 7 and len(report.merged) == 2 * 7  # two layers, seven linears each
    # Only the recipe's own new LoRA factors (stage 3: merge, then a fresh adapter) are not from the files.
    assert all("lora_" in key for key in report.missing_keys), report.missing_keys
    assert report.missing.get("llm", 0) == (2 * 2 * 7 if tuning == "lora" else 0)
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = merged(input_ids=ids).logits
        got = model.llm.hf(input_ids=ids).logits
    assert (got - expected).norm() / expected.norm() <= 1e-5
    base_q = next(v for k, v in model.state_dict().items() if k.startswith("llm.") and (
                  k.endswith("layers.1.self_attn.q_proj.weight") or k.endswith("layers.1.self_attn.q_proj.base_layer.weight")))
    assert (base_q - merged.model.layers[1].self_attn.q_proj.weight).abs().max() <= 1e-6
    # The packers and coordinate tables come from the LoRA run (non_lora_trainables.bin), not the base release.
    trained = merged.model.vision_resampler.token_packer_slow.devide_attention.attn.in_proj_weight
    assert torch.equal(model.state_dict()["compressor.slow.attn.in_proj_weight"], trained)
    assert torch.equal(model.state_dict()["position.input_table"][2], merged.model.spatial_width_input_embeddings.weight)


def altered_run(runs, tmp_path, change) -> str:
    """A copy of the LoRA directory whose adapter file and config went through ``change(tensors, config)``."""
    root, _, _ = runs
    shutil.copytree(root, tmp_path / "runs")
    directory = tmp_path / "runs" / "stage2"
    file = next(p for p in directory.iterdir() if p.name.startswith("adapter_model."))
    tensors = load_file(str(file)) if file.suffix == ".safetensors" else torch.load(file, weights_only=True)
    config = json.loads((directory / "adapter_config.json").read_text())
    change(tensors, config)
    file.unlink()
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return tmp_path / "runs"


def no_lora_b(tensors, config):
    del tensors["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"]


def wrong_rank(tensors, config):
    config["r"] = RANK * 2


def other_base(tensors, config):
    for key in [k for k in tensors if ".layers.1." in k]:
        tensors[key.replace(".layers.1.", ".layers.5.")] = tensors.pop(key)


def dora(tensors, config):
    config["use_dora"] = True


@pytest.mark.parametrize("change,words", [
    (no_lora_b, r"stage2: model\.layers\.0\.mlp\.up_proj has no lora_B beside its lora_A; the adapter file is incomplete"),
    (wrong_rank, r"model\.layers\.\d\.\w+\.\w+_proj\.lora_A \(4, \d+\) and lora_B \(\d+, 4\) do not make a rank-8 pair"),
    (other_base, r"the LoRA adapter wraps 7 modules with no place in this model \(e\.g\. llm\.hf\.model\.layers\.5\.\w+\.\w+_proj"
                 r"\.weight \(mapped by llm, not in the model\)\); its base model differs from the recipe's"),
    (dora, r"adapter_config\.json: use_dora is set; only plain LoRA"),
])
def test_a_broken_adapter_is_one_sentence_naming_the_tensor(runs, tmp_path, change, words):
    root = altered_run(runs, tmp_path, change)
    with pytest.raises(CheckpointError, match=words) as error:
        imported(root)
    assert "\n" not in str(error.value)


def test_a_lora_run_without_its_base_is_refused_naming_what_stays_random(runs):
    root, _, _ = runs
    data = llava_st_recipe()
    data["model"]["init_from"] = [str(root / "stage2")]
    with pytest.raises(CheckpointError, match=r"tensors would stay at their random initialisation \(encoder \d+, projector \d+, "
                                              r"llm \d+; e\.g\. encoder\."):
        build_model(recipe_from_dict(data))
