"""Reading frames from video files: torchcodec (random access, on the system's FFmpeg), decord (random
access, its own FFmpeg) or PyAV (sequential decode).

Every backend gives (N, H, W, 3) uint8 RGB frames for the requested indices. Every failure is a
VideoError whose message names the file and what is wrong with it. "auto" (the recipes' default)
is torchcodec where it can load FFmpeg's shared libraries, decord elsewhere, with one line saying why.
"""

from __future__ import annotations

import ctypes.util
import errno
import functools
import logging
import os
import re
import stat
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from components.errors import UserError

BACKENDS = ("torchcodec", "decord", "pyav")
# What .ci/run installs from Debian bookworm (FFmpeg 5.1): the libraries torchcodec's FFmpeg-5 core links.
FFMPEG_PACKAGES = "libavutil57 libavcodec59 libavformat59 libavdevice59 libavfilter8 libswscale6 libswresample4"
logger = logging.getLogger("stzoo.data")
_fallbacks_reported: set[str] = set()


class VideoError(UserError, ValueError):
    """A video that cannot be used: missing, empty, not a video, or undecodable."""


class ReaderUnavailable(UserError, RuntimeError):
    """A reader named by the recipe that cannot run on this machine (torchcodec without FFmpeg)."""


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


def check_file(path: str | os.PathLike) -> str | os.PathLike:
    """``path`` as given, once it names a non-empty regular file; else a VideoError saying what it is. One stat on
    the path as given: the loader calls this per sample, right after a decode has evicted the caches, where
    building a pathlib.Path first cost ~35 us of a ~60 us check (benchmarks/README.md, the loader)."""
    try:
        status = os.stat(path)
    except OSError as error:
        missing = error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
        raise VideoError(f"video {path}: " + ("file not found" if missing else f"cannot be read ({error.strerror})")) from None
    if not stat.S_ISREG(status.st_mode):
        raise VideoError(f"video {path}: not a file")
    if status.st_size == 0:
        raise VideoError(f"video {path}: the file is empty (0 bytes)")
    return path


def with_size(info: VideoInfo, frames: np.ndarray) -> VideoInfo:
    """``info`` with the decoded frames' width and height (a new VideoInfo only where they differ)."""
    height, width = frames.shape[1], frames.shape[2]
    return info if (info.width, info.height) == (width, height) else replace(info, width=int(width), height=int(height))


class VideoReader:
    """A backend: ``read_sampled`` opens a file once, lets ``choose`` pick frame indices from what it holds."""

    name = ""

    def read_sampled(self, path, choose: Callable[[VideoInfo], list[int]]) -> tuple[np.ndarray, VideoInfo]:
        raise NotImplementedError

    def info(self, path) -> VideoInfo:
        return self.read_sampled(path, lambda info: [0])[1]

    def read(self, path, indices: list[int]) -> np.ndarray:
        return self.read_sampled(path, lambda info: indices)[0]

    def probe(self, path) -> VideoInfo:
        """The video as training sees it, after decoding every frame: a damaged stream is refused here
        with the sentence training would give, instead of passing a probe that reads frame 0 only."""
        raise NotImplementedError


class DecordReader(VideoReader):
    name = "decord"

    def _open(self, path: Path):
        import decord

        # decord's bundled FFmpeg prints its complaints ("[h264 @ 0x...] Invalid NAL unit size") straight to
        # stderr, ahead of the sentence below that says the same in words.
        decord.logging.set_level(decord.logging.QUIET)
        try:
            return decord.VideoReader(str(path), num_threads=1)
        except Exception as error:  # decord raises DECORDError / RuntimeError for anything it cannot open
            raise VideoError(why_unopenable(path, "decord", error)) from None

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
            raise VideoError(damaged(path, f"decord could not decode the frames asked for ({native_reason(error)})",
                                     total)) from None
        return frames, with_size(counted, frames)

    def probe(self, path) -> VideoInfo:
        info = self.info(path)
        reader = self._open(Path(path))
        for start in range(0, info.frames, 32):  # in chunks: a long video's frames need not fit in memory at once
            try:
                reader.get_batch(list(range(start, min(start + 32, info.frames))))
            except Exception as error:
                raise VideoError(damaged(path, f"decoding failed within frames {start}-{min(start + 32, info.frames) - 1} "
                                         f"({native_reason(error)})", info.frames)) from None
        return info


