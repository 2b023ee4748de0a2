"""ST-LLM: dynamic masking, the MVM loss, global-local input, separators, and LAVIS checkpoint import."""

from __future__ import annotations

import json

import pytest
import torch

from components.base import BuildContext
from components.weights import CheckpointError
from components.compressors.st_llm_masking import STLLMMasking
from components.token_metadata import FrameFeatures, TokenKind
from tests.helpers import tiny_recipe
from tests.helpers import make_batch
from zoo.model.video_llm import build_model
from zoo.config.recipe import recipe_from_dict


def compressor(**options) -> STLLMMasking:
    from components.compressors.st_llm_masking import GlobalLocalSpec

    if isinstance(options.get("global_local"), dict):
        options["global_local"] = GlobalLocalSpec(**options["global_local"])
    return STLLMMasking(STLLMMasking.Config(**options), BuildContext(frames=8, llm_hidden_size=16, tokens_per_frame=4))


def features(batch=3, frames=8, tokens=4, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return FrameFeatures(torch.randn(batch, frames, tokens, dim, generator=generator), None, None)


def st_llm_model(**options):
    torch.manual_seed(0)
    data = tiny_recipe(encoder="blip2_qformer", projector="linear", compressor={"name": "st_llm_masking", **options}, frames=4)
    return build_model(recipe_from_dict(data))


@pytest.mark.parametrize("bounds, low, high", [("paper", 0.3, 0.7), ("official_code", 0.1, 0.7)])
def test_masking_removes_exactly_the_drawn_share_within_bounds(bounds, low, high):
    torch.manual_seed(0)
    masking = compressor(rate_bounds=bounds, rate_std=0.3).train()  # a wide sigma so the bounds are hit
    x = features()
    rates = []
    for _ in range(200):
        out = masking(x)
        rate = masking.last_rate
        rates.append(rate)
        assert low <= rate <= high
        assert out.num_tokens == 32 - round(rate * 32)  # the same count in every sample
        source = out.source_index
        assert (source[:, 1:] > source[:, :-1]).all()  # kept tokens keep their order
        # ...and their metadata: frame of each kept token is the frame of its source token
        assert torch.equal(out.frame, source // 4) and (out.kind == TokenKind.FRAME).all()
        assert torch.equal(out.embeds, torch.gather(x.patches.reshape(3, 32, 16), 1, source.unsqueeze(-1).expand(-1, -1, 16)))
    assert min(rates) == low and max(rates) == high  # clipped, not resampled
    subsets = {tuple(row.tolist()) for row in out.source_index}
    assert len(subsets) > 1  # each sample has its own random subset


def test_no_masking_at_evaluation_and_the_rate_distributions():
    masking = compressor().eval()
    assert masking(features()).num_tokens == 32 and masking(features()).reference is None
    torch.manual_seed(1)
    fixed = compressor(rate_distribution="fixed", rate_mean=0.25).train()
    assert fixed(features()).num_tokens == 24
    uniform = compressor(rate_distribution="uniform").train()
    draws = [uniform.draw_rate() for _ in range(2000)]
    assert 0.3 <= min(draws) < 0.32 and 0.68 < max(draws) <= 0.7 and abs(sum(draws) / len(draws) - 0.5) < 0.01
    normal = compressor().train()
    draws = torch.tensor([normal.draw_rate() for _ in range(4000)])
    assert abs(float(draws.mean()) - 0.5) < 0.01 and abs(float(draws.std()) - 0.1) < 0.01


def test_mvm_is_zero_with_nothing_masked_and_positive_otherwise():
    nothing = st_llm_model(rate_distribution="fixed", rate_mean=0.0).train()
    batch = make_batch(nothing)
    out = nothing(batch)
    # The default cosine: 2 - 2 cos of identical states is zero up to float rounding (~4e-8).
    assert set(out.losses) == {"ce", "mvm"} and float(out.losses["mvm"].detach()) == pytest.approx(0.0, abs=1e-6)
    masked = st_llm_model().train()
    out = masked(make_batch(masked))
    assert float(out.losses["mvm"].detach()) > 0
    assert torch.allclose(out.loss, out.losses["ce"] + out.losses["mvm"])
    visual = int(out.sequence.is_visual[0].sum())
    assert visual == 16 - round(masked.compressor.last_rate * 16)


def test_the_three_mvm_definitions_by_hand():
    from components.compressors.st_llm_masking import MVM_LOSSES

    p, t = torch.tensor([[1.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    assert MVM_LOSSES["mse_sum"](p, t) == 1.0  # token errors 2 and 0, summed over dimensions, mean over tokens
    assert MVM_LOSSES["mse"](p, t) == 0.5  # ... averaged over the 2 dimensions as well
    assert torch.isclose(MVM_LOSSES["cosine"](p, t), torch.tensor(1.0))  # 2 - 2 cos: 2 for orthogonal, 0 for equal
    # States of squared norm D (what a unit-weight RMSNorm emits): mse and the cosine agree exactly, mse_sum is D x.
    a, b = torch.randn(5, 64), torch.randn(5, 64)
    a, b = a / a.norm(dim=-1, keepdim=True) * 8, b / b.norm(dim=-1, keepdim=True) * 8
    assert torch.isclose(MVM_LOSSES["mse"](a, b), MVM_LOSSES["cosine"](a, b), atol=1e-5)
    assert torch.isclose(MVM_LOSSES["mse_sum"](a, b), 64 * MVM_LOSSES["mse"](a, b), rtol=1e-5)


def test_no_gradient_reaches_the_reference_pass():
    model = st_llm_model(mvm_loss="cosine").train()
    outputs = []
    handle = model.llm.decoder.register_forward_hook(lambda module, args, out: outputs.append(out.last_hidden_state))
    out = model(make_batch(model))
    handle.remove()
    masked_pass, reference_pass = outputs
    assert masked_pass.requires_grad and not reference_pass.requires_grad
    out.losses["mvm"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.llm.parameters())


def test_the_official_codes_masked_count_and_adapter_init_as_options():
    """The code masks int(rho * N) tokens (truncation) and zeroes the adapter's down-projection bias too."""
    x = features()  # 8 frames x 4 tokens: N = 32; rho 0.3 -> 9.6 masked: round 10, int 9
    assert compressor(rate_distribution="fixed", rate_mean=0.3).train()(x).num_tokens == 32 - 10
    assert compressor(rate_distribution="fixed", rate_mean=0.3, masked_count="official_code").train()(x).num_tokens == 32 - 9
    paper = compressor(global_local={"local_frames": 4}, masking=False)
    official = compressor(global_local={"local_frames": 4, "init": "official_code"}, masking=False)
    assert paper.global_adapter[0].bias.abs().sum() > 0 and torch.count_nonzero(official.global_adapter[0].bias) == 0
    assert torch.count_nonzero(official.global_adapter[2].weight) == 0  # the up-projection starts at zero in both


def test_global_local_with_a_fresh_adapter_equals_local_only_exactly():
    x = features(frames=8)
    adapter = compressor(global_local={"local_frames": 4, "mode": "adapter"}, masking=False).eval()
    local_only = compressor(global_local={"local_frames": 4, "mode": "local_only"}, masking=False).eval()
    a, b = adapter(x), local_only(x)
    assert torch.equal(a.embeds, b.embeds) and a.num_tokens == 16
    assert a.frame[0].tolist() == [f for f in (1, 3, 5, 7) for _ in range(4)]  # int(seg/2 + round(seg*i)), seg = 2
    added = compressor(global_local={"local_frames": 4, "mode": "add"}, masking=False).eval()(x)
    expected = x.patches[:, [1, 3, 5, 7]] + x.patches.mean(dim=1, keepdim=True)
    assert torch.allclose(added.embeds, expected.reshape(3, 16, 16))
    glob = compressor(global_local={"local_frames": 4, "mode": "global_only"}, masking=False).eval()(x)
    assert torch.allclose(glob.embeds, x.patches.mean(dim=1))


def test_separators_sit_between_frames_and_before_the_text():
    sep = compressor(frame_separators=True, video_text_separator=True, masking=False).eval()
    out = sep(features(frames=3))
    kinds = out.kind[0].tolist()
    F_, S_ = int(TokenKind.FRAME), int(TokenKind.SEPARATOR)
    assert kinds == [F_] * 4 + [S_] + [F_] * 4 + [S_] + [F_] * 4 + [S_]
    assert sep.num_tokens(3, 4, None) == 15
    assert torch.equal(out.embeds[0, 4], sep.frame_separator) and torch.equal(out.embeds[0, -1], sep.video_text_separator)
    torch.manual_seed(0)
    masking = compressor(frame_separators=True, video_text_separator=True).train()
    masked = masking(features(frames=3))
    assert (masked.kind == S_).sum(dim=1).tolist() == [3, 3, 3]  # separators are never masked
    assert masked.reference.num_tokens == 15


def lavis_checkpoint(model) -> dict[str, torch.Tensor]:
    """The model's weights under the key names of LAVIS InstructBLIP + ST-LLM files, written out by hand."""
    state = model.state_dict()
    out = {}
    vision = "encoder.vision."
    out["visual_encoder.cls_token"] = state[vision + "embeddings.class_embedding"]
    out["visual_encoder.pos_embed"] = state[vision + "embeddings.position_embedding"]
    out["visual_encoder.patch_embed.proj.weight"] = state[vision + "embeddings.patch_embedding.weight"]
    out["visual_encoder.patch_embed.proj.bias"] = state[vision + "embeddings.patch_embedding.bias"]
    layers = {int(k.split(".")[4]) for k in state if k.startswith(vision + "encoder.layers.")}
    for i in layers:
        hf = f"{vision}encoder.layers.{i}."
        lv = f"visual_encoder.blocks.{i}."
        dim = state[hf + "self_attn.qkv.bias"].shape[0] // 3
        out[lv + "attn.qkv.weight"] = state[hf + "self_attn.qkv.weight"]
        out[lv + "attn.q_bias"] = torch.randn(dim)
        out[lv + "attn.v_bias"] = torch.randn(dim)
        for ours, theirs in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"), ("self_attn.projection", "attn.proj"),
                             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for p in ("weight", "bias"):
                out[f"{lv}{theirs}.{p}"] = state[f"{hf}{ours}.{p}"]
    out["ln_vision.weight"], out["ln_vision.bias"] = state[vision + "post_layernorm.weight"], state[vision + "post_layernorm.bias"]
    out["query_tokens"] = state["encoder.query_tokens"]
    q = "encoder.qformer."
    out["Qformer.bert.embeddings.word_embeddings.weight"] = state[q + "embeddings.word_embeddings.weight"]
    out["Qformer.bert.embeddings.position_embeddings.weight"] = state[q + "embeddings.position_embeddings.weight"]
    out["Qformer.bert.embeddings.LayerNorm.weight"] = state[q + "embeddings.layernorm.weight"]
    out["Qformer.bert.embeddings.LayerNorm.bias"] = state[q + "embeddings.layernorm.bias"]
    out["Qformer.bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    for key, value in state.items():
        if key.startswith(q + "encoder.layer."):
            rest = key[len(q + "encoder.layer."):]
            rest = rest.replace("attention.attention.", "attention.self.").replace("crossattention.attention.", "crossattention.self.")
            out["Qformer.bert.encoder.layer." + rest] = value
    out["Qformer.cls.predictions.bias"] = torch.zeros(3)  # the MLM head LAVIS keeps; unused here
    out["llama_proj.weight"], out["llama_proj.bias"] = state["projector.proj.weight"], state["projector.proj.bias"]
    for key, value in state.items():
        if key.startswith("llm.hf."):
            out["llama_model." + key[len("llm.hf."):]] = value
    return {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v for k, v in out.items()}


def test_a_lavis_format_checkpoint_lands_weight_by_weight(tmp_path):
    source = st_llm_model()
    official = lavis_checkpoint(source)
    torch.save(official, tmp_path / "st_llm_release.pth")
    data = tiny_recipe(encoder="blip2_qformer", projector="linear", compressor="st_llm_masking", frames=4)
    data["model"]["init_from"] = [str(tmp_path / "st_llm_release.pth")]
    model = build_model(recipe_from_dict(data))
    report = model.import_report
    assert report.unexpected == [] and sorted(report.skipped) == ["Qformer.bert.embeddings.position_ids", "Qformer.cls.predictions.bias"]
    state = model.state_dict()
    assert report.missing == {}, report.missing  # every tensor of the model came from the file
    layer = "encoder.vision.encoder.layers.1.self_attn.qkv.bias"
    q, v = official["visual_encoder.blocks.1.attn.q_bias"], official["visual_encoder.blocks.1.attn.v_bias"]
    assert torch.equal(state[layer], torch.cat([q, torch.zeros_like(q), v]))
    assert torch.equal(state["encoder.query_tokens"], official["query_tokens"])
    assert torch.equal(state["encoder.qformer.encoder.layer.0.crossattention.attention.key.weight"],
                       official["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"])
    assert torch.equal(state["projector.proj.weight"], official["llama_proj.weight"])
    assert torch.equal(state["llm.hf.model.layers.1.mlp.down_proj.weight"], official["llama_model.model.layers.1.mlp.down_proj.weight"])


def write_st_llm_release(directory, lavis: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ST-LLM's own release: STLLMForCausalLM through HF save_pretrained, i.e. the LAVIS modules under
    model.stllm_model.*, the LLaMA decoder at model.* and lm_head.*, in pickled pytorch_model-*-of-*.bin shards
    with pytorch_model.bin.index.json."""
    release = {}
    for key, tensor in lavis.items():
        if key.startswith("llama_model."):
            release[key[len("llama_model."):]] = tensor
        else:
            release[f"model.stllm_model.{key}"] = tensor
    names = sorted(release)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2], "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    directory.mkdir(parents=True)
    for file, keys in shards.items():
        torch.save({k: release[k] for k in keys}, directory / file)
    size = sum(t.numel() * t.element_size() for t in release.values())
    index = {"metadata": {"total_size": size}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    return release


def test_st_llms_own_release_layout_loads_every_tensor(tmp_path):
    """Issue 16: the release's model.stllm_model.* layout used to load 0 of its tensors, silently."""
    source = st_llm_model(mvm_decoder=True)
    lavis = lavis_checkpoint(source)
    lavis.update({f"mvm_decoder.{k}": torch.randn_like(v) for k, v in source.compressor.mvm_head.state_dict().items()})
    release = write_st_llm_release(tmp_path / "st_llm", lavis)
    data = tiny_recipe(encoder="blip2_qformer", projector="linear", frames=4,
                       compressor={"name": "st_llm_masking", "mvm_decoder": True})
    data["model"]["init_from"] = [str(tmp_path / "st_llm")]
    model = build_model(recipe_from_dict(data))
    report = model.import_report
    assert report.missing == {} and report.unexpected == [], (report.missing, report.unexpected)
    state = model.state_dict()
    assert torch.equal(state["encoder.query_tokens"], release["model.stllm_model.query_tokens"])
    assert torch.equal(state["llm.hf.model.layers.1.mlp.down_proj.weight"], release["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(state["llm.hf.lm_head.weight"], release["lm_head.weight"])
    assert torch.equal(state["compressor.mvm_head.0.weight"], release["model.stllm_model.mvm_decoder.0.weight"])


def test_a_release_with_modules_the_recipe_does_not_build_is_refused(tmp_path):
    """ST-LLM's QA release puts BT-Adapter temporal modules into its EVA tower: refused, never half-loaded."""
    lavis = lavis_checkpoint(st_llm_model())
    for block in (0, 1):
        lavis[f"visual_encoder.btadapter_S.{block}.temporal_attn.qkv.weight"] = torch.randn(96, 32)
    write_st_llm_release(tmp_path / "qa", lavis)
    data = tiny_recipe(encoder="blip2_qformer", projector="linear", compressor="st_llm_masking", frames=4)
    data["model"]["init_from"] = [str(tmp_path / "qa")]
    with pytest.raises(CheckpointError, match=r"qa: 2 tensors belong to modules no component of this recipe builds "
                                              r"\(visual_encoder\.btadapter_S\.\*\.temporal_attn\.qkv; e\.g\. "
                                              r"visual_encoder\.btadapter_S\.0\.temporal_attn\.qkv\.weight\); "
                                              r"the release is refused rather than half-loaded"):
        build_model(recipe_from_dict(data))


def test_an_eva_only_file_and_a_mismatched_file(tmp_path):
    from zoo.model.checkpoint_import import import_checkpoints
    from components.weights import CheckpointError

    model = st_llm_model()
    official = lavis_checkpoint(model)
    eva = {k[len("visual_encoder."):]: v for k, v in official.items() if k.startswith("visual_encoder.")}
    torch.save(eva, tmp_path / "eva_vit_g.pth")
    report = import_checkpoints(model, [tmp_path / "eva_vit_g.pth"])
    assert report.unexpected == [] and "llm" in report.missing and "encoder" in report.missing  # Q-Former not covered
    assert torch.equal(model.state_dict()["encoder.vision.embeddings.class_embedding"], eva["cls_token"])
    official["query_tokens"] = torch.zeros(1, 7, 32)
    torch.save(official, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="query_tokens: file \\(1, 7, 32\\) vs model \\(1, 4, 32\\)"):
        import_checkpoints(model, [tmp_path / "wrong.pth"])


QFORMER_DENSE = "model.stllm_model.Qformer.bert.encoder.layer.0.attention.output.dense.weight"


def renamed_tensor(release):
    release[QFORMER_DENSE.replace(".dense.", ".dense_x.")] = release.pop(QFORMER_DENSE)


def dropped_tensor(release):
    del release["model.layers.1.mlp.down_proj.weight"]


def misshaped_tensor(release):
    release["model.stllm_model.llama_proj.weight"] = torch.zeros(64, 33)


@pytest.mark.parametrize("change,words", [
    (renamed_tensor, r"tensors would stay at their random initialisation \(encoder 1; e\.g\. encoder\.qformer\.encoder\.layer\.0"
                     r"\.attention\.output\.dense\.weight\); the files hold 1 tensors mapped there with no place in the model, "
                     r"e\.g\. encoder\.qformer\.encoder\.layer\.0\.attention\.output\.dense_x\.weight"),
    (dropped_tensor, r"tensors would stay at their random initialisation \(llm 1; e\.g\. llm\.hf\.model\.layers\.1\.mlp\.down_proj\.weight\)"),
    (misshaped_tensor, r"1 shape mismatches, e\.g\. projector\.proj\.weight: file \(64, 33\) vs model \(64, 32\)"),
])
def test_a_renamed_missing_or_misshaped_st_llm_tensor_is_one_sentence_naming_it(tmp_path, change, words):
    release = {}
    for key, tensor in lavis_checkpoint(st_llm_model()).items():
        release[key[len("llama_model."):] if key.startswith("llama_model.") else f"model.stllm_model.{key}"] = tensor
    change(release)
    torch.save(release, tmp_path / "pytorch_model.bin")
    data = tiny_recipe(encoder="blip2_qformer", projector="linear", compressor="st_llm_masking", frames=4)
    data["model"]["init_from"] = [str(tmp_path)]
    with pytest.raises(CheckpointError, match=words) as error:
        build_model(recipe_from_dict(data))
    assert "\n" not in str(error.value)
