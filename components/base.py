"""Small abstract bases of the component kinds, with the properties the builder checks.

Each component receives its typed ``Config`` (a dataclass) and a ``BuildContext`` that
says what the components built before it produce (hidden sizes, grid, frame count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from components.token_metadata import FrameFeatures, TokenKind, TokenSequence, VisualTokens
from components.weights import ForeignKeys


@dataclass
class BuildContext:
    """Facts about the model being assembled, filled in as components are built."""

    frames: int  # frames per video the recipe samples
    llm_hidden_size: int = 0
    llm_head_dim: int = 0
    llm_num_heads: int = 0
    encoder_dim: int = 0  # feature dim out of the encoder
    tokens_per_frame: int = 0  # patch or query tokens per frame
    grid: tuple[int, int] | None = None
    encoder_has_cls: bool = False
    meta: bool = False  # building on the meta device: shapes only, no weights
    load_pretrained: bool = True  # False when a saved STZoo checkpoint will overwrite every weight


class VisionEncoder(nn.Module):
    """Pixels (B, T, 3, H, W) -> FrameFeatures. Frozen unless the recipe says otherwise."""

    # Foreign releases this component's weights can be read from: layout name -> how its tensors are named there.
    foreign_keys: dict[str, ForeignKeys] = {}

    @property
    def frozen(self) -> bool:
        """No weight of the tower trains, so it runs without gradients and stays in eval mode.
        Derived from requires_grad: whatever sets the trainable weights (the recipe's ``frozen``,
        a training stage's list) decides, with no flag to keep in step."""
        return not any(p.requires_grad for p in self.parameters())

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    @property
    def tokens_per_frame(self) -> int:
        raise NotImplementedError

    @property
    def grid(self) -> tuple[int, int] | None:
        """(h, w) of the patch grid, or None when the tokens are queries, not patches."""
        raise NotImplementedError

    @property
    def has_cls(self) -> bool:
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    # Subclasses set the normalisation their pretrained weights expect.
    _mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    _std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def image_mean(self) -> tuple[float, float, float]:
        return self._mean

    @property
    def image_std(self) -> tuple[float, float, float]:
        return self._std

    @property
    def instruction_tokenizer(self):
        """A tokenizer for instruction text fed into the encoder (InstructBLIP), or None."""
        return None

    # Instruction tokens the encoder reads at most (InstructBLIP); longer questions are cut.
    max_instruction_tokens: int = 128

    def encode_instruction(self, text: str) -> list[int] | None:
        """The ids of an instruction for this encoder (cut to ``max_instruction_tokens``), or None if it reads none."""
        if self.instruction_tokenizer is None:
            return None
        return list(self.instruction_tokenizer(text, truncation=True, max_length=self.max_instruction_tokens)["input_ids"])

    def hf_config(self) -> dict | None:
        """The architecture config to save beside the weights, so a checkpoint rebuilds offline."""
        return None

    def forward(self, pixels: torch.Tensor, instruction: dict[str, torch.Tensor] | None = None) -> FrameFeatures:
        raise NotImplementedError


class Projector(nn.Module):
    """FrameFeatures of the vision dim -> FrameFeatures of the LLM hidden size (patches and CLS alike)."""

    # Foreign releases this component's weights can be read from: layout name -> how its tensors are named there.
    foreign_keys: dict[str, ForeignKeys] = {}

    def forward(self, features: FrameFeatures) -> FrameFeatures:
        return features.map(self.project)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Compressor(nn.Module):
    """Projected FrameFeatures -> VisualTokens with metadata.

    Subclasses say which token kinds they emit (after their options are applied) and
    whether the tokens carry frame indices and grid positions; masks and position
    schemes are checked against these at build time.
    """

    # Foreign releases this component's weights can be read from: layout name -> how its tensors are named there.
    foreign_keys: dict[str, ForeignKeys] = {}

    @property
    def emitted_kinds(self) -> frozenset[TokenKind]:
        raise NotImplementedError

    @property
    def emits_frame_index(self) -> bool:
        raise NotImplementedError

    @property
    def emits_grid_position(self) -> bool:
        raise NotImplementedError

    def num_tokens(self, frames: int, tokens_per_frame: int, grid: tuple[int, int] | None) -> int:
        """Visual tokens per sample at evaluation for a video of ``frames`` frames."""
        raise NotImplementedError

    def forward(self, features: FrameFeatures) -> VisualTokens:
        raise NotImplementedError

    # Names of the loss terms ``extra_losses`` may return; logged as ``loss/<name>`` beside ``loss/ce``.
    loss_terms: tuple[str, ...] = ()

    def extra_losses(self, model, batch, visual: VisualTokens, sequence: TokenSequence, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms that need the LLM's pass over the assembled sequence (ST-LLM's MVM), already
        weighted; called in training only. ``model`` is the VideoLLM (its ``run_llm``, ``assemble``)."""
        return {}


class PositionScheme(nn.Module):
    """Sequence metadata -> position ids of shape (axes, B, L), and which axis each rotary frequency reads.

    The LLM's stock rotary module is replaced by one that takes (axes, B, L) ids and
    rotates frequency pair k by the ids of axis ``frequency_axes(head_dim)[k]``.
    """

    # Foreign releases this component's weights can be read from: layout name -> how its tensors are named there.
    foreign_keys: dict[str, ForeignKeys] = {}

    required_kinds: frozenset[TokenKind] = frozenset()

    @property
    def num_axes(self) -> int:
        return 1

    def frequency_axes(self, head_dim: int) -> list[int]:
        return [0] * (head_dim // 2)

    def position_ids(self, sequence: TokenSequence) -> torch.Tensor:
        raise NotImplementedError

    def visual_hook(self) -> Callable[[FrameFeatures], FrameFeatures] | None:
        """The visual side of the scheme, applied to projected features before the compressor (LAPE), or None."""
        return None

    # Text-side hooks, for schemes that add tokens to the LLM's vocabulary (LAPE's coordinate tokens).

    def bind(self, llm) -> None:
        """Called once the LLM exists (its tokenizer can be extended here)."""

    @property
    def text_codec(self):
        """An object with ``rewrite(text) -> (text, [(start, end, fraction), ...])`` or None."""
        return None

    def embed_text(self, llm, ids: torch.Tensor, fraction: torch.Tensor | None = None) -> torch.Tensor:
        return llm.embed(ids)

    def logits(self, llm, hidden: torch.Tensor) -> torch.Tensor:
        return llm.logits(hidden)

    def check_compatible(self, compressor: Compressor) -> str | None:
        """None if this scheme can place the compressor's tokens, else what is missing."""
        missing = self.required_kinds - compressor.emitted_kinds
        if missing:
            return "it needs " + " and ".join(sorted(k.name.lower() for k in missing)) + " tokens"
        return None


MaskFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class MaskScheme:
    """Sequence metadata -> a mask function ``fn(batch, head, q_idx, kv_idx) -> bool``.

    The function may only index tensors (no Python branching on values) so that the same
    function renders a dense mask by broadcasting and a FlexAttention BlockMask by vmap.
    Padding is added by the renderer, not by the scheme.
    """

    required_kinds: frozenset[TokenKind] = frozenset()
    needs_frame_index: bool = False
    is_causal: bool = False  # True only for the plain causal mask (FlashAttention-2 can serve it)

    def mask_function(self, sequence: TokenSequence) -> MaskFunction:
        raise NotImplementedError

    def check_compatible(self, compressor: Compressor) -> str | None:
        missing = self.required_kinds - compressor.emitted_kinds
        if missing:
            return "it needs " + " and ".join(sorted(k.name.lower() for k in missing)) + " tokens"
        if self.needs_frame_index and not compressor.emits_frame_index:
            return "it needs a frame index on every visual token"
        return None
