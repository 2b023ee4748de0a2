"""The video LLM assembled from a recipe: encoder -> projector -> [visual position hook] ->
compressor -> assembler -> LLM under the recipe's mask and positions -> losses.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from components import registry
from components.base import BuildContext, Compressor, MaskScheme, PositionScheme, Projector, VisionEncoder
from components.masks.rendering import render_mask
from components.positions.rotary import install_axis_rotary
from components.token_metadata import TokenSequence, VisualTokens
from zoo.model.assembler import assemble
from zoo.model.packing import DocumentMask, pack, unpack
from zoo.model.checkpoint import checkpoint_recipe, load_weights, save_pretrained, saved_fingerprint
from zoo.model.checkpoint_import import check_coverage, import_checkpoints
from zoo.model.generation import generate
from zoo.data.batch import VideoBatch
from zoo.data.transforms import PixelNormalise
from zoo.data.prompting import IGNORE
from zoo.config.recipe import Recipe
from components.config import ComponentSpec, RecipeError
import hashlib

logger = logging.getLogger("stzoo")


LAYOUT_CACHE_SIZE = 8


def layout_key(sequence: TokenSequence, implementation: str) -> tuple:
    """What a mask and position ids depend on: kinds, frames, grid positions and padding (and the implementation)."""
    fields = torch.stack([sequence.kind, sequence.frame, sequence.row, sequence.col, sequence.attention_mask])
    digest = hashlib.blake2b(fields.detach().to("cpu", torch.int32).numpy().tobytes(), digest_size=16)
    return (implementation, tuple(sequence.kind.shape), str(sequence.inputs_embeds.dtype), digest.hexdigest())


@dataclass
class ModelOutput:
    loss: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # every term, unweighted names (ce, mvm, ...)
    sequence: TokenSequence | None = None
    hidden: torch.Tensor | None = None


class VideoLLM(nn.Module):
    def __init__(self, recipe: Recipe, encoder: VisionEncoder, projector: Projector, compressor: Compressor,
                 position: PositionScheme, mask: MaskScheme, llm: nn.Module):
        super().__init__()
        self.recipe = recipe
        self.source: str | None = None  # the directory or run it was loaded from (None: built here)
        self.recipe_fingerprint = recipe.fingerprint()  # of the recipe trained (a checkpoint keeps it)
        self.encoder = encoder
        self.projector = projector
        self.visual_position = position.visual_hook()
        self.compressor = compressor
        self.position = position
        self.mask = mask  # not a module: it holds no weights
        self.llm = llm
        self.normalise = PixelNormalise.for_encoder(encoder)  # not a module: its constants stay float32 under bf16
        self._layout_cache: dict = {}

    # --- properties ---------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self.llm.tokenizer

    @property
    def pad_id(self) -> int:
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    @property
    def frames(self) -> int:
        return self.recipe.data.video.frames

    def visual_token_count(self, frames: int | None = None) -> int:
        """Visual tokens per sample at evaluation for ``frames`` frames (default: the recipe's)."""
        return self.compressor.num_tokens(frames or self.frames, self.encoder.tokens_per_frame, self.encoder.grid)

    # --- forward ------------------------------------------------------------------------

    def encode_video(self, pixels: torch.Tensor, instruction: dict | None = None) -> VisualTokens:
        """``pixels`` (B, T, 3, S, S): uint8 frames as the loader gives them, normalised here with the encoder's
        mean and std on the model's device, or floats normalised already."""
        features = self.encoder(self.normalise(pixels), instruction)
        features = self.projector(features)
        if self.visual_position is not None:
            features = self.visual_position(features)
        return self.compressor(features)

    def embed_text(self, ids: torch.Tensor, fraction: torch.Tensor | None = None) -> torch.Tensor:
        return self.position.embed_text(self.llm, ids, fraction)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.position.logits(self.llm, hidden)

    def assemble(self, batch: VideoBatch, visual: VisualTokens, padding_side: str = "right") -> TokenSequence:
        return assemble(batch, visual, self.embed_text, self.pad_id, padding_side)

    def attention_inputs(self, sequence: TokenSequence) -> tuple:
        """The rendered mask and the position ids for ``sequence``, reused when the layout repeats.

        Both depend only on the token metadata and the padding, so a batch laid out like a recent
        one (the same prompt lengths, the same video layout) gets them from a small cache.
        """
        implementation = self.llm.attn_implementation
        key = (id(self.mask), id(self.position), str(sequence.kind.device), *layout_key(sequence, implementation))
        cached = self._layout_cache.get(key)
        if cached is None:
            mask = render_mask(self.mask, sequence, implementation, sequence.inputs_embeds.dtype)
            cached = (mask, self.position.position_ids(sequence))
            self._layout_cache[key] = cached
            if len(self._layout_cache) > LAYOUT_CACHE_SIZE:
                self._layout_cache.pop(next(iter(self._layout_cache)))
        return cached

    def run_llm(self, sequence: TokenSequence, cache=None, use_cache: bool = False):
        if self.training and self.recipe.data.packing and cache is None and not use_cache and sequence.batch_size > 1:
            return self.run_packed(sequence), None
        mask, positions = self.attention_inputs(sequence)
        return self.llm(sequence.inputs_embeds, mask, positions, cache=cache, use_cache=use_cache)

    def run_packed(self, sequence: TokenSequence) -> torch.Tensor:
        """The LLM over ``sequence`` with its samples packed into rows (data.packing), hidden states handed back in
        the unpacked layout: what run_llm gives unpacked, with less padding computed."""
        budget = self.recipe.data.pack_tokens or sequence.length
        packed = pack(sequence, self.position.position_ids(sequence), budget, self.pad_id)
        implementation = self.llm.attn_implementation
        mask = render_mask(DocumentMask(self.mask, packed.document), packed.sequence, implementation,
                           sequence.inputs_embeds.dtype)
        hidden, _ = self.llm(packed.sequence.inputs_embeds, mask, packed.position_ids)
        return unpack(hidden, packed, sequence.batch_size, sequence.length)

    def forward(self, batch: VideoBatch) -> ModelOutput:
        visual = self.encode_video(batch.pixels, batch.instruction)
        sequence = self.assemble(batch, visual)
        self.check_length(sequence)
        hidden, _ = self.run_llm(sequence)
        losses = {"ce": self.language_loss(hidden, sequence.labels, sequence.coordinate_fraction)}
        if self.training:
            losses.update(self.compressor_losses(batch, visual, sequence, hidden))
        return ModelOutput(loss=sum(losses.values()), losses=losses, sequence=sequence, hidden=hidden)

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """Every loss term a training step may log (as ``loss/<term>``): the language loss and the compressor's."""
        return ("ce", *self.compressor.loss_terms)

    def compressor_losses(self, batch: VideoBatch, visual: VisualTokens, sequence: TokenSequence,
                          hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        extra = self.compressor.extra_losses(self, batch, visual, sequence, hidden)
        undeclared = sorted(set(extra) - set(self.compressor.loss_terms))
        if undeclared:
            raise TypeError(f"compressor {self.recipe.model.compressor.name!r} returned loss terms {undeclared} that its "
                            "loss_terms do not declare; add them to the class's loss_terms")
        return extra

    def language_loss(self, hidden: torch.Tensor, labels: torch.Tensor, fraction: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token cross-entropy over the answer tokens; logits are computed only where a label is.

        A continuous coordinate (LAPE) is a two-hot target: its token k with weight 1 - f and
        the next token k + 1 with weight f.
        """
        targets = labels[:, 1:]
        keep = targets != IGNORE
        if not bool(keep.any()):
            return hidden.sum() * 0.0  # keeps the graph (and DDP) intact for a batch without answers
        logits = self.logits(hidden[:, :-1][keep]).float()
        wanted = targets[keep]
        if fraction is None:
            return F.cross_entropy(logits, wanted)
        share = fraction[:, 1:][keep].clamp(min=0.0)
        log_probs = torch.log_softmax(logits, dim=-1)
        this = log_probs.gather(1, wanted.unsqueeze(1)).squeeze(1)
        following = log_probs.gather(1, (wanted + 1).clamp(max=logits.shape[-1] - 1).unsqueeze(1)).squeeze(1)
        return -((1 - share) * this + share * following).mean()

    def check_length(self, sequence: TokenSequence) -> None:
        limit = self.recipe.prompt.max_length or self.llm.max_length
        if sequence.length > limit:
            visual = int(sequence.is_visual[0].sum())
            raise RecipeError(
                f"a sequence of {sequence.length} tokens ({visual} visual + {sequence.length - visual} text) is longer "
                f"than the LLM's context of {limit}; use fewer frames or a compressor that emits fewer tokens"
            )

    # --- generation and persistence live in their own modules ---------------------------

    def generate(self, batch: VideoBatch, **kwargs):
        return generate(self, batch, **kwargs)

    def save_pretrained(self, directory, max_shard_bytes: int | None = None, state_dict: dict | None = None) -> None:
        """``state_dict``: the full weights when this module holds shards of them (FSDP2)."""
        save_pretrained(self, directory, max_shard_bytes, state_dict)

    @classmethod
    def from_pretrained(cls, directory, overrides: dict | None = None, device=None,
                        plugins: list[str] | tuple[str, ...] = ()) -> "VideoLLM":
        """The video LLM saved in ``directory`` (with recipe ``overrides``), weights checked key by key;
        of the plugin modules its recipe names, only those in ``plugins`` are imported."""
        model = build_model(checkpoint_recipe(directory, overrides, plugins), load_pretrained=False)
        load_weights(model, directory, device)
        model.source = str(Path(directory).resolve())  # where evaluations say the model came from
        model.recipe_fingerprint = saved_fingerprint(directory) or model.recipe_fingerprint
        return model


def create(spec: ComponentSpec, ctx: BuildContext, path: str):
    """Instantiate a recipe's component; any failure becomes one sentence naming it."""
    entry = registry.lookup(spec.kind, spec.name)
    try:
        return entry.factory(spec.options, ctx)
    except RecipeError:
        raise
    except Exception as error:
        detail = " ".join(str(error).split())  # one line, whatever the library's message looked like
        raise RecipeError(f"{path} ({spec.kind} {spec.name!r}) could not be built: {type(error).__name__}: {detail}") from error


def build_model(recipe: Recipe, meta: bool = False, load_pretrained: bool = True, strict_init: bool = True) -> VideoLLM:
    """The recipe's video LLM; ``meta`` builds shapes only (a 7B recipe in seconds, no weights). After a
    model.init_from import, a tensor left random that model.allow_random does not name is refused
    (``strict_init=False``: reported only, for ``stzoo build --check-init``)."""
    model_spec = recipe.model
    ctx = BuildContext(frames=recipe.data.video.frames, meta=meta, load_pretrained=load_pretrained)
    device = torch.device("meta") if meta else None
    check_attention_implementation(recipe)
    with torch.device(device) if device else contextlib.nullcontext():
        llm = create(model_spec.llm, ctx, "model.llm")
        ctx.llm_hidden_size, ctx.llm_head_dim, ctx.llm_num_heads = llm.hidden_size, llm.head_dim, llm.num_heads
        encoder = create(model_spec.encoder, ctx, "model.encoder")
        ctx.encoder_dim, ctx.grid = encoder.embed_dim, encoder.grid
        ctx.tokens_per_frame, ctx.encoder_has_cls = encoder.tokens_per_frame, encoder.has_cls
        projector = create(model_spec.projector, ctx, "model.projector")
        compressor = create(model_spec.compressor, ctx, "model.compressor")
        position = create(model_spec.position, ctx, "model.position")
        mask = create(model_spec.mask, ctx, "model.mask")
        check_compatible(recipe, compressor, position, mask)
        install_axis_rotary(llm.decoder, position.frequency_axes(llm.head_dim))
        position.bind(llm)
    model = VideoLLM(recipe, encoder, projector, compressor, position, mask, llm)
    if model_spec.init_from and load_pretrained and not meta:
        model.import_report = import_checkpoints(model, model_spec.init_from)
        logger.info("model.init_from: %s", model.import_report.summary())
        if strict_init:
            check_coverage(model, model.import_report, model_spec.allow_random)
    return model


def check_attention_implementation(recipe: Recipe) -> None:
    """FlashAttention-2 takes no custom mask: refuse it before anything is loaded rather than silently go causal."""
    implementation = getattr(recipe.model.llm.options, "attn_implementation", None)
    mask_class = registry.lookup("mask", recipe.model.mask.name).factory
    if implementation == "flash_attention_2" and not getattr(mask_class, "is_causal", False):
        raise RecipeError(
            f"model.llm.attn_implementation: flash_attention_2 ignores custom masks, so mask {recipe.model.mask.name!r} "
            "would silently become causal; use sdpa, eager or flex_attention"
        )
    if implementation == "flash_attention_2" and recipe.data.packing:
        raise RecipeError("data.packing: packed samples need a mask that keeps them apart, which "
                          "model.llm.attn_implementation flash_attention_2 cannot take; use sdpa or flex_attention, "
                          "or set data.packing: false")


def check_compatible(recipe: Recipe, compressor, position, mask) -> None:
    names = recipe.model
    for kind, scheme in (("position", position), ("mask", mask)):
        problem = scheme.check_compatible(compressor)
        if problem:
            raise RecipeError(
                f"model.{kind}: {kind} {getattr(names, kind).name!r} cannot be used with compressor "
                f"{names.compressor.name!r}: {problem}, and that compressor emits "
                f"{', '.join(sorted(k.name.lower() for k in compressor.emitted_kinds))} tokens"
                f"{'' if compressor.emits_frame_index else ' without frame indices'}"
            )
