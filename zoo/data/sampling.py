"""Which frames of a video to read.

- uniform: T frames at the centres of T equal segments (repeats frames of short videos).
- fps: one frame every 1/fps seconds, the count clamped to [min, max] (ST-LLM: 1 fps in [4, 16]),
  spread uniformly.
- global_local: T uniform frames for the global stream; ``local_positions`` says which R of
  them keep their own tokens (ST-LLM: T = 64, R = 16).
- fixed: the first T frames, the last one repeated for short videos.

``frame_order`` then arranges the frames read: ``time`` (as filmed), ``reversed``, or ``shuffled`` (a
permutation drawn from the entry's id, the same on every epoch and machine). The last two are calibration
tools: a model that uses the order of frames must lose what needs it (zoo.data.action_scene.calibration).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from zoo.data.reader import VideoInfo


def uniform_indices(total: int, count: int) -> list[int]:
    if total <= 0 or count <= 0:
        raise ValueError(f"cannot sample {count} frames from a video of {total}")
    return [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]


def fps_count(info: VideoInfo, fps: float, min_frames: int, max_frames: int) -> int:
    wanted = math.floor(info.duration * fps) if info.fps > 0 else info.frames
    return max(min_frames, min(max_frames, wanted))


def fixed_indices(total: int, count: int) -> list[int]:
    return [min(i, total - 1) for i in range(count)]


def frame_indices(info: VideoInfo, video_spec) -> list[int]:
    """The frame indices a recipe's ``data.video`` section asks for, for this video."""
    sampler = video_spec.sampler
    if sampler in ("uniform", "global_local"):
        return uniform_indices(info.frames, video_spec.frames)
    if sampler == "fps":
        return uniform_indices(info.frames, fps_count(info, video_spec.fps, video_spec.min_frames, video_spec.max_frames))
    if sampler == "fixed":
        return fixed_indices(info.frames, video_spec.frames)
    raise ValueError(f"unknown frame sampler {sampler!r}; samplers: uniform, fps, global_local, fixed")


def frame_order(count: int, order: str, key: str) -> list[int]:
    """Positions of the frames read, in the order the model gets them."""
    if order == "time":
        return list(range(count))
    if order == "reversed":
        return list(range(count - 1, -1, -1))
    if order == "shuffled":
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
        return [int(i) for i in np.random.default_rng(seed).permutation(count)]
    raise ValueError(f"unknown frame_order {order!r}; orders: time, reversed, shuffled")
