"""LLaVA-ST's Language-Aligned Positional Embedding (Section 3.2).

- Coordinate tokens: per axis (time t, height h, width w) M tokens <t0>..<t{M-1}> etc., with an
  input-embedding table and an output (logit) table kept beside the text vocabulary; their ids
  follow it, so the text vocabulary is untouched and LoRA never touches them.
- Coordinates in text: "<t20.37>" (a bin position) is the token <t20> with fraction 0.37: as
  input, the blend 0.63 * E[<t20>] + 0.37 * E[<t21>]; as a target, a two-hot label with those
  weights. A model's output token <tk> means k / (M - 1) (zoo.data.grounding parses it).
- Visual positional embedding (Eq. 5): per axis the mean of a coordinate's input and output
  rows, linearly interpolated to the frame count (time) and to the feature grid (height,
  width), and added as T[t] + H[row] + W[col] to the projector output before the packer.
  ``visual_embedding: false`` zeroes it (LLaVA-ST's stage 1). The paper does not say how the
  interpolation places its points; ``align_corners: false`` (default) is the official code's
  (F.interpolate's default: output point i samples the table at (i + 0.5) * M / size - 0.5,
  clamped), ``true`` pins the first and last outputs to the first and last rows (the largest
  difference between the two on a 100 -> 27 resize is 1.35 rows, at the edges). The code keeps
  time at exactly 100 frames; here time is interpolated the same way, so any frame count works.
- Released LLaVA-ST checkpoints name the tables model.{temporal, spatial_height,
  spatial_width}_{input, output}_embeddings.weight, one (M, D) tensor each; they load into the
  stacked (3, M, D) tables here (``foreign_keys["llava"]``).
- The sequence side (position ids, rotary) is another position scheme: rope (LLaVA-ST) or
  harmonic_rope (a new mix).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from components import registry
from components.base import BuildContext, Compressor, PositionScheme
from components.registry import register
from components.token_metadata import FrameFeatures, TokenSequence
from components.weights import ForeignKeys
from components.config import ComponentSpec, RecipeError, bounded, component

AXES = ("t", "h", "w")  # table order: time, height, width
MARKUP = re.compile(r"<([thw])(\d+(?:\.\d+)?)>")


LLAVA_ST_AXIS_NAMES = {"t": "temporal", "h": "spatial_height", "w": "spatial_width"}


def stack_llava_st_tables(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """LLaVA-ST's six (M, D) coordinate tables as this scheme's two (3, M, D) ones; nothing unless all six are there
    with one shape (otherwise they are left for the import report to name)."""
    names = {(side, axis): f"model.{LLAVA_ST_AXIS_NAMES[axis]}_{side}_embeddings.weight"
             for side in ("input", "output") for axis in AXES}
    if not all(name in state for name in names.values()) or len({state[n].shape for n in names.values()}) > 1:
        return {}, set()
    tables = {f"{side}_table": torch.stack([state[names[(side, axis)]] for axis in AXES]) for side in ("input", "output")}
    return tables, set(names.values())


class CoordinateCodec:
    """Rewrites coordinate markup "<t20.37>" into the token "<t20>", recording the fraction 0.37."""

    def __init__(self, bins: int):
        self.bins = bins

    def rewrite(self, text: str):
        pieces, coordinates, shifts = [], [], []
        cursor = written = 0
        for match in MARKUP.finditer(text):
            value = min(float(match.group(2)), self.bins - 1)
            index = int(math.floor(value))
            fraction = value - index if index < self.bins - 1 else 0.0
            token = f"<{match.group(1)}{index}>"
            pieces.append(text[cursor : match.start()])
            written += match.start() - cursor
            coordinates.append((written, written + len(token), fraction))
            pieces.append(token)
            written += len(token)
            shifts.append((match.end(), len(token) - (match.end() - match.start())))
            cursor = match.end()
        pieces.append(text[cursor:])

        def mapping(position: int) -> int:
            return position + sum(delta for end, delta in shifts if end <= position)

        return "".join(pieces), coordinates, mapping


@register("position", "lape", "LLaVA-ST LAPE: coordinate tokens (t/h/w) beside the vocabulary, their embeddings added to visual features")
class LAPE(PositionScheme):
    @dataclass
    class Config:
        bins: int = bounded(100, ge=2)  # coordinate tokens per axis
        sequence: ComponentSpec = component("position", "rope")  # the sequence-side scheme
        visual_embedding: bool = True  # false: LAPE zeroed on the visual side (stage 1)
        neighbour_gradient: bool = False  # the official code's W + R W - stopgrad(R W), R_ij = 2^-|i-j|
        init_std: float = bounded(0.02, gt=0)
        align_corners: bool = False  # how tables are resized to a grid or frame count (see the module docstring)

    foreign_keys = {"llava": ForeignKeys(rules=(), convert=stack_llava_st_tables)}

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        if cfg.sequence.name == "lape":
            raise RecipeError("position 'lape': its sequence: scheme cannot be lape again; use rope or harmonic_rope")
        if cfg.visual_embedding and ctx.grid is None:
            raise RecipeError("position 'lape' adds embeddings on the patch grid, but the encoder emits query tokens; "
                              "use a patch encoder (siglip, clip, timm) or visual_embedding: false")
        self.cfg = cfg
        self.sequence = registry.lookup("position", cfg.sequence.name).factory(cfg.sequence.options, ctx)
        dim = ctx.llm_hidden_size
        self.input_table = nn.Parameter(torch.empty(len(AXES), cfg.bins, dim))
        self.output_table = nn.Parameter(torch.empty(len(AXES), cfg.bins, dim))
        if not ctx.meta:
            nn.init.normal_(self.input_table, std=cfg.init_std)
            nn.init.normal_(self.output_table, std=cfg.init_std)
        self.text_vocab = 0  # set by bind(): the first coordinate token id
        self._codec = CoordinateCodec(cfg.bins)

    # --- the sequence side is the inner scheme ---------------------------------------------

    @property
    def required_kinds(self):
        return self.sequence.required_kinds

    @property
    def num_axes(self) -> int:
        return self.sequence.num_axes

    def frequency_axes(self, head_dim: int) -> list[int]:
        return self.sequence.frequency_axes(head_dim)

    def position_ids(self, sequence: TokenSequence) -> torch.Tensor:
        return self.sequence.position_ids(sequence)

    def check_compatible(self, compressor: Compressor) -> str | None:
        return self.sequence.check_compatible(compressor)

    # --- coordinate tokens ---------------------------------------------------------------

    def token_names(self) -> list[str]:
        return [f"<{axis}{k}>" for axis in AXES for k in range(self.cfg.bins)]

    def bind(self, llm) -> None:
        tokenizer = llm.tokenizer
        if tokenizer is None:  # a --meta build without a tokenizer: ids would follow the LLM's vocabulary
            self.text_vocab = llm.config.vocab_size
            return
        from tokenizers import AddedToken

        names = self.token_names()
        vocab = tokenizer.get_vocab()
        if names[0] not in vocab:
            tokenizer.add_tokens([AddedToken(n, normalized=False, special=False) for n in names])
            vocab = tokenizer.get_vocab()
        ids = [vocab[n] for n in names]
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise RecipeError("position 'lape': the tokenizer did not give the coordinate tokens consecutive ids")
        self.text_vocab = ids[0]

    @property
    def text_codec(self) -> CoordinateCodec:
        return self._codec

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cfg.neighbour_gradient:
            return self.input_table, self.output_table
        spread = self._neighbour_matrix()
        # Forward values unchanged; gradients also reach neighbouring coordinates.
        mix = lambda w: w + spread @ w - (spread @ w).detach()  # noqa: E731
        return mix(self.input_table), mix(self.output_table)

    def _neighbour_matrix(self) -> torch.Tensor:
        k = torch.arange(self.cfg.bins, device=self.input_table.device)
        return torch.pow(2.0, -(k[:, None] - k[None, :]).abs().float()).to(self.input_table.dtype)

    def embed_text(self, llm, ids: torch.Tensor, fraction: torch.Tensor | None = None) -> torch.Tensor:
        is_coordinate = ids >= self.text_vocab
        embeds = llm.embed(ids.masked_fill(is_coordinate, 0))
        if not bool(is_coordinate.any()):
            return embeds
        table = self._tables()[0].reshape(-1, embeds.shape[-1])
        index = (ids - self.text_vocab).clamp(0, table.shape[0] - 1)
        rows = table[index]
        if fraction is not None:
            share = fraction.clamp(min=0.0).unsqueeze(-1).to(rows.dtype)
            rows = (1 - share) * rows + share * table[(index + 1).clamp(max=table.shape[0] - 1)]
        return torch.where(is_coordinate.unsqueeze(-1), rows.to(embeds.dtype), embeds)

    def logits(self, llm, hidden: torch.Tensor) -> torch.Tensor:
        text = llm.logits(hidden)[..., : self.text_vocab]
        coordinates = hidden @ self._tables()[1].reshape(-1, hidden.shape[-1]).to(hidden.dtype).T
        return torch.cat([text, coordinates], dim=-1)

    # --- the visual side -----------------------------------------------------------------

    def visual_hook(self):
        return self.add_visual_embedding if self.cfg.visual_embedding else None

    def axis_embedding(self, axis: int, size: int) -> torch.Tensor:
        """(size, D): the mean of input and output rows of one axis, linearly interpolated to ``size`` points."""
        inputs, outputs = self._tables()
        rows = (inputs[axis] + outputs[axis]) / 2  # (M, D)
        if size == rows.shape[0]:
            return rows
        if size == 1:
            return rows[:1]  # an image uses coordinate row 0
        return F.interpolate(rows.T.unsqueeze(0), size=size, mode="linear", align_corners=self.cfg.align_corners)[0].T

    def add_visual_embedding(self, features: FrameFeatures) -> FrameFeatures:
        frames = features.num_frames
        height, width = features.grid
        time = self.axis_embedding(0, frames)
        rows = self.axis_embedding(1, height)
        cols = self.axis_embedding(2, width)
        grid = (rows[:, None, :] + cols[None, :, :]).reshape(height * width, -1)  # H[row] + W[col]
        embedding = time[:, None, :] + grid[None, :, :]  # (T, h*w, D)
        return FrameFeatures(features.patches + embedding.to(features.patches.dtype), features.cls, features.grid)
