"""Frames to the encoder's input, in two halves.

``FrameResize`` runs in the loader, per sample: (T, H, W, 3) uint8 frames -> (T, 3, S, S) uint8 at the encoder's
size. ``PixelNormalise`` runs in the model, per batch, on its device: uint8 -> (x/255 - mean) / std in float32.

Why split there: the resize must happen per sample (videos differ in size), the normalisation need not. Done
once per batch it is one op sequence on the device instead of one per sample in a loader worker (measured in
benchmarks/video_input.py, where each op after a decode runs on cold caches), and a sample crosses from a worker
to the training process as uint8, a quarter of the float tensor's bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("resize_crop", "pad", "squash")


@dataclass(frozen=True)
class FrameResize:
    size: int
    fill: tuple[int, int, int] = (0, 0, 0)  # the pad mode's canvas colour, 0-255
    mode: str = "resize_crop"  # CLIP: shortest side to S, centre crop; pad: LLaVA's square padding; squash

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.mode!r}; modes: {', '.join(RESIZE_MODES)}")

    @classmethod
    def for_encoder(cls, encoder, mode: str = "resize_crop") -> "FrameResize":
        # LLaVA's expand2square fills the canvas with int(mean * 255) of the image processor's mean.
        return cls(encoder.image_size, tuple(int(m * 255) for m in encoder.image_mean), mode)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        # Resized as uint8, as CLIP's and LLaVA's image processors resize uint8 images before rescaling: torch's
        # antialiased uint8 kernel is ~6x faster here than the float one, and the rounding it adds is under one
        # level of 255. The frames arrive (T, H, W, 3), which permuted is the channels-last layout that kernel
        # wants. The result may be a strided view (a crop): collate's stack copies it once anyway.
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        return getattr(self, f"_{self.mode}")(x)

    def _resize(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        if x.shape[-2:] == (height, width):
            return x
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)

    def _resize_crop(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = self._resize(x, nh, nw)
        if (nh, nw) == (self.size, self.size):
            return x
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """LLaVA's expand-to-square on a canvas of the fill colour."""
        h, w = x.shape[-2:]
        side = max(h, w)
        fill = torch.tensor(self.fill, dtype=torch.uint8).view(1, 3, 1, 1)
        canvas = fill.expand(x.shape[0], 3, side, side).contiguous(memory_format=torch.channels_last)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[..., top : top + h, left : left + w] = x
        return self._resize(canvas, self.size, self.size)

    def _squash(self, x: torch.Tensor) -> torch.Tensor:
        return self._resize(x, self.size, self.size)


@dataclass(frozen=True)
class PixelNormalise:
    """uint8 pixels (..., 3, H, W) -> (x/255 - mean) / std as float32, on the pixels' device. Float pixels are
    taken as normalised already (what tests and benchmarks build directly) and returned as they are."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_encoder(cls, encoder) -> "PixelNormalise":
        return cls(tuple(encoder.image_mean), tuple(encoder.image_std))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8:
            if not pixels.is_floating_point():
                raise TypeError(f"pixels must be uint8 frames (0-255) or normalised floats, got {pixels.dtype}")
            return pixels
        # Copied into a contiguous float32 tensor first: the affine then runs in place on a plain layout.
        scale, shift = self._affine(pixels.device)
        out = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
        out.copy_(pixels)
        return out.mul_(scale).sub_(shift)

    @functools.lru_cache(maxsize=8)
    def _affine(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(x/255 - mean) / std as x * scale - shift, built once per device."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (1.0 / (255.0 * std)).to(device), (mean / std).to(device)
