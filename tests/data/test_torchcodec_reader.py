"""torchcodec beside decord and PyAV: every kind of video the tests write reads to the same frames and the
same VideoInfo with all three readers; bad files fail with one sentence naming the file; "auto" is torchcodec
where it can load FFmpeg and decord elsewhere, saying why in one line."""

from __future__ import annotations

import ctypes.util
import logging

import numpy as np
import pytest

from components.config import RecipeError
from tests.helpers import moving_square_frames, tiny_recipe
from tests.test_reliability import damaged_videos, write_audio_only, write_variable_rate
from zoo.cli import main as cli_main
from zoo.config.recipe import recipe_from_dict
from zoo.data import reader as reader_module
from zoo.data.action_scene import generate_suite
from zoo.data.dataset import build_dataset
from zoo.data.reader import BACKENDS, ReaderUnavailable, VideoError, default_backend, open_reader
from zoo.data.sampling import uniform_indices
from zoo.data.writer import write_video

torchcodec = pytest.importorskip("torchcodec", reason="torchcodec is not installed (`make setup` installs it)")
UNAVAILABLE = reader_module.torchcodec_unavailable_reason()
needs_torchcodec = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"torchcodec cannot decode here: {UNAVAILABLE}")

# Codec tolerance between readers, in 8-bit levels. The three decode the same H.264 / MPEG-4 / VP9 bitstream
# with different FFmpeg builds (torchcodec: Debian's FFmpeg 5.1; decord and PyAV: their bundled ones); what
# may differ is libswscale's YUV -> RGB rounding, as between decord and PyAV in test_video_input.py. Measured
# on every video below: identical frames (max difference 0), so the bound only admits rounding.
MAX_LEVELS = 2
MAX_MEAN_LEVELS = 0.5


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    """One of each kind of file the test suite writes, plus other codecs and containers datasets ship."""
    root = tmp_path_factory.mktemp("videos")
    square = moving_square_frames("right", frames=12, size=32, seed=3)
    generate_suite(root / "suite", seed=0, videos=8)
    damaged = damaged_videos(root)
    assert (root / "fast.mp4").is_file()  # damaged_videos' index-first copy, before cutting it
    return {
        "h264 mp4": write_video(root / "clip.mp4", square, fps=6),
        "action-scene suite mp4": sorted((root / "suite" / "videos").rglob("*.mp4"))[0],
        "variable-rate mp4": write_variable_rate(root / "vfr.mp4", square),
        "60-frame mp4": damaged["good"],
        "index-first (faststart) mp4": root / "fast.mp4",
        "one frame": write_video(root / "one.mp4", square[:1], fps=8),
        "three frames": write_video(root / "three.mp4", square[:3], fps=8),
        "1080p": write_video(root / "large.mp4", np.full((2, 1080, 1920, 3), 90, dtype=np.uint8), fps=8),
        "per-pixel noise": write_video(root / "noise.mp4", np.random.default_rng(0).integers(
            0, 255, (6, 64, 96, 3), dtype=np.uint8), fps=8),
        "h264 mkv (no declared frame count)": write_video(root / "clip.mkv", square, fps=6),
        "mpeg4 avi": write_video(root / "clip.avi", square, fps=6, codec="mpeg4"),
    }


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad")
    damaged = damaged_videos(root)
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is not a video\n" * 20)
    data = damaged["good"].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])  # the index (moov) is at the end: cut before it
    return {"missing": (root / "missing.mp4", "file not found"), "empty": (root / "empty.mp4", "empty (0 bytes)"),
            "text": (root / "notes.mp4", "not a video file FFmpeg can read"),
            "no index": (root / "truncated.mp4", "not a video file FFmpeg can read"),
            "corrupt": (damaged["corrupt"], "the stream is damaged or truncated"),
            "cut": (damaged["cut"], "the stream is damaged or truncated"),
            "audio only": (write_audio_only(root / "audio.m4a"), "the file has no video stream (audio only?)")}


@needs_torchcodec
@pytest.mark.parametrize("kind", ["h264 mp4", "action-scene suite mp4", "variable-rate mp4", "60-frame mp4",
                                  "index-first (faststart) mp4", "one frame", "three frames", "1080p", "per-pixel noise",
                                  "h264 mkv (no declared frame count)", "mpeg4 avi"])
def test_three_readers_give_the_same_frames_and_info(videos, kind):
    path = videos[kind]
    read = {}
    for backend in BACKENDS:
        frames, info = open_reader(backend).read_sampled(path, lambda info: uniform_indices(info.frames, 8))
        read[backend] = (frames, info)
    frames, info = read["torchcodec"]
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[0] == 8 and frames.shape[-1] == 3
    for backend in ("decord", "pyav"):
        other, other_info = read[backend]
        assert other.shape == frames.shape, backend
        difference = np.abs(frames.astype(int) - other.astype(int))
        assert difference.max() <= MAX_LEVELS and difference.mean() <= MAX_MEAN_LEVELS, (backend, difference.max())
        assert (info.frames, info.width, info.height) == (other_info.frames, other_info.width, other_info.height), backend
        # Read off the same header fields, so the fps sampler picks the same frames whichever reader runs.
        assert info.fps == pytest.approx(other_info.fps, rel=1e-6), backend
    assert open_reader("torchcodec").probe(path) == info  # decoding every frame finds what the sampled read declared


