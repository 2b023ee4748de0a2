"""ST-LLM (Liu et al., Section 3): every spatial-temporal token into the LLM, with

- dynamic masking in training only: one rate rho per forward, rho ~ N(0.5, 0.1) clipped to
  [0.3, 0.7] (Eq. 3; the official code clips to [0.1, 0.7]: ``rate_bounds: official_code``),
  and round(rho * N) tokens of every sample removed from the sequence (the code truncates,
  int(rho * N): ``masked_count: official_code``); kept tokens keep their metadata and order.
  Evaluation and generation use every token.
- masked video modelling (Eq. 4): a no-grad forward of the same LLM on the unmasked
  sequence is the reference; the last hidden states of the kept video tokens of the masked
  pass are pulled towards the same tokens of the reference, optionally through a
  Linear+LayerNorm head. ``mvm_loss``: ``cosine`` (default), 2 - 2 cos as the official code;
  ``mse_sum``, Eq. 4 as printed (squared error summed over the D hidden dimensions); ``mse``,
  averaged over them. Why cosine: after the LLM's final RMSNorm (unit weights at initialisation)
  every state has squared norm D, so mse = 2 - 2 cos exactly there and mse_sum = D times it:
  measured at D = 4096 with random weights, CE 6.47, cosine 0.69, mse 0.69, mse_sum 2824, i.e.
  Eq. 4 as printed would outweigh the CE 400 to 1 at weight 1, which the released models (trained
  with the cosine) never saw; the cosine stays of order 1 at any width and whatever scale the
  norm learns (python -m benchmarks.mvm_scale).
- global-local input for long videos (Eq. 5-6): the mean over all T frames of each token,
  through a bottleneck MLP (D -> D/4 -> D, ReLU, up-projection initialised to zero), added
  to the tokens of R uniformly sampled local frames. Before masking. The code also zeroes the
  down-projection's bias (``global_local.init: official_code``); the paper says only that the
  up-projection starts at zero.
- Table 7's alternatives: learned frame-frame and video-text separators, learned
  spatial-temporal position embeddings on the video tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from components.base import BuildContext, Compressor
from components.registry import register
from components.token_metadata import NO_INDEX, FrameFeatures, TokenKind, TokenSequence, VisualTokens, grid_positions
from components.config import RecipeError, bounded
from components.weights import ForeignKeys

RATE_BOUNDS = {"paper": (0.3, 0.7), "official_code": (0.1, 0.7)}


def local_positions(global_frames: int, local_frames: int) -> list[int]:
    """Positions among the global frames that keep their own tokens: int(seg / 2 + round(seg * i)), seg = T / R."""
    if local_frames > global_frames:
        raise ValueError(f"{local_frames} local frames cannot be chosen among {global_frames} global ones")
    segment = global_frames / local_frames
    return [min(global_frames - 1, int(segment / 2 + round(segment * i))) for i in range(local_frames)]



@dataclass
class GlobalLocalSpec:
    local_frames: int = bounded(16, ge=1)  # R frames that keep their own tokens
    mode: Literal["adapter", "add", "local_only", "global_only"] = "adapter"  # ST-LLM Table 5
    init: Literal["paper", "official_code"] = "paper"  # official_code: the down-projection's bias starts at zero too


@register("compressor", "st_llm_masking", "ST-LLM: all S-T tokens, dynamic masking + MVM loss in training, optional global-local input")
class STLLMMasking(Compressor):
    @dataclass
    class Config:
        masking: bool = True
        rate_distribution: Literal["normal", "uniform", "fixed"] = "normal"  # Table 8; fixed: always rate_mean
        rate_mean: float = bounded(0.5, ge=0, le=1)
        rate_std: float = bounded(0.1, ge=0)
        rate_bounds: Literal["paper", "official_code"] = "paper"  # [0.3, 0.7] or the code's [0.1, 0.7]
        masked_count: Literal["round", "official_code"] = "round"  # round(rho * N), or the code's int(rho * N)
        mvm_weight: float = bounded(1.0, ge=0)  # 0: masking without the MVM objective
        mvm_loss: Literal["mse_sum", "mse", "cosine"] = "cosine"  # see MVM_LOSSES and the module docstring
        mvm_decoder: bool = False  # Linear + LayerNorm on the masked pass before the loss (official code option)
        global_local: GlobalLocalSpec | None = None
        frame_separators: bool = False  # Table 7
        video_text_separator: bool = False  # Table 7
        st_position_embeddings: bool = False  # Table 7: learned spatial + temporal embeddings on video tokens
        max_frames: int = bounded(64, ge=1)  # size of the temporal embedding table

    # ST-LLM's checkpoints (LAVIS names, or model.stllm_model.* in its HF release) keep the MVM head as mvm_decoder.
    foreign_keys = {"lavis": ForeignKeys(rules=((r"^mvm_decoder\.", "mvm_head."),))}

    def __init__(self, cfg: Config, ctx: BuildContext):
        super().__init__()
        self.cfg = cfg
        self.bounds = RATE_BOUNDS[cfg.rate_bounds]
        dim = ctx.llm_hidden_size
        if cfg.global_local is not None:
            if cfg.global_local.local_frames > ctx.frames:
                raise RecipeError(f"compressor 'st_llm_masking': global_local.local_frames {cfg.global_local.local_frames} "
                                  f"exceeds data.video.frames {ctx.frames}")
            self.global_adapter = nn.Sequential(nn.Linear(dim, dim // 4), nn.ReLU(), nn.Linear(dim // 4, dim))
            nn.init.zeros_(self.global_adapter[2].weight)
            nn.init.zeros_(self.global_adapter[2].bias)
            if cfg.global_local.init == "official_code":
                nn.init.zeros_(self.global_adapter[0].bias)
        if cfg.frame_separators:
            self.frame_separator = nn.Parameter(torch.randn(dim) * 0.02)
        if cfg.video_text_separator:
            self.video_text_separator = nn.Parameter(torch.randn(dim) * 0.02)
        if cfg.st_position_embeddings:
            self.spatial_embedding = nn.Parameter(torch.randn(ctx.tokens_per_frame, dim) * 0.02)
            self.temporal_embedding = nn.Parameter(torch.randn(cfg.max_frames, dim) * 0.02)
        if cfg.mvm_decoder:
            self.mvm_head = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        self.last_rate = 0.0

    # --- what it emits ------------------------------------------------------------------

    @property
    def emitted_kinds(self):
        kinds = {TokenKind.FRAME}
        if self.cfg.frame_separators or self.cfg.video_text_separator:
            kinds.add(TokenKind.SEPARATOR)
        return frozenset(kinds)

    @property
    def emits_frame_index(self) -> bool:
        return True

    @property
    def emits_grid_position(self) -> bool:
        return True

    def _frames_in(self, frames: int) -> int:
        spec = self.cfg.global_local
        if spec is None:
            return frames
        return 1 if spec.mode == "global_only" else spec.local_frames

    def num_tokens(self, frames, tokens_per_frame, grid) -> int:
        kept = self._frames_in(frames)
        separators = (kept - 1) * int(self.cfg.frame_separators) + int(self.cfg.video_text_separator)
        return kept * tokens_per_frame + separators

    # --- building the tokens ------------------------------------------------------------

    def draw_rate(self) -> float:
        """One masking rate for this forward (Eq. 3)."""
        low, high = self.bounds
        if self.cfg.rate_distribution == "fixed":
            return self.cfg.rate_mean
        if self.cfg.rate_distribution == "uniform":
            return low + (high - low) * float(torch.rand(()))
        drawn = self.cfg.rate_mean + self.cfg.rate_std * float(torch.randn(()))
        return min(high, max(low, drawn))  # clipped to the bounds, as the paper's Eq. 3 and the official code

    def video_tokens(self, features: FrameFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, K, D) tokens per frame after global-local mixing and position embeddings, and their frame indices."""
        x = features.patches
        frames = x.shape[1]
        frame_index = torch.arange(frames, device=x.device)
        if self.cfg.st_position_embeddings:
            x = x + self.spatial_embedding[: x.shape[2]] + self._temporal_rows(frames).unsqueeze(1)
        spec = self.cfg.global_local
        if spec is None:
            return x, frame_index
        overall = x.mean(dim=1, keepdim=True)  # V_0: each token averaged over all T frames (Eq. 5)
        if spec.mode == "global_only":
            return overall, frame_index[:1]
        chosen = torch.tensor(local_positions(frames, spec.local_frames), device=x.device)
        local = x[:, chosen]
        if spec.mode == "adapter":
            local = local + self.global_adapter(overall)  # Eq. 6 with f_m zero-initialised
        elif spec.mode == "add":
            local = local + overall
        return local, chosen

    def _temporal_rows(self, frames: int) -> torch.Tensor:
        table = self.temporal_embedding
        if frames <= table.shape[0]:
            return table[:frames]
        return F.interpolate(table.T.unsqueeze(0), size=frames, mode="linear", align_corners=True)[0].T

    def forward(self, features: FrameFeatures) -> VisualTokens:
        x, frame_index = self.video_tokens(features)
        batch, frames, per_frame, dim = x.shape
        row, col = grid_positions(features.grid, per_frame, x.device)
        tokens = VisualTokens.build(
            x.reshape(batch, frames * per_frame, dim), TokenKind.FRAME,
            frame_index.repeat_interleave(per_frame), row.repeat(frames), col.repeat(frames),
        )
        separators = self.cfg.frame_separators or self.cfg.video_text_separator
        full = self.with_separators(tokens, frame_index) if separators else tokens
        if not (self.training and self.cfg.masking):
            return full
        masked = self.mask(tokens)
        if separators:
            masked = self.with_separators(masked, frame_index)
        masked.reference = full  # the unmasked sequence, for the MVM reference pass
        return masked

    def mask(self, tokens: VisualTokens) -> VisualTokens:
        """Keep the same number of tokens in every sample, a different random subset each, in their order."""
        rate = self.draw_rate()
        self.last_rate = rate
        total = tokens.num_tokens
        keep = total - (int(rate * total) if self.cfg.masked_count == "official_code" else round(rate * total))
        scores = torch.rand(tokens.embeds.shape[0], total, device=tokens.embeds.device)
        kept = scores.topk(keep, dim=1).indices.sort(dim=1).values
        return tokens.select(kept)

    def with_separators(self, tokens: VisualTokens, frame_index: torch.Tensor) -> VisualTokens:
        """Separators after each frame's tokens but the last (frame-frame) and after the video (video-text)."""
        batch, _, dim = tokens.embeds.shape
        device = tokens.embeds.device
        extra_embeds, extra_frames = [], []
        if self.cfg.frame_separators:
            extra_embeds.append(self.frame_separator.expand(len(frame_index) - 1, dim))
            extra_frames.append(frame_index[:-1])
        if self.cfg.video_text_separator:
            extra_embeds.append(self.video_text_separator.view(1, dim))
            extra_frames.append(frame_index[-1:])
        sep_embeds = torch.cat(extra_embeds).unsqueeze(0).expand(batch, -1, -1)
        sep_frames = torch.cat(extra_frames).unsqueeze(0).expand(batch, -1)
        count = sep_frames.shape[1]
        # Order key: frame, then the frame's tokens before its separator, then the video-text separator last.
        rank = torch.arange(frame_index.numel(), device=device)
        position = torch.zeros(int(frame_index.max()) + 1, dtype=torch.long, device=device)
        position[frame_index] = rank
        token_key = position[tokens.frame] * 3
        sep_key = position[sep_frames] * 3 + 1
        if self.cfg.video_text_separator:
            sep_key[:, -1] = rank.numel() * 3 + 2
        order = torch.cat([token_key, sep_key], dim=1).argsort(dim=1, stable=True)
        none = torch.full((batch, count), NO_INDEX, device=device)
        merged = VisualTokens(
            torch.cat([tokens.embeds, sep_embeds.to(tokens.embeds.dtype)], dim=1),
            torch.cat([tokens.kind, torch.full_like(none, int(TokenKind.SEPARATOR))], dim=1),
            torch.cat([tokens.frame, sep_frames], dim=1),
            torch.cat([tokens.row, none], dim=1),
            torch.cat([tokens.col, none], dim=1),
            source_index=torch.cat([source_index(tokens), none], dim=1),
        )
        return merged.select(order)

    # --- the MVM objective --------------------------------------------------------------

    loss_terms = ("mvm",)

    def extra_losses(self, model, batch, visual: VisualTokens, sequence: TokenSequence, hidden: torch.Tensor) -> dict:
        """Eq. 4: kept video tokens of the masked pass against the same tokens of a no-grad unmasked pass."""
        reference = visual.reference
        if reference is None or self.cfg.mvm_weight == 0:
            return {}
        with torch.no_grad():
            reference_hidden, _ = model.run_llm(model.assemble(batch, reference))
        masked_states = visual_states(hidden, batch.video_position, visual.num_tokens)
        reference_states = visual_states(reference_hidden, batch.video_position, reference.num_tokens)
        where = positions_of(source_index(reference), source_index(visual))  # each kept token's place in the reference
        target = torch.gather(reference_states, 1, where.clamp(min=0).unsqueeze(-1).expand_as(masked_states))
        is_video = (visual.kind == TokenKind.FRAME) & (where >= 0)
        prediction = self.mvm_head(masked_states) if self.cfg.mvm_decoder else masked_states
        prediction, target = prediction[is_video].float(), target[is_video].float().detach()
        return {"mvm": self.cfg.mvm_weight * MVM_LOSSES[self.cfg.mvm_loss](prediction, target)}


