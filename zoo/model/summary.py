"""What ``stzoo build`` reports about a recipe's model: components, parameters, tokens per sample."""

from __future__ import annotations

from torch import nn

from zoo.model.cost import training_step_cost
from zoo.model.video_llm import VideoLLM
from zoo.data.prompting import encode, estimate_tokens, question_turns, render


def parameter_counts(model: VideoLLM) -> dict:
    def count(module: nn.Module | None) -> dict:
        params = list(module.parameters()) if module is not None else []
        return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}

    modules = {name: count(child) for name, child in model.named_children()}
    return {**count(model), "modules": modules}


def prompt_tokens(model: VideoLLM) -> dict:
    """Text tokens of the recipe's default prompt; estimated (and said so) when no tokenizer is at hand."""
    recipe = model.recipe
    turns = question_turns(recipe.prompt.default_question)
    if model.tokenizer is not None:
        encoded = encode(model.tokenizer, recipe.prompt, turns, for_generation=True, add_bos=recipe.prompt.add_bos)
        return {"count": len(encoded.ids), "exact": True}
    text, _, _ = render(recipe.prompt, turns, for_generation=True)
    text = text.replace(recipe.prompt.video_placeholder, "")
    return {"count": estimate_tokens(text) + int(recipe.prompt.add_bos), "exact": False,
            "why": model.llm.tokenizer_error}


def summarize(model: VideoLLM, meta: bool, world_size: int = 8) -> dict:
    recipe = model.recipe
    visual = model.visual_token_count()
    text = prompt_tokens(model)
    encoder = model.encoder
    return {
        "recipe": recipe.name,
        "source": recipe.source,
        "meta": meta,
        "components": recipe.component_names,
        "params": parameter_counts(model),
        "frames": recipe.data.video.frames,
        "encoder": {"image_size": encoder.image_size, "grid": encoder.grid, "tokens_per_frame": encoder.tokens_per_frame,
                    "has_cls": encoder.has_cls, "dim": encoder.embed_dim},
        "llm": {"hidden_size": model.llm.hidden_size, "layers": model.llm.config.num_hidden_layers,
                "context": model.llm.max_length, "attn_implementation": model.llm.attn_implementation},
        "visual_tokens": visual,
        "text_tokens": text,
        "sequence_length": visual + text["count"],
        "fits_context": visual + text["count"] <= (recipe.prompt.max_length or model.llm.max_length),
        "default_question": recipe.prompt.default_question,
        "cost": {"world_size": world_size, **training_step_cost(model, world_size).as_dict()},
    }


def format_summary(summary: dict) -> str:
    params = summary["params"]
    lines = [
        f"recipe        {summary['recipe']}  ({summary['source']})",
        "components    " + "  ".join(f"{k}={v}" for k, v in summary["components"].items()),
        f"parameters    {params['total'] / 1e9:.3f} B total, {params['trainable'] / 1e9:.3f} B trainable",
    ]
    for name, counts in params["modules"].items():
        lines.append(f"  {name:<12}{counts['total']:>16,} ({counts['trainable']:,} trainable)")
    text = summary["text_tokens"]
    lines += [
        f"frames        {summary['frames']}  ({summary['encoder']['tokens_per_frame']} tokens per frame, grid {summary['encoder']['grid']})",
        f"visual tokens {summary['visual_tokens']}",
        f"text tokens   {text['count']}{'' if text['exact'] else ' (estimated: no tokenizer available)'}",
        f"sequence      {summary['sequence_length']} tokens for: {summary['default_question']!r}",
    ]
    cost = summary["cost"]
    lines.append(f"train step    {cost['train_flops_per_sample'] / 1e12:.2f} TFLOP per sample; model states per GPU on "
                 f"{cost['world_size']} GPUs: ZeRO-2 {cost['zero2_model_states_gib_per_gpu']:.1f} GiB, "
                 f"ZeRO-3 {cost['zero3_model_states_gib_per_gpu']:.1f} GiB (activations extra)")
    if not summary["fits_context"]:
        lines.append(f"warning       the sequence is longer than the LLM's context of {summary['llm']['context']} tokens")
    return "\n".join(lines)
