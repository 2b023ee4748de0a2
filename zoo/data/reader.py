"""Reading frames from video files: decord (default, random access) or PyAV (fallback).

Both backends give (N, H, W, 3) uint8 RGB frames for the requested indices. Every
failure is a VideoError whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from components.errors import UserError

BACKENDS = ("decord", "pyav")


class VideoError(UserError, ValueError):
    """A video that cannot be used: missing, empty, not a video, or undecodable."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    backend: str
    frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "duration": round(self.duration, 3)}


def check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"video {path}: file not found")
    if not path.is_file():
        raise VideoError(f"video {path}: not a file")
    if path.stat().st_size == 0:
        raise VideoError(f"video {path}: the file is empty (0 bytes)")
    return path


class VideoReader:
    """A backend: ``read_sampled`` opens a file once, lets ``choose`` pick frame indices from what it holds."""

    name = ""

    def read_sampled(self, path, choose: Callable[[VideoInfo], list[int]]) -> tuple[np.ndarray, VideoInfo]:
        raise NotImplementedError

    def info(self, path) -> VideoInfo:
        return self.read_sampled(path, lambda info: [0])[1]

    def read(self, path, indices: list[int]) -> np.ndarray:
        return self.read_sampled(path, lambda info: indices)[0]


class DecordReader(VideoReader):
    name = "decord"

    def _open(self, path: Path):
        import decord

        try:
            return decord.VideoReader(str(path), num_threads=1)
        except Exception as error:  # decord raises DECORDError / RuntimeError for anything it cannot open
            raise VideoError(f"video {path}: decord could not open it as a video ({_first_line(error)})") from None

    def read_sampled(self, path, choose: Callable[[VideoInfo], list[int]]) -> tuple[np.ndarray, VideoInfo]:
        """Open once, choose frame indices from what the file holds, decode only those."""
        path = check_file(path)
        reader = self._open(path)
        total = len(reader)
        if total == 0:
            raise VideoError(f"video {path}: no decodable frame")
        # The frame size is read off the decoded frames: decoding frame 0 only to learn it cost
        # a seek and a decode per video. Samplers choose from the count and the rate.
        counted = VideoInfo(str(path), self.name, total, float(reader.get_avg_fps()), 0, 0)
        indices = list(choose(counted))
        _check_indices(path, indices, total)
        try:
            frames = reader.get_batch(indices).asnumpy()
        except Exception as error:
            raise VideoError(f"video {path}: decoding failed ({_first_line(error)}); the file may be truncated") from None
        return frames, replace(counted, width=int(frames.shape[2]), height=int(frames.shape[1]))


class PyAVReader(VideoReader):
    name = "pyav"

    def _open(self, path: Path):
        import av

        try:
            container = av.open(str(path))
        except Exception as error:  # av.error.InvalidDataError and friends
            raise VideoError(f"video {path}: PyAV could not open it as a video ({_first_line(error)})") from None
        if not container.streams.video:
            container.close()
            raise VideoError(f"video {path}: the file has no video stream (audio only?)")
        return container

    def _decode_all(self, path: Path) -> list[np.ndarray]:
        container = self._open(path)
        frames = []
        try:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
        except Exception as error:
            if not frames:
                raise VideoError(f"video {path}: decoding failed before the first frame ({_first_line(error)})") from None
            # A truncated file: keep what decoded, as decord does with its index.
        finally:
            container.close()
        return frames

    def read_sampled(self, path, choose: Callable[[VideoInfo], list[int]]) -> tuple[np.ndarray, VideoInfo]:
        """Decode the whole stream once (container frame counts are unreliable), then pick frames."""
        path = check_file(path)
        container = self._open(path)
        try:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
        finally:
            container.close()
        frames = self._decode_all(path)
        if not frames:
            raise VideoError(f"video {path}: no decodable frame")
        height, width = frames[0].shape[:2]
        info = VideoInfo(str(path), self.name, len(frames), fps, int(width), int(height))
        indices = list(choose(info))
        _check_indices(path, indices, len(frames))
        return np.stack([frames[i] for i in indices]), info


def _check_indices(path, indices, total: int) -> None:
    if total == 0:
        raise VideoError(f"video {path}: no decodable frame")
    bad = [i for i in indices if not 0 <= i < total]
    if bad:
        raise VideoError(f"video {path}: frame {bad[0]} requested but the video has {total} frames")


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def open_reader(backend: str = "decord"):
    if backend == "decord":
        return DecordReader()
    if backend == "pyav":
        return PyAVReader()
    raise ValueError(f"unknown video reader {backend!r}; readers: {', '.join(BACKENDS)}")
