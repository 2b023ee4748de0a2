"""Sweep children are named by what decides their numbers: an edited experiment file makes new children for the
variants it changed (and the evaluation-only variants that read their models) and keeps the others."""

from __future__ import annotations

import yaml

from tests.helpers import REPO
from zoo.config.experiment import load_experiment
from zoo.runs.sweep import children

EXPERIMENT = {
    "name": "edits", "base": str(REPO / "recipes/tiny/mash_vlm.yaml"), "tiny": str(REPO / "recipes/tiny/mash_vlm.yaml"),
    "seeds": [0, 1], "set": {"train.max_steps": 10, "eval.max_samples": 8},
    "variants": {
        "trained": {"set": {}},
        "other": {"set": {"model.mask": "causal"}},
        "shuffled": {"evaluate_from": "trained", "set": {"data.video.frame_order": "shuffled"}},
    },
}


def names(tmp_path, edit=None, extra=None) -> dict[tuple[str, int], str]:
    data = yaml.safe_load(yaml.safe_dump(EXPERIMENT))
    if edit:
        edit(data)
    path = tmp_path / "edits.yaml"
    path.write_text(yaml.safe_dump(data))
    return {(c.variant, c.seed): c.name for c in children(load_experiment(path), "tiny", extra=extra)}


def changed(before: dict, after: dict) -> set:
    return {key for key in before if before[key] != after[key]}


def test_a_child_is_named_by_variant_seed_and_the_fingerprint_of_its_numbers(tmp_path):
    found = names(tmp_path)
    assert set(found) == {(v, s) for v in ("trained", "other", "shuffled") for s in (0, 1)}
    for (variant, seed), name in found.items():
        prefix, fingerprint = name.rsplit("-", 1)
        assert prefix == f"edits.tiny.{variant}.seed{seed}" and len(fingerprint) == 8
    assert names(tmp_path) == found  # the same file, the same names: a re-run skips what finished


def test_an_edit_renames_exactly_the_children_it_changes(tmp_path):
    before = names(tmp_path)

    def trained_lr(data):
        data["variants"]["trained"]["set"]["train.lr"] = 5e-4
    # The trained variant's weights change, and with them what its evaluation-only variant measures.
    assert changed(before, names(tmp_path, trained_lr)) == {(v, s) for v in ("trained", "shuffled") for s in (0, 1)}

    def fewer_samples(data):
        data["set"]["eval.max_samples"] = 4
    # An evaluation setting does not change the weights' fingerprint, but it changes every number.
    assert changed(before, names(tmp_path, fewer_samples)) == set(before)

    def shuffled_only(data):
        data["variants"]["shuffled"]["set"]["data.video.frames"] = 4
    assert changed(before, names(tmp_path, shuffled_only)) == {("shuffled", 0), ("shuffled", 1)}
    assert changed(before, names(tmp_path, extra=["train.max_steps=12"])) == set(before)


def test_the_progress_bar_and_output_folder_do_not_make_new_children(tmp_path):
    before = names(tmp_path)
    assert names(tmp_path, extra=["train.progress_bar=false", "train.output_dir=/tmp/elsewhere"]) == before
