"""Video input: both readers see the same frames, samplers pick the documented indices, bad files fail clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import REPO, moving_square_frames
from zoo.data.reader import VideoError, open_reader
from components.compressors.st_llm_masking import local_positions
from zoo.data.dataset import build_dataset, video_file, video_folder
from zoo.data.sampling import fixed_indices, fps_count, frame_order, uniform_indices
from zoo.data.transforms import FrameResize, PixelNormalise
from zoo.data.writer import write_video


@pytest.fixture
def video(tmp_path):
    frames = moving_square_frames("right", frames=12, size=32, seed=3)
    return write_video(tmp_path / "clip.mp4", frames, fps=6), frames


def test_decord_and_pyav_read_the_same_frames(video):
    path, original = video
    indices = [0, 3, 7, 11]
    a = open_reader("decord").read(path, indices)
    b = open_reader("pyav").read(path, indices)
    assert a.shape == b.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # the same H.264 decode, up to colour conversion rounding
    # Close to what was written: lossy H.264 with 4:2:0 chroma on a per-pixel noise texture is off by ~10 levels.
    assert np.abs(a.astype(int) - original[indices].astype(int)).mean() < 15
    info = open_reader("decord").info(path)
    assert (info.frames, info.width, info.height, round(info.fps)) == (12, 32, 32, 6)
    assert info.as_dict()["duration"] == 2.0


def test_samplers_pick_hand_computed_indices():
    assert uniform_indices(10, 4) == [1, 3, 6, 8]  # centres of 4 segments of 2.5 frames
    assert uniform_indices(3, 6) == [0, 0, 1, 1, 2, 2]  # short videos repeat frames
    assert fixed_indices(3, 5) == [0, 1, 2, 2, 2]
    assert local_positions(64, 16) == list(range(2, 64, 4))  # ST-LLM: int(seg/2 + round(seg*i)), seg = 4
    from zoo.data.reader import VideoInfo

    ten_seconds = VideoInfo("v", "decord", 300, 30.0, 64, 64)
    assert fps_count(ten_seconds, 1.0, 4, 16) == 10
    assert fps_count(VideoInfo("v", "decord", 60, 30.0, 64, 64), 1.0, 4, 16) == 4
    assert fps_count(VideoInfo("v", "decord", 3000, 30.0, 64, 64), 1.0, 4, 16) == 16


def test_resizing_keeps_uint8_frames_and_normalising_is_the_encoders_affine():
    frames = np.full((2, 61, 97, 3), 128, dtype=np.uint8)
    resized = FrameResize(32, mode="resize_crop")(frames)
    assert resized.shape == (2, 3, 32, 32) and resized.dtype == torch.uint8
    assert (resized == 128).all()  # a flat image stays flat through the antialiased resize
    out = PixelNormalise((0.5, 0.25, 0.0), (0.5, 0.5, 1.0))(resized[None])
    expected = torch.tensor([(128 / 255 - 0.5) / 0.5, (128 / 255 - 0.25) / 0.5, 128 / 255])
    assert out.shape == (1, 2, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.allclose(out[0, 0, :, 5, 5], expected, atol=1e-6)
    # LLaVA's expand2square fills with int(mean * 255): 127 for a mean of 0.5.
    padded = FrameResize.for_encoder(type("Encoder", (), {"image_size": 32, "image_mean": (0.5, 0.5, 0.5)}), "pad")(frames)
    assert padded.shape == (2, 3, 32, 32) and padded[0, :, 0, 16].tolist() == [127, 127, 127]
    assert padded[0, :, 16, 16].tolist() == [128, 128, 128]
    normalised = torch.randn(2, 3, 4, 4)
    assert PixelNormalise((0.5,) * 3, (0.5,) * 3)(normalised) is normalised  # floats are normalised already
    with pytest.raises(TypeError, match="uint8 frames"):
        PixelNormalise((0.5,) * 3, (0.5,) * 3)(torch.zeros(2, 3, 4, 4, dtype=torch.int64))


def test_uint8_resizing_stays_within_a_level_of_the_float_resize():
    """The resize works on uint8 frames (as CLIP's and LLaVA's processors do); against the same resize
    in float on a random image it differs by under one level of 255."""
    frames = np.random.default_rng(0).integers(0, 256, (3, 96, 80, 3), dtype=np.uint8)
    for mode in ("resize_crop", "squash"):
        out = FrameResize(32, mode=mode)(frames)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        size = (38, 32) if mode == "resize_crop" else (32, 32)
        reference = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
        if mode == "resize_crop":
            reference = reference[..., 3:35, :]
        assert out.shape == (3, 3, 32, 32) and out.dtype == torch.uint8
        assert (out.float() - reference).abs().max() < 1.0, mode


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_files_give_one_sentence_naming_the_file(tmp_path, backend):
    reader = open_reader(backend)
    missing = tmp_path / "missing.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    for path, words in ((missing, "file not found"), (empty, "empty (0 bytes)"), (text, "not a video file FFmpeg can read")):
        with pytest.raises(VideoError) as error:
            reader.info(path)
        assert str(path) in str(error.value) and words in str(error.value)
        assert "\n" not in str(error.value)


def test_data_probe_prints_what_the_reader_sees_or_the_error(video, tmp_path):
    path, _ = video
    result = subprocess.run([sys.executable, "-m", "zoo.cli", "data", "probe", str(path)], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frames"] == 12
    bad = subprocess.run([sys.executable, "-m", "zoo.cli", "data", "probe", str(tmp_path / "nope.mp4")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "file not found" in bad.stderr  # status 2, as documented


def test_frame_order_reverses_or_shuffles_the_frames_a_sample_gets(direction_dataset, build_tiny):
    """Calibration's broken variants: the same entry, its frames as filmed, reversed, and shuffled (the same
    permutation every time, from the entry's id)."""
    assert frame_order(4, "reversed", "x") == [3, 2, 1, 0]
    assert sorted(frame_order(8, "shuffled", "clip001")) == list(range(8)) and frame_order(8, "shuffled", "clip001") != list(range(8))
    assert frame_order(8, "shuffled", "clip001") == frame_order(8, "shuffled", "clip001") != frame_order(8, "shuffled", "clip002")
    annotations = direction_dataset(count=2, frames=8)
    model = build_tiny(frames=8)
    seen = {}
    for order in ("time", "reversed", "shuffled"):
        recipe = model.recipe
        video = type(recipe.data.video)(**{**recipe.data.video.__dict__, "frames": 8, "frame_order": order})
        seen[order] = build_dataset(recipe, model, annotations, video_spec=video)[1].pixels
    assert torch.equal(seen["reversed"], seen["time"].flip(0))
    assert torch.equal(seen["shuffled"], seen["time"][frame_order(8, "shuffled", "clip001")])


def test_a_relative_video_is_found_under_data_video_root_else_beside_its_annotations(tmp_path, monkeypatch):
    monkeypatch.setenv("STZOO_DATA_ROOT", str(tmp_path / "data"))  # a relative data.video_root starts there
    annotations = tmp_path / "annotations"
    assert video_file("a/b.mp4", str(video_folder(annotations, "clips"))) == f"{tmp_path}/data/clips/a/b.mp4"
    assert video_file("a/b.mp4", str(video_folder(annotations, str(tmp_path / "abs")))) == f"{tmp_path}/abs/a/b.mp4"
    assert video_file("a/b.mp4", str(video_folder(annotations, None))) == f"{tmp_path}/annotations/a/b.mp4"
    assert video_file("/videos/c.mp4", str(video_folder(annotations, "clips"))) == "/videos/c.mp4"
