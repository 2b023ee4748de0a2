"""Writing videos with PyAV (H.264 in mp4 by default), deterministic for the same frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, codec: str = "libx264", crf: int = 18) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames; H and W must be even for yuv420p."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 with yuv420p needs even sizes, got {width}x{height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            # One thread is not enough for identical bytes: x264's SIMD paths and macroblock tree made
            # output depend on what the process encoded before (seen on ~10% of the suite's videos).
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
                              "x264-params": "no-asm=1:mbtree=0:bframes=0"}
        stream.codec_context.thread_count = 1  # one thread: the same bytes for the same frames
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
