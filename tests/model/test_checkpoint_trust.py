"""A checkpoint is data, never code: plugin modules its recipe names are imported only when the user
names them too (issue 20, item 4: `plugins: [this]` in a downloaded checkpoint used to run its code)."""

from __future__ import annotations

import logging

import pytest
import yaml

from components.weights import CheckpointError
from tests.helpers import tiny_recipe
from zoo.cli import main
from zoo.config.recipe import recipe_from_dict
from zoo.model.video_llm import VideoLLM, build_model

PLUGIN = """
from pathlib import Path
Path({marker!r}).write_text("this code ran")
from components.masks.causal import CausalMask
from components.registry import register

@register("mask", {mask!r}, "a causal mask from a plugin (test only)")
class PluginMask(CausalMask):
    pass
"""


@pytest.fixture
def checkpoint_naming_a_plugin(tmp_path, monkeypatch):
    """A saved tiny model whose recipe.yaml names a plugin module that, imported, leaves a marker file."""
    def make(module: str, uses_its_mask: bool):
        (tmp_path / f"{module}.py").write_text(PLUGIN.format(marker=str(tmp_path / f"{module}.ran"), mask=f"{module}_mask"))
        monkeypatch.syspath_prepend(str(tmp_path))
        directory = tmp_path / "checkpoint"
        build_model(recipe_from_dict(tiny_recipe())).save_pretrained(directory)
        saved = yaml.safe_load((directory / "recipe.yaml").read_text())
        saved["plugins"] = [module]
        if uses_its_mask:
            saved["model"]["mask"] = {"name": f"{module}_mask"}
        (directory / "recipe.yaml").write_text(yaml.safe_dump(saved))
        return directory, tmp_path / f"{module}.ran"

    return make


def test_a_plugin_named_only_by_the_checkpoint_is_not_imported(checkpoint_naming_a_plugin, caplog):
    directory, marker = checkpoint_naming_a_plugin("stzoo_test_unused_plugin", uses_its_mask=False)
    with caplog.at_level(logging.WARNING):
        model = VideoLLM.from_pretrained(directory)
    assert not marker.exists() and model.recipe.plugins == []
    assert "names plugins stzoo_test_unused_plugin; they were not imported" in caplog.text
    assert "--plugins stzoo_test_unused_plugin" in caplog.text


def test_a_checkpoint_needing_an_untrusted_plugin_says_which_to_trust(checkpoint_naming_a_plugin, capsys):
    directory, marker = checkpoint_naming_a_plugin("stzoo_test_needed_plugin", uses_its_mask=True)
    with pytest.raises(CheckpointError, match="unknown mask 'stzoo_test_needed_plugin_mask'.*the checkpoint names plugins "
                                              "stzoo_test_needed_plugin, which were not imported: pass --plugins "
                                              "stzoo_test_needed_plugin if you trust them"):
        VideoLLM.from_pretrained(directory)
    assert not marker.exists()
    assert main(["eval", str(directory), "--benchmark", "none.json"]) == 2  # one sentence, no traceback
    assert "pass --plugins stzoo_test_needed_plugin" in capsys.readouterr().err and not marker.exists()
    trusted = VideoLLM.from_pretrained(directory, plugins=["stzoo_test_needed_plugin"])
    assert marker.exists() and trusted.recipe.model.mask.name == "stzoo_test_needed_plugin_mask"
