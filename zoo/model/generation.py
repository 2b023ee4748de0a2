"""Decoding: greedy or sampled, with a KV cache, streaming token by token.

Prefill runs the whole prompt under the recipe's structured mask and positions. Every
generated token is text, and text attends causally to everything before it in every
scheme, so decode steps need only the 2-D padding mask; each position axis continues
after its largest id so far. ``use_cache=False`` recomputes the full sequence each step
(the reference the cached path is tested against). The one exception is the bidirectional mask, whose
prompt tokens would see later ones: decoding keeps the prompt's cache as prefill left it, as a model
trained that way would be served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from transformers import DynamicCache

from zoo.data.batch import VideoBatch


@dataclass
class Generation:
    token_ids: list[list[int]]  # per sample, without the stop sequence
    texts: list[str]
    finished: list[bool]  # stopped by a stop sequence (rather than by max_new_tokens)


def stop_sequences(model) -> list[list[int]]:
    tokenizer = model.tokenizer
    stops = []
    if tokenizer.eos_token_id is not None:
        stops.append([tokenizer.eos_token_id])
    end = model.recipe.prompt.answer_end.strip()
    if end:
        ids = list(tokenizer(end, add_special_tokens=False)["input_ids"])
        if ids and ids not in stops:
            stops.append(ids)
    return stops


def _choose(logits: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _with_tokens(batch: VideoBatch, generated: list[list[int]], pad_id: int) -> VideoBatch:
    """``batch`` with each sample's generated tokens appended to its text (for full recompute)."""
    extra = max(len(g) for g in generated)
    ids = torch.nn.functional.pad(batch.text_ids, (0, extra), value=pad_id)
    labels = torch.nn.functional.pad(batch.text_labels, (0, extra), value=-100)
    for b, tokens in enumerate(generated):
        start = int(batch.text_lengths[b])
        ids[b, start : start + len(tokens)] = torch.tensor(tokens, dtype=ids.dtype)
    lengths = batch.text_lengths + torch.tensor([len(g) for g in generated], device=batch.text_lengths.device)
    return VideoBatch(batch.pixels, ids, labels, lengths, batch.video_position, batch.instruction, batch.info, batch.skipped)


@torch.no_grad()
def generate(
    model,
    batch: VideoBatch,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    use_cache: bool = True,
    on_token: Callable[[int, int], None] | None = None,
) -> Generation:
    was_training = model.training
    model.eval()  # compressors with training-only behaviour (ST-LLM masking) use every token here
    try:
        return _generate(model, batch, max_new_tokens, temperature, top_p, seed, use_cache, on_token)
    finally:
        model.train(was_training)


def _generate(model, batch, max_new_tokens, temperature, top_p, seed, use_cache, on_token) -> Generation:
    device = batch.text_ids.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    stops = stop_sequences(model)
    size = batch.size
    visual = model.encode_video(batch.pixels, batch.instruction)
    sequence = model.assemble(batch, visual, padding_side="left")
    model.check_length(sequence)
    mask, positions = model.attention_inputs(sequence)
    cache = DynamicCache(config=model.llm.config) if use_cache else None
    hidden, cache = model.llm(sequence.inputs_embeds, mask, positions, cache=cache, use_cache=use_cache)
    logits = model.logits(hidden[:, -1])
    attention = sequence.attention_mask
    # Next position on every axis: one past the largest id of the real tokens.
    last = positions.masked_fill(~attention.bool().unsqueeze(0), -1).amax(dim=-1)  # (axes, B)

    generated: list[list[int]] = [[] for _ in range(size)]
    finished = [False] * size
    for _ in range(max_new_tokens):
        tokens = _choose(logits, temperature, top_p, generator)
        for b in range(size):
            if finished[b]:
                continue
            generated[b].append(int(tokens[b]))
            if on_token is not None:
                on_token(b, int(tokens[b]))
            for stop in stops:
                if generated[b][-len(stop):] == stop:
                    del generated[b][-len(stop):]
                    finished[b] = True
                    break
        if all(finished):
            break
        tokens = torch.where(torch.tensor(finished, device=device), torch.full_like(tokens, model.pad_id), tokens)
        if use_cache:
            last = last + 1
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            hidden, cache = model.llm(model.embed_text(tokens[:, None]), attention, last.unsqueeze(-1),
                                      cache=cache, use_cache=True)
            logits = model.logits(hidden[:, -1])
        else:
            extended = _with_tokens(batch, generated, model.pad_id)
            sequence = model.assemble(extended, visual, padding_side="left")
            hidden, _ = model.run_llm(sequence)
            logits = model.logits(hidden[:, -1])
    texts = [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
    return Generation(generated, texts, finished)