@needs_torchcodec
def test_chosen_indices_come_back_in_order_with_repeats(videos):
    path = videos["60-frame mp4"]
    indices = [59, 0, 0, 31, 7]  # out of order and repeated, as reversed frame order and short videos ask
    frames = open_reader("torchcodec").read(path, indices)
    assert np.abs(frames.astype(int) - open_reader("decord").read(path, indices).astype(int)).max() <= MAX_LEVELS
    assert np.array_equal(frames[1], frames[2])
    with pytest.raises(VideoError, match=r"frame 60 requested but the video has 60 frames") as error:
        open_reader("torchcodec").read(path, [0, 60])
    assert str(path) in str(error.value)


@needs_torchcodec
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["missing", "empty", "text", "no index", "corrupt", "cut", "audio only"])
def test_bad_files_give_one_sentence_naming_the_file(bad_files, backend, case):
    path, words = bad_files[case]
    reader = open_reader(backend)
    sampled = lambda: reader.read_sampled(path, lambda info: uniform_indices(info.frames, 8))  # noqa: E731
    for call in (sampled, lambda: reader.probe(path)):
        with pytest.raises(VideoError) as error:
            call()
        message = str(error.value)
        assert str(path) in message and words in message and "\n" not in message, message
        assert ".cpp:" not in message and "/__w/" not in message  # no decoder source locations


@needs_torchcodec
def test_data_probe_with_torchcodec_says_one_line_and_exits_2(bad_files, videos, capfd):
    """capfd, not capsys: FFmpeg writes its complaints to file descriptor 2 from C."""
    assert cli_main(["data", "probe", str(videos["60-frame mp4"])]) == 0
    assert '"backend": "torchcodec"' in capfd.readouterr().out  # the default reader where FFmpeg loads
    for case in ("corrupt", "cut"):
        path, _ = bad_files[case]
        assert cli_main(["data", "probe", str(path), "--reader", "torchcodec"]) == 2
        err = capfd.readouterr().err
        assert err.startswith(f"error: video {path}: the stream is damaged or truncated") and err.count("\n") == 1, err
        assert "@ 0x" not in err


def test_auto_is_torchcodec_where_it_loads(monkeypatch, caplog):
    monkeypatch.setattr(reader_module, "torchcodec_unavailable_reason", lambda: None)
    with caplog.at_level(logging.WARNING, logger="stzoo.data"):
        assert default_backend() == "torchcodec" and open_reader("auto").name == "torchcodec"
        assert open_reader().name == "torchcodec"  # open_reader's own default is auto too
    assert not caplog.records


def test_auto_falls_back_to_decord_with_one_line_once(monkeypatch, caplog):
    reason = "torchcodec finds no FFmpeg shared libraries (libavutil, libavcodec, ...)"
    monkeypatch.setattr(reader_module, "torchcodec_unavailable_reason", lambda: reason)
    monkeypatch.setattr(reader_module, "_fallbacks_reported", set())
    with caplog.at_level(logging.WARNING, logger="stzoo.data"):
        assert [open_reader("auto").name for _ in range(3)] == ["decord"] * 3
    assert [record.getMessage() for record in caplog.records] == [f"video reader auto: decord, as {reason}"]
    with pytest.raises(ReaderUnavailable) as error:  # named outright, it is refused rather than swapped
        open_reader("torchcodec")
    assert reason in str(error.value) and "data.video.reader: auto" in str(error.value) and "\n" not in str(error.value)


def test_the_reason_names_the_missing_libraries_or_the_mismatch(monkeypatch):
    """The availability check itself (uncached): torchcodec imports without FFmpeg and leaves its major version unset."""
    check = reader_module.torchcodec_unavailable_reason.__wrapped__
    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    missing = check()
    assert "no FFmpeg shared libraries" in missing and "libavcodec59" in missing and ".ci/run" in missing
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.57")
    assert "although FFmpeg's shared libraries are installed" in check()
    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", 5)
    assert check() is None


def test_recipes_default_to_auto_and_the_dataset_opens_the_default(direction_dataset, build_tiny):
    recipe = recipe_from_dict(tiny_recipe())
    assert recipe.data.video.reader == "auto"
    for name in ("torchcodec", "decord", "pyav"):
        assert recipe_from_dict({**tiny_recipe(), "data": {"video": {"reader": name}}}).data.video.reader == name
    with pytest.raises(RecipeError, match="reader"):
        recipe_from_dict({**tiny_recipe(), "data": {"video": {"reader": "opencv"}}})
    model = build_tiny()
    dataset = build_dataset(model.recipe, model, direction_dataset(count=2))
    assert dataset.reader.name == default_backend() and dataset[0].pixels.shape[0] == model.recipe.data.video.frames