class PyAVReader(VideoReader):
    name = "pyav"

    def _open(self, path: Path):
        import av

        try:
            container = av.open(str(path))
        except Exception as error:  # av.error.InvalidDataError and friends
            raise VideoError(why_unopenable(path, "PyAV", error)) from None
        if not container.streams.video:
            container.close()
            raise VideoError(f"video {path}: the file has no video stream (audio only?)")
        return container

    def read_sampled(self, path, choose: Callable[[VideoInfo], list[int]]) -> tuple[np.ndarray, VideoInfo]:
        """Decode the stream once, keeping only the chosen frames. Where the container declares a frame
        count (mp4, mkv) the choice is made from it and the decoded count must reach it: a stream that
        breaks off or ends early is refused, as decord refuses it, never trained on as a shorter video.
        Elsewhere every frame is kept, then chosen from."""
        path = check_file(path)
        container = self._open(path)
        stream = container.streams.video[0]
        fps, declared = float(stream.average_rate or stream.guessed_rate or 0), int(stream.frames or 0)
        indices = list(choose(VideoInfo(str(path), self.name, declared, fps, 0, 0))) if declared else None
        if indices is not None:
            _check_indices(path, indices, declared)
        wanted = set(indices) if indices is not None else None
        kept: dict[int, np.ndarray] = {}
        count, size = 0, (0, 0)
        try:
            for frame in container.decode(stream):
                size = (frame.height, frame.width)
                if wanted is None or count in wanted:
                    kept[count] = frame.to_ndarray(format="rgb24")
                count += 1
        except Exception as error:
            raise VideoError(damaged(path, f"decoding stopped after {count} frames ({native_reason(error)})",
                                     declared)) from None
        finally:
            container.close()
        if count == 0:
            raise VideoError(f"video {path}: no decodable frame")
        if count < declared:
            raise VideoError(damaged(path, f"the stream ends after {count} frames", declared))
        info = VideoInfo(str(path), self.name, declared or count, fps, 0, 0)
        if indices is None:
            indices = list(choose(info))
            _check_indices(path, indices, count)
        info = replace(info, width=int(size[1]), height=int(size[0]))
        frames = np.stack([kept[i] for i in indices]) if indices else np.empty((0, *size, 3), np.uint8)
        return frames, info

    def probe(self, path) -> VideoInfo:
        return self.read_sampled(path, lambda info: [])[1]  # decodes every frame either way


class TorchCodecReader(VideoReader):
    name = "torchcodec"

    def _open(self, path: Path):
        from torchcodec.decoders import VideoDecoder

        try:
            # One FFmpeg thread, as decord's num_threads=1: DataLoader workers are the parallelism. "exact"
            # counts the frames from the packets, as decord's index does, so both agree on variable-rate files.
            return VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, device="cpu", seek_mode="exact")
        except Exception as error:  # RuntimeError / ValueError from the FFmpeg core for anything it cannot open
            raise VideoError(why_unopenable(path, "torchcodec", error)) from None

    def _counted(self, path: Path) -> tuple[object, VideoInfo]:
        decoder = self._open(path)
        metadata = decoder.metadata
        total, declared = int(metadata.num_frames_from_content or 0), int(metadata.num_frames_from_header or 0)
        if total == 0:
            raise VideoError(f"video {path}: no decodable frame")
        if total < declared:  # the file breaks off: refused, as decord and PyAV refuse it, not read as a shorter video
            raise VideoError(damaged(path, f"the stream ends after {total} frames", declared))
        # The rate decord and PyAV report (FFmpeg's avg_frame_rate: the declared frames over the declared
        # duration; the stream's own rate where the container declares neither, as mkv), so the fps sampler
        # picks the same frames whichever reader runs. torchcodec's average_fps ends at the last frame's
        # start: ~5% higher on variable-rate mp4, 6.003 for 6 on mkv.
        fps = metadata.average_fps_from_header or metadata.average_fps
        if declared and metadata.duration_seconds_from_header:
            fps = declared / metadata.duration_seconds_from_header
        return decoder, VideoInfo(str(path), self.name, total, float(fps or 0),
                                  int(metadata.width or 0), int(metadata.height or 0))

    def read_sampled(self, path, choose: Callable[[VideoInfo], list[int]]) -> tuple[np.ndarray, VideoInfo]:
        """Open once (the container's index: count and rate, no decode), choose indices, decode only those."""
        path = check_file(path)
        decoder, counted = self._counted(path)
        indices = list(choose(counted))
        _check_indices(path, indices, counted.frames)
        if not indices:
            return np.empty((0, counted.height, counted.width, 3), np.uint8), counted
        try:
            frames = decoder.get_frames_at(indices).data.numpy()
        except Exception as error:
            raise VideoError(damaged(path, f"torchcodec could not decode the frames asked for ({native_reason(error)})",
                                     counted.frames)) from None
        return frames, with_size(counted, frames)

    def probe(self, path) -> VideoInfo:
        path = check_file(path)
        decoder, info = self._counted(path)
        for start in range(0, info.frames, 32):  # in chunks: a long video's frames need not fit in memory at once
            stop = min(start + 32, info.frames)
            try:
                decoded = decoder.get_frames_in_range(start, stop).data.shape[0]
            except Exception as error:
                raise VideoError(damaged(path, f"decoding failed within frames {start}-{stop - 1} "
                                         f"({native_reason(error)})", info.frames)) from None
            if decoded < stop - start:
                raise VideoError(damaged(path, f"the stream ends after {start + decoded} frames", info.frames))
        return info


