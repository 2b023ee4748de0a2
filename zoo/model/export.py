"""A trained video LLM as a folder the Hugging Face ecosystem reads.

    DIR/config.json          what the folder holds and which parts need STZoo (model_type "stzoo")
    DIR/recipe.yaml, model.safetensors (or HF-style shards + index), tokenizer/, stzoo.json
                             the whole model: VideoLLM.from_pretrained(DIR) loads it back
    DIR/llm/                 the language model alone, as transformers saves it (config.json, sharded
                             safetensors, tokenizer): AutoModelForCausalLM.from_pretrained(DIR/llm); a
                             LoRA run's adapters are merged into it
    DIR/llm_base/, llm_adapter/   LoRA runs only: the LM without its adapters and the adapters in peft's
                             format: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DIR/llm_base),
                             DIR/llm_adapter)
    DIR/README.md            the same, for a person

The folder is written under a temporary name and moved into place when complete.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from components.errors import UserError
from zoo.model.checkpoint import FORMAT_VERSION, replace_directory, save_pretrained

class ExportError(UserError, ValueError):
    """An export that would overwrite what is not an earlier export."""


# What a video needs beyond the plain LM, per component kind: why llm/ alone answers text only.
NEEDS_STZOO = {
    "encoder": "the vision tower and its frame preprocessing",
    "projector": "the map from visual features to the LM's embeddings",
    "compressor": "which visual tokens reach the LM (pooling, masking, packing)",
    "position": "the position ids of visual and text tokens (Harmonic-RoPE and LAPE differ from plain RoPE)",
    "mask": "the attention mask over video tokens (DST and frame-block are not causal)",
}


@dataclass
class ExportSummary:
    directory: Path
    whole_model_files: list[str] = field(default_factory=list)
    llm: str = "llm"
    llm_base: str | None = None
    llm_adapter: str | None = None

    def lines(self) -> list[str]:
        out = [f"whole model ({len(self.whole_model_files)} weight file(s)): VideoLLM.from_pretrained('{self.directory}')",
               f"language model: AutoModelForCausalLM.from_pretrained('{self.directory / self.llm}')"]
        if self.llm_adapter:
            out.append(f"LoRA adapter: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
                       f"'{self.directory / self.llm_base}'), '{self.directory / self.llm_adapter}')")
        return out


def export(model, out: str | Path, max_shard_bytes: int | None = None) -> ExportSummary:
    """Write ``model`` to ``out`` as described above; an existing folder there is replaced once the new one is whole."""
    out = Path(out).resolve()
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export.", dir=out.parent))
    try:
        save_pretrained(model, staging, max_shard_bytes)
        summary = ExportSummary(out, sorted(p.name for p in staging.glob("model*.safetensors")))
        export_language_model(model, staging, summary, out, max_shard_bytes)
        (staging / "config.json").write_text(json.dumps(folder_config(model, summary), indent=2) + "\n")
        (staging / "README.md").write_text(model_card(model, summary))
        replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def check_replaceable(out: Path) -> None:
    """An existing --out is replaced only when it is empty or an earlier export: never a run, a checkpoint, a home."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    try:
        earlier = json.loads((out / "config.json").read_text()).get("model_type") == "stzoo"
    except (OSError, ValueError, AttributeError):
        earlier = False
    if not earlier:
        raise ExportError(f"--out {out}: the folder exists and is not an earlier STZoo export (its config.json "
                              "does not say model_type stzoo); it would be replaced: choose a new or empty folder")


def export_language_model(model, staging: Path, summary: ExportSummary, out: Path, max_shard_bytes: int | None) -> None:
    """llm/ (adapters merged), and for a LoRA run llm_base/ + llm_adapter/, each as its library saves it."""
    llm = model.llm
    shard = max_shard_bytes or "5GB"
    if llm.lora_enabled:
        llm.hf.save_pretrained(str(staging / "llm_adapter"))
        base = copy.deepcopy(llm.hf).unload()  # the LM as it was before the adapters, without them
        base.save_pretrained(str(staging / "llm_base"), max_shard_size=shard)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(staging / "llm_base"))
        point_adapter_at_base(staging / "llm_adapter" / "adapter_config.json", out / "llm_base")
        summary.llm_base, summary.llm_adapter = "llm_base", "llm_adapter"
        merged = copy.deepcopy(llm.hf).merge_and_unload()
    else:
        merged = llm.hf
    merged.save_pretrained(str(staging / "llm"), max_shard_size=shard)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(staging / "llm"))


def point_adapter_at_base(config_file: Path, base: Path) -> None:
    """peft records the base model's hub id or path; the base this adapter was trained on is the exported one."""
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base)
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def folder_config(model, summary: ExportSummary) -> dict:
    """config.json: a Hugging Face-style description of the folder (AutoConfig does not know model_type "stzoo")."""
    return {
        "architectures": ["VideoLLM"],
        "model_type": "stzoo",
        "stzoo_format_version": FORMAT_VERSION,
        "name": model.recipe.name,
        "recipe_fingerprint": model.recipe_fingerprint,
        "components": model.recipe.component_names,
        "whole_model": {"recipe": "recipe.yaml", "weights": summary.whole_model_files, "tokenizer": "tokenizer"},
        "language_model": summary.llm,
        "language_model_base": summary.llm_base,
        "lora_adapter": summary.llm_adapter,
        "needs_stzoo": {kind: NEEDS_STZOO[kind] for kind in NEEDS_STZOO},
        "torch_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def model_card(model, summary: ExportSummary) -> str:
    names = model.recipe.component_names
    parts = "\n".join(f"- {kind} `{names[kind]}`: {NEEDS_STZOO[kind]}" for kind in NEEDS_STZOO)
    loading = "\n".join(f"- {line}" for line in summary.lines())
    return (f"# {model.recipe.name} (STZoo export)\n\nRecipe fingerprint `{model.recipe_fingerprint}`.\n\n"
            f"## Loading\n\n{loading}\n\n## What needs STZoo\n\n`llm/` is a plain causal LM: it answers text with "
            f"causal attention and consecutive positions. A video goes through parts only STZoo builds:\n\n{parts}\n")
