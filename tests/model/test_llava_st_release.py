"""LLaVA-ST's packer (STP) and LAPE as its official code builds and saves them (issue 16, first part).

The release is written the way LLaVA-ST's save_pretrained writes it: the three packers' attention modules as
the code declares them (to_q/to_k/to_v = Linear -> GELU -> Linear, then ln_q/ln_k/ln_v, torch's
nn.MultiheadAttention as attn, to_out Linear without bias, ``devide_attention`` spelled as in the code) under
model.vision_resampler.token_packer{,_fast,_slow}, and the six coordinate tables
model.{temporal,spatial_height,spatial_width}_{input,output}_embeddings.weight, beside the LLaVA-OneVision
tensors, in HF shards with their index. The imported packer and LAPE are compared with an independent
implementation of the official modules written here with explicit arithmetic (no nn.MultiheadAttention,
no F.interpolate), at 100 frames and at 8.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from components.token_metadata import FrameFeatures
from components.weights import CheckpointError
from zoo.cli import main as cli_main
from tests.helpers import TINY_VIT, tiny_recipe
from tests.model.test_checkpoint_import import write_llava_release
from zoo.config.recipe import recipe_from_dict
from zoo.model.video_llm import build_model

DIM, WIDTH, HEADS = 64, 32, 2  # the tiny Qwen2's width, the packer's attention width and heads
GRID, K1, K2 = 6, 2, 1  # a 6x6 patch grid (48 px / 8), packed to 2x2 per frame, then 1x1 for the fast stream
PACKERS = {"token_packer": "spatial", "token_packer_fast": "fast", "token_packer_slow": "slow"}
AXIS_NAMES = ("temporal", "spatial_height", "spatial_width")


class DevideAttention(nn.Module):
    """The module the official code builds for each packer (only its parameters are used here)."""

    def __init__(self):
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Sequential(nn.Linear(DIM, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH)) for _ in range(3))
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.attn = nn.MultiheadAttention(WIDTH, HEADS)
        self.to_out = nn.Linear(WIDTH, DIM, bias=False)


def official_tensors(bins: int = 100) -> dict[str, torch.Tensor]:
    torch.manual_seed(11)
    state = {}
    for packer in PACKERS:
        for key, value in DevideAttention().state_dict().items():
            # Random everywhere (LayerNorm scales and biases too), so a tensor loaded into the wrong place shows.
            state[f"model.vision_resampler.{packer}.devide_attention.{key}"] = torch.randn_like(value) * 0.2
    for axis in AXIS_NAMES:
        for side in ("input", "output"):
            state[f"model.{axis}_{side}_embeddings.weight"] = torch.randn(bins, DIM)
    return state


def write_llava_st_release(directory, vocab_size: int, vision: dict) -> dict[str, torch.Tensor]:
    release = write_llava_release(directory, vocab_size, vision)
    extra = official_tensors()
    save_file(extra, str(directory / "model-00003-of-00003.safetensors"), metadata={"format": "pt"})
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    index["weight_map"].update({key: "model-00003-of-00003.safetensors" for key in extra})
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return {**release, **extra}


# --- the official modules, written out ---------------------------------------------------------

def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def projection(state, prefix, name, x):
    hidden = gelu(x @ state[f"{prefix}to_{name}.0.weight"].T + state[f"{prefix}to_{name}.0.bias"])
    hidden = hidden @ state[f"{prefix}to_{name}.2.weight"].T + state[f"{prefix}to_{name}.2.bias"]
    return layer_norm(hidden, state[f"{prefix}ln_{name}.weight"], state[f"{prefix}ln_{name}.bias"])


def region_attention(state, packer, query, region):
    """One query (D,) over its region (R, D): projections, multi-head attention with in/out projections, to_out."""
    prefix = f"model.vision_resampler.{packer}.devide_attention."
    q, k, v = projection(state, prefix, "q", query[None]), projection(state, prefix, "k", region), projection(state, prefix, "v", region)
    w_q, w_k, w_v = state[prefix + "attn.in_proj_weight"].chunk(3)
    b_q, b_k, b_v = state[prefix + "attn.in_proj_bias"].chunk(3)
    q, k, v = q @ w_q.T + b_q, k @ w_k.T + b_k, v @ w_v.T + b_v
    head = WIDTH // HEADS
    outputs = []
    for h in range(HEADS):
        part = slice(h * head, (h + 1) * head)
        weights = torch.softmax(q[:, part] @ k[:, part].T / math.sqrt(head), dim=-1)
        outputs.append(weights @ v[:, part])
    attended = torch.cat(outputs, dim=-1) @ state[prefix + "attn.out_proj.weight"].T + state[prefix + "attn.out_proj.bias"]
    return query + (attended @ state[prefix + "to_out.weight"].T)[0]


def resample_line(values, size):
    """Linear resampling along the first axis as F.interpolate(align_corners=False): output i samples
    input position (i + 0.5) * n / size - 0.5, clamped to the ends."""
    n = values.shape[0]
    out = []
    for i in range(size):
        position = min(max((i + 0.5) * n / size - 0.5, 0.0), n - 1)
        low = math.floor(position)
        high = min(low + 1, n - 1)
        out.append(values[low] * (1 - (position - low)) + values[high] * (position - low))
    return torch.stack(out)


def pack_space(state, packer, frame, side):
    """(h, w, D) -> (side, side, D): bilinear queries, each attending to its own region."""
    h = frame.shape[0]
    queries = resample_line(resample_line(frame, side).transpose(0, 1), side).transpose(0, 1)
    r = h // side
    out = torch.empty(side, side, frame.shape[-1])
    for i in range(side):
        for j in range(side):
            region = frame[i * r:(i + 1) * r, j * r:(j + 1) * r].reshape(r * r, -1)
            out[i, j] = region_attention(state, packer, queries[i, j], region)
    return out


def official_packer(state, frames, groups):
    """(T, h, w, D) -> fast tokens (T * K2^2, D) then slow tokens (groups * K1^2, D), frame-major."""
    spatial = torch.stack([pack_space(state, "token_packer", frame, K1) for frame in frames])
    fast = torch.stack([pack_space(state, "token_packer_fast", frame, K2) for frame in spatial])
    size = len(frames) // groups
    slow = torch.empty(groups, K1, K1, frames.shape[-1])
    queries = resample_line(spatial, groups)  # linear in time, per location
    for g in range(groups):
        for i in range(K1):
            for j in range(K1):
                slow[g, i, j] = region_attention(state, "token_packer_slow", queries[g, i, j], spatial[g * size:(g + 1) * size, i, j])
    return torch.cat([fast.reshape(-1, frames.shape[-1]), slow.reshape(-1, frames.shape[-1])])


def official_lape(state, frames):
    """(T, h*w, D): the mean of input and output rows per axis, resampled to T and to the grid, T[t] + H[row] + W[col]."""
    tables = [(state[f"model.{axis}_input_embeddings.weight"] + state[f"model.{axis}_output_embeddings.weight"]) / 2
              for axis in AXIS_NAMES]
    time, rows, cols = resample_line(tables[0], frames), resample_line(tables[1], GRID), resample_line(tables[2], GRID)
    return time[:, None, None] + rows[None, :, None] + cols[None, None, :]


# --- the test ------------------------------------------------------------------------------------

def llava_st_recipe() -> dict:
    data = tiny_recipe(encoder="siglip", llm="qwen2", frames=8)
    data["model"]["encoder"]["config"] = {**TINY_VIT, "image_size": GRID * 8}
    data["model"]["compressor"] = {"name": "llava_st_packer", "k1": K1, "k2": K2, "sigma": 4, "attention_dim": WIDTH,
                                   "heads": HEADS, "architecture": "official_code", "query": "interpolate"}
    data["model"]["position"] = {"name": "lape", "bins": 100, "sequence": "rope"}
    return data


@pytest.fixture(scope="module")
def release_directory(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llava_st") / "release"
    data = llava_st_recipe()
    vocab = build_model(recipe_from_dict(data)).llm.config.vocab_size
    return directory, write_llava_st_release(directory, vocab, data["model"]["encoder"]["config"])


@pytest.fixture(scope="module")
def imported(release_directory):
    directory, release = release_directory
    data = llava_st_recipe()
    data["model"]["init_from"] = [str(directory)]
    return build_model(recipe_from_dict(data)), release


def test_every_release_tensor_is_accounted_for_and_the_packer_and_lape_load_whole(imported):
    model, release = imported
    report = model.import_report
    # Each release tensor is loaded, skipped on purpose or reported; the six coordinate tables load as two stacked ones.
    assert len(report.loaded) + len(report.skipped) + len(report.unexpected) == len(release) - 6 + 2
    assert not report.missing.get("compressor") and not report.missing.get("position"), report.summary()
    assert not any("vision_resampler" in key or "_embeddings.weight" in key for key in report.unexpected)
    state = model.state_dict()
    assert torch.equal(state["compressor.slow.attn.in_proj_weight"],
                       release["model.vision_resampler.token_packer_slow.devide_attention.attn.in_proj_weight"])
    assert torch.equal(state["position.output_table"][1], release["model.spatial_height_output_embeddings.weight"])


@pytest.mark.parametrize("frames,groups", [(100, 20), (8, 4)])
def test_the_imported_packer_and_lape_compute_what_the_official_modules_compute(imported, frames, groups):
    model, release = imported
    model.compressor.cfg.sigma = groups
    torch.manual_seed(frames)
    patches = torch.randn(1, frames, GRID * GRID, DIM)
    with torch.no_grad():
        packed = model.compressor(FrameFeatures(patches, None, (GRID, GRID))).embeds[0]
        embedded = model.position.add_visual_embedding(FrameFeatures(torch.zeros(1, frames, GRID * GRID, DIM), None, (GRID, GRID)))
    expected = official_packer(release, patches[0].view(frames, GRID, GRID, DIM), groups)
    assert packed.shape == expected.shape == (frames * K2**2 + groups * K1**2, DIM)
    assert (packed - expected).norm() / expected.norm() <= 1e-5
    lape = official_lape(release, frames).reshape(frames, GRID * GRID, DIM)
    assert (embedded.patches[0] - lape).norm() / lape.norm() <= 1e-5


def altered_release(release_directory, tmp_path, change) -> str:
    """A copy of the release whose LLaVA-ST shard went through ``change`` (a dict of tensors, edited in place)."""
    source, _ = release_directory
    copy = tmp_path / "altered"
    shutil.copytree(source, copy)
    shard = copy / "model-00003-of-00003.safetensors"
    tensors = load_file(str(shard))
    change(tensors)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: f for k, f in index["weight_map"].items() if f != shard.name}
    index["weight_map"].update({k: shard.name for k in tensors})
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    return str(copy)


PACKER = "model.vision_resampler.token_packer"


def renamed(tensors):
    tensors[f"{PACKER}_fast.devide_attention.ln_query.weight"] = tensors.pop(f"{PACKER}_fast.devide_attention.ln_q.weight")


def dropped(tensors):
    del tensors[f"{PACKER}_slow.devide_attention.to_out.weight"]


def misshaped(tensors):
    tensors[f"{PACKER}.devide_attention.to_q.0.weight"] = torch.zeros(WIDTH, DIM + 1)


@pytest.mark.parametrize("change,words", [
    (renamed, r"tensors would stay at their random initialisation \(compressor 1; e\.g\. compressor\.fast\.ln_q\.weight\); "
              r"the files hold 1 tensors mapped there with no place in the model, e\.g\. compressor\.fast\.ln_query\.weight"),
    (dropped, r"tensors would stay at their random initialisation \(compressor 1; e\.g\. compressor\.slow\.to_out\.weight\)"),
    (misshaped, r"1 shape mismatches, e\.g\. compressor\.spatial\.to_q\.0\.weight: file \(32, 65\) vs model \(32, 64\)"),
])
def test_a_renamed_missing_or_misshaped_tensor_is_one_sentence_naming_it(release_directory, tmp_path, change, words):
    data = llava_st_recipe()
    data["model"]["init_from"] = [altered_release(release_directory, tmp_path, change)]
    with pytest.raises(CheckpointError, match=words) as error:
        build_model(recipe_from_dict(data))
    assert "\n" not in str(error.value)


def test_random_tensors_are_refused_unless_allowed_and_check_init_prints_where_each_came_from(release_directory, tmp_path, capsys):
    """LLaVA-OneVision alone (no packer, no coordinate tables) into the LLaVA-ST recipe: refused, then allowed."""
    data = llava_st_recipe()
    data["model"]["init_from"] = [altered_release(release_directory, tmp_path, lambda tensors: tensors.clear())]
    with pytest.raises(CheckpointError, match=r"\(compressor 69, position 2; e\.g\. compressor\.fast\.attn\.in_proj_bias\); "
                                              r"add the checkpoint that holds them, or name them under model\.allow_random "
                                              r"\(e\.g\. allow_random: \[compressor, position\]\)"):
        build_model(recipe_from_dict(data))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    assert cli_main(["build", str(recipe), "--check-init"]) == 2
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["component", "tensors", "from", "files", "own", "weights", "allowed", "random", "random"]
    rows = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in table[2:]}
    assert rows["compressor"] == [69, 0, 0, 0, 69] and rows["position"] == [2, 0, 0, 0, 2]
    assert rows["projector"][1] == rows["projector"][0] and rows["llm"][4] == 0
    data["model"]["allow_random"] = ["compressor", "position"]
    model = build_model(recipe_from_dict(data))
    assert model.import_report.missing == {"compressor": 69, "position": 2}
    model.save_pretrained(tmp_path / "saved")  # the table travels with the model (and so into its MLflow run)
    saved = json.loads((tmp_path / "saved" / "stzoo.json").read_text())["init_from"]["coverage"]
    assert {"component": "compressor", "tensors": 69, "from_files": 0, "own_pretrained": 0, "allowed_random": 69,
            "random": 0} in saved
    data["model"]["allow_random"] = ["compresor"]
    with pytest.raises(CheckpointError, match="model.allow_random: 'compresor' names no component or parameter"):
        build_model(recipe_from_dict(data))