def _check_indices(path, indices, total: int) -> None:
    if total == 0:
        raise VideoError(f"video {path}: no decodable frame")
    bad = [i for i in indices if not 0 <= i < total]
    if bad:
        raise VideoError(f"video {path}: frame {bad[0]} requested but the video has {total} frames")


def native_reason(error: Exception) -> str:
    """A decoder's error without the source locations decord and torchcodec put before it
    (``[11:05:33] /github/workspace/src/video/video_reader.cc:486: Error: ...``,
    ``decode_av_frame, /__w/torchcodec/.../SingleStreamDecoder.cpp:1493, Could not ...``)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+\.(?:cc|h|cpp):\d+: ", "", text).strip()
    text = re.sub(r"^\w+, \S+\.(?:cc|h|cpp):\d+, ", "", text).strip()
    return text.rstrip(":;,. ") or type(error).__name__


def damaged(path, what: str, declared: int) -> str:
    of = f" of the {declared} it declares" if declared else ""
    return (f"video {path}: the stream is damaged or truncated: {what}{of}; replace or re-encode the file, "
            "or set data.skip_bad_videos: true to skip such files")


def why_unopenable(path: Path, backend: str, error: Exception) -> str:
    """Why ``backend`` could not open ``path``, in words: PyAV, which reads any container FFmpeg knows,
    tells an audio-only file and a damaged one apart from a file that is no video at all."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return f"video {path}: the file has no video stream (audio only?)"
    except Exception:  # FFmpeg cannot read it either
        return f"video {path}: not a video file FFmpeg can read ({native_reason(error)})"
    return damaged(path, f"{backend} could not open it ({native_reason(error)})", 0)


@functools.cache
def torchcodec_unavailable_reason() -> str | None:
    """None where torchcodec can decode video here; else why not, as a clause. torchcodec imports without
    FFmpeg (its image decoders need none) and leaves ``ffmpeg_major_version`` unset, so that is the test;
    asked once per process, as loading the libraries is."""
    try:
        import torchcodec
    except Exception as error:  # not installed, or built for another torch
        return f"torchcodec does not import ({native_reason(error)}); `make setup` installs it"
    if torchcodec.ffmpeg_major_version is not None:
        return None
    if ctypes.util.find_library("avutil") is None:
        return ("torchcodec finds no FFmpeg shared libraries (libavutil, libavcodec, ...); "
                f"install them with `apt-get install {FFMPEG_PACKAGES}` as .ci/run does")
    return ("torchcodec could not load its FFmpeg core library although FFmpeg's shared libraries are installed "
            "(an FFmpeg major version it does not support, or a torch it was not built for)")


def default_backend() -> str:
    """The reader "auto" means: torchcodec, measured fastest (benchmarks/README.md), where it can load FFmpeg;
    decord elsewhere, saying why once per process."""
    reason = torchcodec_unavailable_reason()
    if reason is None:
        return "torchcodec"
    if reason not in _fallbacks_reported:
        _fallbacks_reported.add(reason)
        logger.warning(f"video reader auto: decord, as {reason}")
    return "decord"


def open_reader(backend: str = "auto"):
    if backend == "auto":
        backend = default_backend()
    if backend == "torchcodec":
        reason = torchcodec_unavailable_reason()
        if reason is not None:
            raise ReaderUnavailable(f"video reader torchcodec cannot run here: {reason}; "
                                    "or set data.video.reader: auto to fall back to decord")
        return TorchCodecReader()
    if backend == "decord":
        return DecordReader()
    if backend == "pyav":
        return PyAVReader()
    raise ValueError(f"unknown video reader {backend!r}; readers: auto, {', '.join(BACKENDS)}")
