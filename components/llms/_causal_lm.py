"""What the HF causal-LM backbones share: loading, tokenizer, tuning mode, and a plain forward.

The video LLM calls ``forward`` with inputs_embeds, a prebuilt 4-D mask (or a 2-D
padding mask in decode steps) and position ids of shape (axes, B, L); the HF modeling
code is never forked: the rotary module is swapped (components.positions.rotary) and
4-D masks pass through HF's mask creation unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from components.base import BuildContext
from components.weights import ForeignKeys, resolve_hf_config, unreachable_message
from components.tokenizers import load_tokenizer
from components.config import RecipeError, bounded

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraSpec:
    r: int = bounded(128, ge=1)
    alpha: int = bounded(256, ge=1)
    dropout: float = bounded(0.05, ge=0, lt=1)
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class LanguageModelConfig:
    pretrained: str | None = None  # local directory or hub id
    config: str | dict | None = None  # preset name or HF config fields (tiny recipes, --meta builds)
    tokenizer: str | None = None  # "byte", a directory or hub id; default: the pretrained model's
    tuning: Literal["frozen", "lora", "full"] = "full"
    lora: LoraSpec = field(default_factory=LoraSpec)
    attn_implementation: Literal["eager", "sdpa", "flex_attention", "flash_attention_2"] = "sdpa"
    gradient_checkpointing: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


def peft_weight_name(name: str, own_keys: set[str]) -> str:
    """Where ``hf.<rest>`` sits when the LLM tunes with LoRA: under peft's wrapper, a wrapped linear's in base_layer."""
    if name in own_keys or not name.startswith("hf."):
        return name
    wrapped = "hf.base_model.model." + name[len("hf."):]
    for candidate in (wrapped, wrapped.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")):
        if candidate in own_keys:
            return candidate
    return name


class CausalLanguageModel(nn.Module):
    """An HF causal LM of one model family, with its tokenizer and tuning mode applied."""

    # ST-LLM keeps its LLM under llama_model.* (LAVIS style); LLaVA releases are an HF LM whose
    # model.* also holds the tower and projector, so the LLM's rules are tried after theirs.
    foreign_keys = {
        "lavis": ForeignKeys(rules=((r"^llama_model\.", "hf."),), resolve=peft_weight_name),
        "llava": ForeignKeys(rules=((r"^model\.", "hf.model."), (r"^lm_head\.", "hf.lm_head.")), resolve=peft_weight_name),
    }

    model_type: str = ""
    config_class: type = None
    presets: dict[str, dict] = {}
    Config = LanguageModelConfig

    def __init__(self, cfg: LanguageModelConfig, ctx: BuildContext):
        super().__init__()
        self.cfg = cfg
        self.owner = f"llm {self.registry_name!r}"
        self.tokenizer, self.tokenizer_error = self._load_tokenizer(cfg, ctx)
        self.hf = self._load_model(cfg, ctx)
        self._check_family(self.hf.config)
        self.lora_enabled = False
        if cfg.gradient_checkpointing:
            self.hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.apply_tuning(cfg.tuning)

    # --- construction -------------------------------------------------------------------

    def _load_tokenizer(self, cfg, ctx):
        try:
            return load_tokenizer(cfg.tokenizer, cfg.pretrained, self.owner), None
        except RecipeError as error:
            if ctx.meta:  # a --meta summary can do without; token counts are then estimated
                return None, str(error)
            raise

    def resolve_config(self, cfg):
        hf_config = resolve_hf_config(self.owner, self.config_class, cfg.pretrained, cfg.config, self.presets)
        if self.tokenizer is not None and isinstance(cfg.config, dict) and "vocab_size" not in cfg.config:
            hf_config.vocab_size = len(self.tokenizer)
        return hf_config

    def _load_model(self, cfg, ctx):
        dtype = TORCH_DTYPES[cfg.dtype]
        if cfg.pretrained and ctx.load_pretrained and not ctx.meta:
            try:
                model = AutoModelForCausalLM.from_pretrained(cfg.pretrained, dtype=dtype, attn_implementation=cfg.attn_implementation)
            except (OSError, ValueError) as error:
                raise RecipeError(unreachable_message(self.owner, cfg.pretrained, error)) from None
        else:
            hf_config = self.resolve_config(cfg)
            hf_config._attn_implementation = cfg.attn_implementation
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=cfg.attn_implementation)
        loads_weights = bool(cfg.pretrained and ctx.load_pretrained and not ctx.meta)
        if loads_weights and self.tokenizer is not None and len(self.tokenizer) > model.get_input_embeddings().num_embeddings:
            # Tokens added after pre-training (a pad token, say) need rows of their own. A saved STZoo
            # checkpoint is rebuilt from its own config, whose vocab_size is already right.
            model.resize_token_embeddings(len(self.tokenizer))
        return model

    def _check_family(self, config) -> None:
        if config.model_type != self.model_type:
            raise RecipeError(
                f"{self.owner}: {self.cfg.pretrained or 'the config'} is a {config.model_type!r} model; "
                f"use llm: {config.model_type} if STZoo registers it, or a {self.model_type} checkpoint"
            )
        if getattr(config, "use_sliding_window", False):
            raise RecipeError(f"{self.owner}: sliding-window attention is not supported with structured masks; set use_sliding_window: false")

    def apply_tuning(self, tuning: str) -> None:
        if tuning == "lora":
            self.enable_lora(self.cfg.lora)
        elif tuning == "frozen":
            self.hf.requires_grad_(False)
        else:
            self.hf.requires_grad_(True)

    def enable_lora(self, spec: LoraSpec) -> None:
        """Wrap the LM with fresh LoRA adapters; only they train."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                            target_modules=list(spec.target_modules), bias="none")
        self.hf = get_peft_model(self.hf, config)
        self.lora_enabled = True

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the base weights and drop them (LLaVA-ST's stage 3 starts from here)."""
        if self.lora_enabled:
            self.hf = self.hf.merge_and_unload()
            self.lora_enabled = False

    # --- structure ----------------------------------------------------------------------

    @property
    def base(self) -> nn.Module:
        """The HF CausalLM under any PEFT wrapper."""
        return self.hf.get_base_model() if self.lora_enabled else self.hf

    @property
    def decoder(self) -> nn.Module:
        """The HF decoder stack (LlamaModel, Qwen2Model): embeddings, layers, norm, rotary_emb."""
        return self.base.model

    @property
    def config(self):
        return self.base.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.num_heads

    @property
    def max_length(self) -> int:
        return self.config.max_position_embeddings

    @property
    def attn_implementation(self) -> str:
        return self.config._attn_implementation

    def hf_config(self) -> dict:
        config = self.config.to_dict()
        config.pop("_attn_implementation_autoset", None)
        return config

    # --- compute ------------------------------------------------------------------------

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds, attention_mask, position_ids, cache=None, use_cache: bool = False):
        """Last hidden states (after the final norm) and the KV cache."""
        out = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.base.get_output_embeddings()(hidden)
