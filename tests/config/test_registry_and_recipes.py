"""The registry and recipes: lookups, plugins, extends/overrides, and one-line errors for bad recipes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from components import registry
from tests.helpers import REPO, tiny_recipe
from zoo.config.recipe import load_recipe, recipe_from_dict
from components.config import RecipeError, load_yaml

EXPECTED = {
    "encoder": {"clip", "blip2_qformer", "siglip", "timm"},
    "projector": {"linear", "mlp2x_gelu"},
    "compressor": {"all_tokens", "mean_pool"},
    "position": {"rope"},
    "mask": {"causal"},
    "llm": {"llama", "qwen2"},
}


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_components_json_lists_every_kind_with_descriptions():
    result = run_cli("components", "--json")
    assert result.returncode == 0, result.stderr
    catalogue = json.loads(result.stdout)
    for kind, names in EXPECTED.items():
        listed = {entry["name"] for entry in catalogue[kind]}
        assert names <= listed, (kind, listed)
        assert all(entry["description"] for entry in catalogue[kind])


def test_unknown_name_lists_valid_names():
    with pytest.raises(registry.RegistryError) as error:
        registry.lookup("mask", "casual")
    message = str(error.value)
    assert "did you mean 'causal'" in message and "valid mask names: " in message and "causal" in message


def test_a_plugin_file_with_one_decorator_adds_a_component(tmp_path, monkeypatch):
    (tmp_path / "my_masks.py").write_text(
        "from dataclasses import dataclass\n"
        "from components.base import MaskScheme\n"
        "from components.registry import register\n"
        "@register('mask', 'everything_visible', 'every token sees every token')\n"
        "class EverythingVisible(MaskScheme):\n"
        "    @dataclass\n"
        "    class Config:\n"
        "        strength: int = 1\n"
        "    def __init__(self, cfg, ctx):\n"
        "        self.cfg = cfg\n"
        "    def mask_function(self, sequence):\n"
        "        return lambda b, h, q, kv: q >= 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tiny_recipe(mask={"name": "everything_visible", "strength": 3})
    data["plugins"] = ["my_masks"]
    recipe = recipe_from_dict(data)
    assert recipe.model.mask.name == "everything_visible" and recipe.model.mask.options.strength == 3


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_extends_overrides_and_dump_round_trip(tmp_path):
    base = write(tmp_path, "base.yaml", tiny_recipe())
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "name": "child", "train": {"lr": 0.5}})
    recipe = load_recipe(child, ["data.video.frames=6", "model.llm.tuning=frozen"])
    assert recipe.name == "child" and recipe.train.lr == 0.5
    assert recipe.data.video.frames == 6 and recipe.model.llm.options.tuning == "frozen"
    assert recipe.model.encoder.options.config["hidden_size"] == 32  # inherited from base.yaml
    dumped = write(tmp_path, "dumped.yaml", yaml.safe_load(recipe.dump()))
    again = load_recipe(dumped)
    assert again.to_dict() == recipe.to_dict()
    assert base.exists()


def test_swapping_a_component_drops_the_old_options(tmp_path):
    path = write(tmp_path, "r.yaml", tiny_recipe(compressor={"name": "mean_pool", "frames_per_group": 2}))
    recipe = load_recipe(path, ["model.compressor=all_tokens"])
    assert recipe.model.compressor.name == "all_tokens"
    # Renaming keeps the options when only the name key is set; then they do not fit and the error says how to swap.
    with pytest.raises(RecipeError) as error:
        load_recipe(path, ["model.compressor.name=all_tokens", "model.compressor.frames_per_group=2"])
    assert "frames_per_group" in str(error.value) and "--set model.compressor=all_tokens" in str(error.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.mask=dts", ["model.mask.name", "unknown mask 'dts'", "valid mask names"]),
        ("model.llm.tunning=full", ["--set model.llm.tunning", "unknown key", "did you mean 'tuning'"]),
        ("train.lr=fast", ["--set train.lr", "'fast' is not a number"]),
        ("data.video.frames=-4", ["--set data.video.frames", "out of range", "at least 1"]),
        ("model.llm.tuning=partial", ["--set model.llm.tuning", "'partial' is not allowed", "'frozen'"]),
    ],
)
def test_bad_recipe_values_name_the_key_and_the_source(tmp_path, override, expected):
    path = write(tmp_path, "r.yaml", tiny_recipe())
    with pytest.raises(RecipeError) as error:
        load_recipe(path, [override])
    message = str(error.value)
    for piece in expected:
        assert piece in message, message
    assert "\n" not in message


def test_a_misspelled_key_in_a_file_names_that_file(tmp_path):
    write(tmp_path, "base.yaml", tiny_recipe())
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "trian": {"lr": 1.0}})
    with pytest.raises(RecipeError) as error:
        load_recipe(child)
    assert "child.yaml" in str(error.value) and "trian" in str(error.value) and "did you mean 'train'" in str(error.value)


def test_cli_prints_one_line_and_exits_2_on_a_bad_recipe(tmp_path):
    path = write(tmp_path, "r.yaml", tiny_recipe())
    result = run_cli("build", str(path), "--set", "model.encoder.selct_layer=-2")
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "selct_layer" in lines[0] and "Traceback" not in result.stderr


def test_missing_recipe_file_and_cycles_are_clear(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    write(tmp_path, "a.yaml", {"extends": "b.yaml"})
    write(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    path = write(tmp_path, "r.yaml", {**tiny_recipe(), "train": {"lr": "1e-3"}})
    assert load_recipe(path, ["train.weight_decay=5e-2"]).train.lr == 0.001
    assert load_recipe(path, ["train.weight_decay=5e-2"]).train.weight_decay == 0.05


def test_an_override_assigns_a_mapping_rather_than_merging_it(tmp_path):
    data = tiny_recipe()
    data["data"]["eval"] = {"a": "a.json", "b": "b.json"}
    path = write(tmp_path, "r.yaml", data)
    assert load_recipe(path, ["data.eval={}"]).data.eval == {}
    assert load_recipe(path, ["data.eval={c: c.json}"]).data.eval == {"c": "c.json"}
    assert load_recipe(path, ["data.eval.d=d.json"]).data.eval == {"a": "a.json", "b": "b.json", "d": "d.json"}


def test_exponent_only_numbers_are_numbers_in_free_form_mappings_too(tmp_path):
    """YAML 1.1 reads 1e-6 as a string; an HF config's rms_norm_eps has no declared type to turn it back."""
    assert load_yaml("a: 1e-6\nb: 1.0e-6\nc: 2E3\nd: 1e5a\ne: '1e-6'") == {"a": 1e-6, "b": 1e-6, "c": 2000.0, "d": "1e5a", "e": "1e-6"}
    recipe = load_recipe("recipes/tiny/baseline.yaml", ["model.llm.config.rms_norm_eps=1e-6"])
    assert recipe.model.llm.options.config["rms_norm_eps"] == 1e-6
    (tmp_path / "r.yaml").write_text(f"extends: {REPO / 'recipes/tiny/baseline.yaml'}\nmodel:\n  llm:\n    config: {{rms_norm_eps: 1e-5}}\n")
    assert load_recipe(str(tmp_path / "r.yaml")).model.llm.options.config["rms_norm_eps"] == 1e-5
