"""What a recipe costs at paper scale, computed on the meta device (no weights, no GPU).

FLOPs per training step, counted the usual way (Kaplan et al.; Narayanan et al.):
  - a matrix multiply of N parameters over T tokens: 2 N T forward, 4 N T backward;
  - frozen modules (the vision tower) run forward only, and the LLM's frozen weights still
    pass gradients back to the visual tokens (backward through activations: 2 N T), unless
    nothing before them trains;
  - attention scores and values: 4 L^2 d per layer forward (QK^T and AV), twice that backward.
Activation recomputation (gradient checkpointing) adds one more forward of the LLM.

DeepSpeed ZeRO memory per GPU for the model states, with bf16 weights and gradients and
fp32 Adam states (12 bytes per trained parameter: master weights, momentum, variance):
  - ZeRO-2: 2 Psi (all weights) + (2 Psi_t + 12 Psi_t) / N  (Psi_t: trained parameters)
  - ZeRO-3: (2 Psi + 2 Psi_t + 12 Psi_t) / N + 2 x the largest layer (gathered while used)
Activations come on top; they depend on batch size and checkpointing and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class StepCost:
    tokens: int
    flops: float
    zero2_gib: float
    zero3_gib: float

    def as_dict(self) -> dict:
        return {"llm_tokens_per_sample": self.tokens, "train_flops_per_sample": self.flops,
                "zero2_model_states_gib_per_gpu": round(self.zero2_gib, 2),
                "zero3_model_states_gib_per_gpu": round(self.zero3_gib, 2)}


def count(module: nn.Module, trained: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trained is None or p.requires_grad == trained)


def largest_layer(module: nn.Module) -> int:
    layers = [m for name, m in module.named_modules() if name.endswith(("layers", "layer", "blocks"))]
    biggest = 0
    for container in layers:
        for child in container.children():
            biggest = max(biggest, count(child))
    return biggest


def training_step_cost(model, world_size: int = 8, gradient_checkpointing: bool | None = None) -> StepCost:
    """Per sample: FLOPs of one training step, and ZeRO-2/3 model-state memory per GPU for ``world_size`` GPUs."""
    recipe = model.recipe
    frames = recipe.data.video.frames
    visual = model.visual_token_count()
    text = 64  # a typical instruction and answer
    tokens = visual + text
    llm = model.llm
    llm_params = count(llm)
    llm_trained = count(llm, True)
    config = llm.config
    layers, width = config.num_hidden_layers, config.hidden_size
    checkpointing = recipe.model.llm.options.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing

    # The LLM: weights over every token, forward and backward (data gradients always, weight gradients if trained).
    llm_forward = 2 * llm_params * tokens + 4 * tokens * tokens * width * layers
    llm_backward = 2 * llm_params * tokens + 2 * llm_trained * tokens + 8 * tokens * tokens * width * layers
    llm_flops = llm_forward * (2 if checkpointing else 1) + llm_backward
    # The vision tower runs on every frame; frozen: forward only.
    encoder = model.encoder
    encoder_tokens = frames * (encoder.tokens_per_frame + int(encoder.has_cls))
    encoder_flops = 2 * count(encoder) * encoder_tokens * (1 if count(encoder, True) == 0 else 3)
    # Projector and compressor: trained, on the frame tokens they see.
    rest = count(model.projector) + count(model.compressor)
    rest_flops = 6 * rest * frames * encoder.tokens_per_frame
    flops = float(llm_flops + encoder_flops + rest_flops)

    total = count(model)
    trained = count(model, True)
    gib = 1024**3
    zero2 = (2 * total + (2 * trained + 12 * trained) / world_size) / gib
    zero3 = ((2 * total + 2 * trained + 12 * trained) / world_size + 2 * 2 * largest_layer(model)) / gib
    return StepCost(tokens, flops, zero2, zero3)
