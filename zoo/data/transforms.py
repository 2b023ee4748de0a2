"""Frames (T, H, W, 3) uint8 -> the encoder's input (T, 3, S, S) float, normalised with its mean/std."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("resize_crop", "pad", "squash")


@dataclass(frozen=True)
class FramePreprocess:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "resize_crop"  # CLIP: shortest side to S, centre crop; pad: LLaVA's square padding; squash

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.mode!r}; modes: {', '.join(RESIZE_MODES)}")

    @classmethod
    def for_encoder(cls, encoder, mode: str = "resize_crop") -> "FramePreprocess":
        return cls(encoder.image_size, tuple(encoder.image_mean), tuple(encoder.image_std), mode)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        # Resized as uint8, as CLIP's and LLaVA's image processors resize uint8 images before rescaling: torch's
        # antialiased uint8 kernel is ~6x faster here than the float one (the loader's largest cost after
        # decoding), and the rounding it adds is under one level of 255. The frames arrive (T, H, W, 3), which
        # permuted is the channels-last layout that kernel wants. Then one affine pass: (x/255 - mean) / std.
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        x = getattr(self, f"_{self.mode}")(x)
        scale, shift = self._affine
        return x.float().mul_(scale).sub_(shift).contiguous()

    @functools.cached_property
    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x/255 - mean) / std as x * scale - shift, built once (small tensors cost microseconds each)."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return 1.0 / (255.0 * std), mean / std

    def _resize(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if x.shape[-2:] == (height, width):
            return x
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = self._resize(x, nh, nw)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """LLaVA's expand-to-square: a canvas of the mean colour, as LLaVA fills it (``int(mean * 255)``)."""
        h, w = x.shape[-2:]
        side = max(h, w)
        fill = torch.tensor([int(m * 255) for m in self.mean], dtype=torch.uint8).view(1, 3, 1, 1)
        canvas = fill.expand(x.shape[0], 3, side, side).contiguous(memory_format=torch.channels_last)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[..., top : top + h, left : left + w] = x
        return self._resize(canvas, self.size, self.size)

    def _squash(self, x: torch.Tensor) -> torch.Tensor:
        return self._resize(x, self.size, self.size)
