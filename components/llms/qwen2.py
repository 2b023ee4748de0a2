"""Qwen2 LMs (LLaVA-OneVision-7B, the base of LLaVA-ST)."""

from __future__ import annotations

from transformers import Qwen2Config

from components.llms._causal_lm import CausalLanguageModel
from components.registry import register

PRESETS = {
    # Qwen/Qwen2-7B-Instruct, lmms-lab/llava-onevision-qwen2-7b-ov (LLM part)
    "qwen2-7b": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        max_position_embeddings=32768, rms_norm_eps=1e-6, vocab_size=152064, rope_theta=1000000.0,
        tie_word_embeddings=False, use_sliding_window=False,
    ),
}


@register("llm", "qwen2", "Qwen2 causal LM (LLaVA-OneVision Qwen2-7B) via transformers; tuning frozen | lora | full")
class Qwen2LM(CausalLanguageModel):
    model_type = "qwen2"
    config_class = Qwen2Config
    presets = PRESETS
