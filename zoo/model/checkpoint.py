"""save_pretrained / from_pretrained of a whole video LLM.

A checkpoint directory is self-contained and loads offline:
    model.safetensors   every weight (frozen encoder included); or, saved with a shard size,
                        model-0000i-of-0000n.safetensors and model.safetensors.index.json as HF shards them
    recipe.yaml         the resolved recipe, each component's ``config`` replaced by the
                        full architecture it was built with
    tokenizer/          the LLM tokenizer; instruction_tokenizer/ for InstructBLIP encoders
    stzoo.json          format version, component names, parameter counts, the trained recipe's fingerprint
Files are written to a temporary directory and renamed into place, so an interrupted
save (a full disk, a killed job) never leaves a half-written checkpoint under the name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file

from components.config import RecipeError, Sources, load_yaml
from components.weights import CheckpointError
from zoo.config.recipe import Recipe, apply_overrides, recipe_from_dict
from zoo.model.checkpoint_import import coverage
from components.errors import error_reason

logger = logging.getLogger("stzoo.checkpoint")

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"  # HF's name for the map of sharded weights


def self_contained_recipe(model) -> dict:
    """The recipe with every component's architecture written out, so it rebuilds without downloads."""
    data = model.recipe.to_dict()
    parts = data["model"]
    for kind, module in (("encoder", model.encoder), ("llm", model.llm)):
        hf_config = module.hf_config() if hasattr(module, "hf_config") else None
        if hf_config is not None and "config" in parts[kind]:
            parts[kind]["config"] = _plain(hf_config)
    parts["llm"]["tokenizer"] = "tokenizer"
    data["model"]["init_from"] = []  # the saved weights already hold whatever these brought in
    if model.encoder.instruction_tokenizer is not None:
        parts["encoder"]["instruction_tokenizer"] = "instruction_tokenizer"
    return data


def _plain(value):
    """JSON round trip: HF config dicts can hold tuples and numpy scalars that YAML would tag."""
    return json.loads(json.dumps(value, default=str))


def save_pretrained(model, directory, max_shard_bytes: int | None = None, state_dict: dict | None = None) -> Path:
    """The checkpoint in ``directory``; with ``max_shard_bytes``, its weights in shards of at most that size
    (a single tensor larger than that gets a shard of its own); ``state_dict`` (default: the model's own) is
    given where the module holds shards (FSDP2's gathered weights)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write_weights(weights_to_save(model, state_dict), staging, max_shard_bytes)
        (staging / "recipe.yaml").write_text(yaml.safe_dump(self_contained_recipe(model), sort_keys=False, width=100))
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(staging / "tokenizer"))
        if model.encoder.instruction_tokenizer is not None:
            model.encoder.instruction_tokenizer.save_pretrained(str(staging / "instruction_tokenizer"))
        params = sum(p.numel() for p in model.parameters())
        # The fingerprint of the recipe trained, not of recipe.yaml: that one has every architecture written out,
        # so it hashes differently, and evaluations must name the run's fingerprint.
        info = {"format_version": FORMAT_VERSION, "components": model.recipe.component_names, "params": params,
                "recipe_fingerprint": model.recipe_fingerprint}
        record = init_from_record(model)
        if record is not None:  # where the weights training started from came from (logged with the run's model)
            info["init_from"] = record
        (staging / "stzoo.json").write_text(json.dumps(info, indent=2))
        replace_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def init_from_record(model) -> dict | None:
    """The model.init_from files, the import's summary and its coverage table; for a later stage of a staged run
    (built from the previous stage's hand-off, not from the files) the record the first stage carried forward."""
    report = getattr(model, "import_report", None)
    if report is None:
        return getattr(model, "inherited_init_from", None)
    rows = coverage(model, report, model.recipe.model.allow_random)
    return {"files": model.recipe.model.init_from, "summary": report.summary(), "coverage": [asdict(row) for row in rows]}


def weights_to_save(model, state: dict | None = None) -> dict:
    """The state dict with each tied weight once (as safetensors' save_model keeps it) and every other
    tensor in storage of its own: DeepSpeed's ZeRO-1/2 turns parameters into views of one flat buffer,
    which safetensors refuses to write as it is."""
    state = model.state_dict() if state is None else state
    seen: dict[tuple, str] = {}
    weights = {}
    for name in sorted(state):
        tensor = state[name].detach()
        tie = (tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype)
        if tensor.numel() and tie in seen:  # a tied weight (an LLM's lm_head and embeddings): load_model restores it
            continue
        seen[tie] = name
        whole = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        weights[name] = tensor if whole else tensor.contiguous().clone()
    return weights


def write_weights(weights: dict, directory: Path, max_shard_bytes: int | None = None) -> list[Path]:
    """model.safetensors, or shards named and indexed as transformers names them when one file would pass
    ``max_shard_bytes``; returns the files written."""
    shards: list[dict] = [{}]
    size = 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(directory / WEIGHTS), metadata={"format": "pt"})
        return [directory / WEIGHTS]
    files = [directory / f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for shard, file in zip(shards, files):
        save_file(shard, str(file), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in weights.values())
    index = {"metadata": {"total_size": total},
             "weight_map": {name: file.name for shard, file in zip(shards, files) for name in shard}}
    (directory / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2))
    return files


