"""Llama-family LMs: Vicuna v1.1/v1.5 (MASH-VLM, ST-LLM, LLaVA-1.5), Llama 2/3."""

from __future__ import annotations

from transformers import LlamaConfig

from components.llms._causal_lm import CausalLanguageModel
from components.registry import register

PRESETS = {
    # lmsys/vicuna-7b-v1.5, liuhaotian/llava-v1.5-7b (LLM part), Vicuna-7B v1.1 (InstructBLIP): Llama-2-7B shape
    "vicuna-7b": dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        max_position_embeddings=4096, rms_norm_eps=1e-5, vocab_size=32000, rope_theta=10000.0, tie_word_embeddings=False,
    ),
}


@register("llm", "llama", "Llama-family causal LM (Vicuna-7B v1.1/v1.5) via transformers; tuning frozen | lora | full")
class LlamaLM(CausalLanguageModel):
    model_type = "llama"
    config_class = LlamaConfig
    presets = PRESETS
