"""BLIP-2 / InstructBLIP: a ViT per frame, then a Q-Former that turns it into query tokens.

ST-LLM feeds the 32 query outputs of every frame to the LLM. With ``instruction: true``
the user's question goes into the Q-Former beside the queries (InstructBLIP), the same
text for every frame; the first ``num_query_tokens`` outputs are the visual tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    InstructBlipConfig,
    InstructBlipQFormerConfig,
    InstructBlipQFormerModel,
    InstructBlipVisionConfig,
    InstructBlipVisionModel,
)

from components.base import BuildContext, VisionEncoder
from components.encoders._hf_vision import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from components.weights import ForeignKeys, load_prefixed_state_dict, unreachable_message
from components.registry import register
from components.tokenizers import load_tokenizer
from components.token_metadata import FrameFeatures
from components.config import RecipeError, bounded

PRESETS = {
    # Salesforce/instructblip-vicuna-7b: EVA ViT-g/14 (39 layers, 1408-d) + 12-layer Q-Former, 32 queries
    "instructblip-vicuna-7b": dict(
        vision=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                    image_size=224, patch_size=14, qkv_bias=True, layer_norm_eps=1e-6),
        qformer=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30523),
        num_query_tokens=32,
    ),
}


EVA_QV_BIAS = re.compile(r"^visual_encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$")


def eva_qkv_biases(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """EVA keeps separate q and v biases (k has none); HF's tower has one qkv bias: q, zeros, v."""
    parts: dict[int, dict[str, str]] = {}
    for key in state:
        match = EVA_QV_BIAS.match(key)
        if match:
            parts.setdefault(int(match.group(1)), {})[match.group(2)] = key
    mapped, consumed = {}, []
    for layer, keys in parts.items():
        if set(keys) == {"q_bias", "v_bias"}:
            q, v = state[keys["q_bias"]], state[keys["v_bias"]]
            mapped[f"vision.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
            consumed += keys.values()
    return mapped, consumed


@register("encoder", "blip2_qformer", "BLIP-2 EVA ViT-g + Q-Former per frame (32 queries), optional instruction text as in InstructBLIP")
class QFormerEncoder(VisionEncoder):
    # LAVIS / InstructBLIP / ST-LLM .pth files: EVA ViT-g under visual_encoder.*, ln_vision, query_tokens, Qformer.bert.*
    foreign_keys = {"lavis": ForeignKeys(
        rules=(
            (r"^visual_encoder\.cls_token$", "vision.embeddings.class_embedding"),
            (r"^visual_encoder\.pos_embed$", "vision.embeddings.position_embedding"),
            (r"^visual_encoder\.patch_embed\.proj\.", "vision.embeddings.patch_embedding."),
            (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision.encoder.layers.\1.layer_norm1."),
            (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision.encoder.layers.\1.layer_norm2."),
            (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.weight$", r"vision.encoder.layers.\1.self_attn.qkv.weight"),
            (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision.encoder.layers.\1.self_attn.projection."),
            (r"^visual_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.", r"vision.encoder.layers.\1.mlp.\2."),
            (r"^ln_vision\.", "vision.post_layernorm."),
            (r"^query_tokens$", "query_tokens"),
            (r"^Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.embeddings.layernorm."),
            (r"^Qformer\.bert\.embeddings\.(word|position)_embeddings\.", r"qformer.embeddings.\1_embeddings."),
            (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.", r"qformer.encoder.layer.\1.\2.attention."),
            (r"^Qformer\.bert\.encoder\.layer\.(\d+)\.", r"qformer.encoder.layer.\1."),
        ),
        # Heads and buffers of LAVIS's pre-training objectives, unused here.
        skipped=(r"^Qformer\.cls\.", r"^Qformer\.bert\.embeddings\.position_ids$", r"^visual_encoder\.head\.", r"^temp$"),
        convert=eva_qkv_biases,
    )}

    _mean, _std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    @dataclass
    class Config:
        pretrained: str | None = None  # an HF InstructBLIP checkpoint (dir or hub id); its LLM is not loaded
        config: str | dict | None = None  # preset name or {vision: {...}, qformer: {...}, num_query_tokens: N}
        instruction: bool = True  # feed the user's question into the Q-Former (InstructBLIP)
        instruction_tokenizer: str | None = None  # "byte", a dir or hub id; default: the checkpoint's qformer_tokenizer
        max_instruction_tokens: int = bounded(128, ge=1)
        frozen: bool = True

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        vision_cfg, qformer_cfg, num_queries = self._configs(cfg)
        self.vision = InstructBlipVisionModel(vision_cfg)
        self.qformer = InstructBlipQFormerModel(qformer_cfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, qformer_cfg.hidden_size))
        if not ctx.meta:
            nn.init.normal_(self.query_tokens, std=qformer_cfg.initializer_range)
        self.cfg = cfg
        self.max_instruction_tokens = cfg.max_instruction_tokens
        self._tokenizer = None
        if cfg.instruction:
            try:
                self._tokenizer = load_tokenizer(cfg.instruction_tokenizer, cfg.pretrained, "encoder 'blip2_qformer'",
                                                 subfolder="qformer_tokenizer")
                self._tokenizer.truncation_side = "left"  # InstructBLIP keeps the end of a long question
            except RecipeError:
                if not ctx.meta:  # a --meta summary needs no tokenizer
                    raise
        if cfg.pretrained and ctx.load_pretrained and not ctx.meta:
            self.load_hf_checkpoint(cfg.pretrained)
        if cfg.frozen:
            self.requires_grad_(False)
            self.eval()

    @staticmethod
    def _configs(cfg: Config):
        config = cfg.config
        if isinstance(config, str):
            if config not in PRESETS:
                raise RecipeError(f"encoder 'blip2_qformer': unknown config preset {config!r}; presets: {', '.join(PRESETS)}")
            config = PRESETS[config]
        if isinstance(config, dict):
            unknown = set(config) - {"vision", "qformer", "num_query_tokens"}
            if unknown:
                raise RecipeError(f"encoder 'blip2_qformer': config takes vision, qformer and num_query_tokens, not {sorted(unknown)}")
            vision = InstructBlipVisionConfig(**config.get("vision", {}))
            qformer = InstructBlipQFormerConfig(**{"encoder_hidden_size": vision.hidden_size, **config.get("qformer", {})})
            return vision, qformer, int(config.get("num_query_tokens", 32))
        if cfg.pretrained:
            try:
                full = InstructBlipConfig.from_pretrained(cfg.pretrained)
            except (OSError, ValueError) as error:
                raise RecipeError(unreachable_message("encoder 'blip2_qformer'", cfg.pretrained, error)) from None
            return full.vision_config, full.qformer_config, full.num_query_tokens
        raise RecipeError("encoder 'blip2_qformer': give pretrained: (an InstructBLIP checkpoint) or config: (a preset or fields)")

    def load_hf_checkpoint(self, pretrained: str) -> None:
        """Vision tower, Q-Former and query tokens from an HF InstructBLIP checkpoint; the LLM part is skipped."""
        state = load_prefixed_state_dict(pretrained, {"vision_model.": "vision.", "qformer.": "qformer.", "query_tokens": "query_tokens"},
                                         owner="encoder 'blip2_qformer'")
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RecipeError(
                f"encoder 'blip2_qformer': {pretrained!r} does not match the configured Q-Former "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )

    def train(self, mode: bool = True):
        super().train(mode and not self.frozen)
        return self

    @property
    def embed_dim(self) -> int:
        return self.qformer.config.hidden_size

    @property
    def tokens_per_frame(self) -> int:
        return self.query_tokens.shape[1]

    @property
    def grid(self):
        return None

    @property
    def has_cls(self) -> bool:
        return False

    @property
    def image_size(self) -> int:
        return self.vision.config.image_size

    @property
    def instruction_tokenizer(self):
        return self._tokenizer

    def hf_config(self) -> dict:
        return {
            "vision": self.vision.config.to_dict(),
            "qformer": self.qformer.config.to_dict(),
            "num_query_tokens": self.tokens_per_frame,
        }

    def forward(self, pixels: torch.Tensor, instruction: dict[str, torch.Tensor] | None = None) -> FrameFeatures:
        batch, frames = pixels.shape[:2]
        flat = pixels.flatten(0, 1).to(dtype=self.query_tokens.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            image_embeds = self.vision(pixel_values=flat).last_hidden_state
            image_mask = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
            queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
            input_ids = attention_mask = None
            if self.cfg.instruction and instruction is not None:
                # The same question for every frame of a video.
                input_ids = instruction["input_ids"].repeat_interleave(frames, dim=0)
                text_mask = instruction["attention_mask"].repeat_interleave(frames, dim=0)
                query_mask = torch.ones(queries.shape[:2], dtype=text_mask.dtype, device=text_mask.device)
                attention_mask = torch.cat([query_mask, text_mask], dim=1)
            out = self.qformer(
                input_ids=input_ids,
                attention_mask=attention_mask,
                query_embeds=queries,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask,
            ).last_hidden_state
        tokens = out[:, : self.tokens_per_frame].unflatten(0, (batch, frames))
        return FrameFeatures(tokens, None, None)