def load_shards(model, directory: Path, device: str) -> tuple[list[str], list[str]]:
    """(missing, unexpected) after loading every shard the index names; a tied weight saved once counts as loaded
    under each of its names, as safetensors' load_model counts it."""
    try:
        weight_map = json.loads((directory / WEIGHTS_INDEX).read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{directory / WEIGHTS_INDEX}: not a shard index ({type(error).__name__}); the checkpoint "
                              "is damaged: copy it again from where it was saved") from None
    state = {}
    for file in files:
        state.update(load_file(str(directory / file), device=device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {_storage_of(own[name]) for name in state if name in own}
    return [name for name in missing if _storage_of(own[name]) not in loaded], list(unexpected)


def _storage_of(tensor) -> tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))


def replace_directory(staging: Path, directory: Path) -> None:
    """Move ``staging`` to ``directory``; an existing checkpoint is swapped out only once the new one is complete."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(staging, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_checkpoint_recipe(directory) -> dict:
    directory = Path(directory)
    recipe_file = directory / "recipe.yaml"
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    if not recipe_file.is_file() or not ((directory / WEIGHTS).is_file() or (directory / WEIGHTS_INDEX).is_file()):
        raise CheckpointError(f"{directory}: not an STZoo checkpoint (recipe.yaml and {WEIGHTS} or {WEIGHTS_INDEX} "
                              "are expected)")
    try:
        data = load_yaml(recipe_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{recipe_file}: unreadable ({type(error).__name__}); the checkpoint is damaged: "
                              "copy it again from where it was saved") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{recipe_file}: holds no recipe with a model section; the checkpoint is damaged: "
                              "copy it again from where it was saved")
    for kind, name in (("llm", "tokenizer"), ("encoder", "instruction_tokenizer")):
        value = data["model"][kind].get(name)
        if value == name and not (directory / value).is_dir():  # saved beside the weights, as save_pretrained writes it
            raise CheckpointError(f"{directory}: its {name}/ folder is missing (recipe.yaml says the {kind}'s {name} was "
                                  "saved there); copy the whole checkpoint directory again")
        if value and not Path(value).is_absolute() and (directory / value).exists():
            data["model"][kind][name] = str(directory / value)
    return data


def checkpoint_recipe(directory, overrides: dict | None = None, plugins: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The recipe a checkpoint was saved with (its tokenizers found inside it), with ``overrides`` applied.

    A checkpoint is data, never code: of the plugin modules its recipe names, only those the user
    names too (``plugins``: ``--plugins``, or the recipe being run) are imported.
    """
    directory = Path(directory)
    data = read_checkpoint_recipe(directory)
    named = [str(p) for p in data.get("plugins") or []]
    data["plugins"] = [p for p in named if p in plugins]
    skipped = [p for p in named if p not in plugins]
    if skipped:
        logger.warning("%s names plugins %s; they were not imported (a checkpoint cannot run code): pass --plugins %s "
                       "if you trust them", directory, ", ".join(skipped), ",".join(skipped))
    sources = Sources(default=str(directory / "recipe.yaml"))
    if overrides:
        data = apply_overrides(data, overrides, sources, source="evaluation overrides")
    try:
        return recipe_from_dict(data, sources, source=str(directory / "recipe.yaml"))
    except RecipeError as error:
        if not skipped:
            raise
        raise CheckpointError(f"{error}; the checkpoint names plugins {', '.join(skipped)}, which were not imported: "
                              f"pass --plugins {','.join(skipped)} if you trust them") from None


def saved_fingerprint(directory) -> str | None:
    """The fingerprint of the recipe the checkpoint was trained with (None for checkpoints saved before it was kept)."""
    try:
        return json.loads((Path(directory) / "stzoo.json").read_text()).get("recipe_fingerprint")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def load_weights(model, directory, device=None) -> None:
    """The checkpoint's weights (one file or HF-style shards) into ``model`` (rebuilt from ``checkpoint_recipe``),
    checked key by key."""
    directory = Path(directory)
    sharded = (directory / WEIGHTS_INDEX).is_file() and not (directory / WEIGHTS).is_file()
    where = directory / (WEIGHTS_INDEX if sharded else WEIGHTS)
    try:
        if sharded:
            missing, unexpected = load_shards(model, directory, str(device or "cpu"))
        else:
            missing, unexpected = load_model(model, str(where), strict=False, device=str(device or "cpu"))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{where}: unreadable ({error}); the file is corrupt or truncated") from None
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(f"{where} does not match the model its recipe describes: {error_reason(error, 300)}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{where} does not match the model its recipe describes: "
            f"{len(missing)} missing (e.g. {sorted(missing)[:3]}) and {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]}) weights"
        )
    if device is not None:
        model.to(device)
    model.eval()