# (kept tokens, D) predictions against their targets; each a mean over the kept tokens.
MVM_LOSSES = {
    "mse_sum": lambda p, t: ((p - t) ** 2).sum(dim=-1).mean(),  # Eq. 4 as printed: summed over the hidden dimensions
    "mse": lambda p, t: F.mse_loss(p, t),  # averaged over the dimensions too: Eq. 4 / D
    "cosine": lambda p, t: (2 - 2 * F.cosine_similarity(p, t, dim=-1)).mean(),  # the official code
}


def source_index(tokens: VisualTokens) -> torch.Tensor:
    """Each token's index among the unmasked video tokens (-1 for separators)."""
    if tokens.source_index is not None:
        return tokens.source_index
    return torch.arange(tokens.num_tokens, device=tokens.embeds.device).expand(tokens.embeds.shape[0], -1)


def visual_states(hidden: torch.Tensor, video_position: torch.Tensor, count: int) -> torch.Tensor:
    """Hidden states of the ``count`` visual tokens, which the assembler lays out contiguously from video_position."""
    index = video_position.to(hidden.device).unsqueeze(1) + torch.arange(count, device=hidden.device)
    return torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def positions_of(reference_source: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """For every entry of ``source`` (B, K), its position in ``reference_source`` (B, N), or -1."""
    batch, size = reference_source.shape
    lookup = torch.full((batch, int(reference_source.max()) + 2), -1, dtype=torch.long, device=source.device)
    positions = torch.arange(size, device=source.device).expand(batch, -1)
    valid = reference_source >= 0
    lookup.scatter_(1, torch.where(valid, reference_source, lookup.shape[1] - 1), torch.where(valid, positions, -1))
    return torch.where(source >= 0, torch.gather(lookup, 1, source.clamp(min=0)), -1)
