"""Bad input and faults: each case gives one clear sentence (or a counted skip) and loses nothing."""

from __future__ import annotations

import errno
import json
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import moving_square_frames, tiny_recipe
from zoo.data.reader import VideoError, open_reader
from zoo.data.writer import write_video
from zoo.config.recipe import recipe_from_dict
from components.config import RecipeError
from zoo.cli import main as cli_main
from zoo.launch.ray_train import claim_run_directory
from zoo.training.trainer import Trainer, TrainingError


# --- videos -----------------------------------------------------------------------------------


def write_audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_variable_rate(path: Path, frames: np.ndarray) -> Path:
    """Frames at irregular times (a variable frame rate), as phone videos have."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        times = np.cumsum([0] + [33 if i % 3 else 90 for i in range(len(frames) - 1)])
        for frame, stamp in zip(frames, times):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = int(stamp), Fraction(1, 1000)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_truncated_and_audio_only_files(tmp_path, backend):
    good = write_video(tmp_path / "good.mp4", moving_square_frames("left", frames=24, size=64), fps=8)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])  # the index (moov) is at the end: cut before it
    audio = write_audio_only(tmp_path / "audio.m4a")
    reader = open_reader(backend)
    for path in (truncated, audio):
        with pytest.raises(VideoError) as error:
            reader.read(path, [0, 1])
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert "no video stream" in _message(lambda: open_reader("pyav").info(audio))


def _message(call) -> str:
    try:
        call()
    except VideoError as error:
        return str(error)
    return ""


def test_odd_sizes_single_frames_short_videos_variable_rate_and_large_frames(tmp_path):
    from zoo.data.sampling import uniform_indices
    from zoo.data.transforms import FrameResize

    reader = open_reader("decord")
    preprocess = FrameResize(32)
    one = write_video(tmp_path / "one.mp4", moving_square_frames("left", frames=1, size=32), fps=8)
    frames, info = reader.read_sampled(one, lambda info: uniform_indices(info.frames, 8))
    assert info.frames == 1 and frames.shape[0] == 8  # one frame, repeated to the eight asked for
    short = write_video(tmp_path / "short.mp4", moving_square_frames("left", frames=3, size=32), fps=8)
    frames, _ = reader.read_sampled(short, lambda info: uniform_indices(info.frames, 8))
    assert frames.shape[0] == 8
    vfr = write_variable_rate(tmp_path / "vfr.mp4", moving_square_frames("right", frames=12, size=32))
    frames, info = reader.read_sampled(vfr, lambda info: uniform_indices(info.frames, 4))
    assert info.frames == 12 and frames.shape == (4, 32, 32, 3)
    odd = np.random.default_rng(0).integers(0, 255, (4, 61, 97, 3), dtype=np.uint8)  # 97 x 61
    assert preprocess(odd).shape == (4, 3, 32, 32)
    large = write_video(tmp_path / "large.mp4", np.full((2, 1080, 1920, 3), 90, dtype=np.uint8), fps=8)
    frames, info = reader.read_sampled(large, lambda info: [0, 1])
    assert (info.width, info.height) == (1920, 1080) and preprocess(frames).shape == (2, 3, 32, 32)


# --- training with bad videos --------------------------------------------------------------------


def broken_dataset(tmp_path: Path, direction_dataset) -> Path:
    train = direction_dataset(8)
    entries = json.loads(train.read_text())
    (tmp_path / "videos" / "002.mp4").write_bytes(b"")  # emptied
    entries[5]["video"] = "videos/missing.mp4"  # never there
    train.write_text(json.dumps(entries))
    return train


def recipe_for(train: Path, **data):
    payload = tiny_recipe(frames=8)
    payload["data"].update({"train": str(train), **data})
    payload["train"].update({"batch_size": 2, "max_steps": 3, "progress_bar": False})
    return recipe_from_dict(payload)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_video_stops_training_naming_the_entry(tmp_path, direction_dataset, workers):
    """With DataLoader workers too: the worker's traceback used to be folded into the message (issue 20, item 8)."""
    train = broken_dataset(tmp_path, direction_dataset)
    with pytest.raises(VideoError) as error:
        Trainer(recipe_for(train, num_workers=workers), output_dir=tmp_path / "run", device="cpu").fit()
    message = str(error.value)
    assert message.startswith(str(train)) and "Traceback" not in message and "worker" not in message
    assert str(train) in message and "entry" in message and ("empty (0 bytes)" in message or "file not found" in message)


def test_bad_videos_are_skipped_and_counted_when_the_recipe_allows(tmp_path, direction_dataset, capsys, monkeypatch):
    train = broken_dataset(tmp_path, direction_dataset)
    trainer = Trainer(recipe_for(train, skip_bad_videos=True), output_dir=tmp_path / "run", device="cpu")
    state = trainer.fit()
    assert state.step == 3 and state.skipped_samples >= 1
    # stzoo train says so at the end.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("STZOO_HOME", str(tmp_path / "home"))
    recipe_file = tmp_path / "skipping.yaml"
    recipe_file.write_text(recipe_for(train, skip_bad_videos=True).dump())
    assert cli_main(["train", str(recipe_file), "--output", str(tmp_path / "cli_run")]) == 0
    assert "samples were skipped as unreadable videos" in capsys.readouterr().err


# --- recipes ---------------------------------------------------------------------------------------


def test_out_of_range_rates_and_missing_pretrained_paths(tmp_path):
    payload = tiny_recipe(encoder="blip2_qformer", compressor={"name": "st_llm_masking", "rate_mean": 1.5})
    with pytest.raises(RecipeError, match=r"model\.compressor\.rate_mean: 1\.5 is out of range; it must be at most 1"):
        recipe_from_dict(payload)
    payload = tiny_recipe()
    payload["model"]["encoder"]["pretrained"] = str(tmp_path / "no_such_clip")
    payload["model"]["encoder"].pop("config")
    from zoo.model.video_llm import build_model

    with pytest.raises(RecipeError) as error:
        build_model(recipe_from_dict(payload))
    assert "encoder 'clip'" in str(error.value) and "no_such_clip" in str(error.value)


# --- faults ----------------------------------------------------------------------------------------


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, direction_dataset, monkeypatch):
    recipe = recipe_for(direction_dataset(8), skip_bad_videos=False)
    recipe.train.save_every = 1
    trainer = Trainer(recipe, output_dir=tmp_path / "run", device="cpu")
    import zoo.model.checkpoint as checkpoint

    original = checkpoint.save_file
    calls = {"n": 0}

    def filling_disk(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: the disk fills up halfway
            Path(path).write_bytes(b"\0" * 1024)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", filling_disk)
    with pytest.raises(TrainingError) as error:
        trainer.fit()
    message = str(error.value)
    assert "step 2" in message and "No space left on device" in message and "step-0000001 is intact" in message
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000001"]  # no half-written directory left behind
    from zoo.model.video_llm import VideoLLM

    VideoLLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step-0000001" / "model")  # still loads


def test_metrics_survive_an_mlflow_outage(tmp_path):
    from mlflow.tracking import MlflowClient

    from zoo.launch import servers as local
    from zoo.runs.tracking import MLflowMetrics

    servers = local.LocalServers(home=str(tmp_path / "home"))
    port = local.free_port()
    try:
        local.start_mlflow(servers, port=port)
        client = MlflowClient(servers.mlflow_url)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        sink = MLflowMetrics(servers.mlflow_url, run_id, tmp_path / "unsent.jsonl")
        sink.log_metrics({"loss": 1.0}, 1)
        local.stop_mlflow(servers)
        started = time.time()
        for step in range(2, 6):  # the server is down: training goes on, nothing waits long
            sink.log_metrics({"loss": 1.0 / step}, step)
        assert time.time() - started < 30 and len(sink.pending) == 4
        local.start_mlflow(servers, port=port)
        sink.log_metrics({"loss": 0.1}, 6)  # back: everything kept is sent
        sink.close()
        steps = sorted(m.step for m in MlflowClient(servers.mlflow_url).get_metric_history(run_id, "loss"))
        assert steps == [1, 2, 3, 4, 5, 6] and not (tmp_path / "unsent.jsonl").exists()
        local.stop_mlflow(servers)
        for step in (7, 8):
            sink.log_metrics({"loss": 0.05}, step)
        sink.close()  # never back: what could not be sent is on disk, and the warning says where
        unsent = [json.loads(line) for line in (tmp_path / "unsent.jsonl").read_text().splitlines()]
        assert [u["step"] for u in unsent] == [7, 8]
    finally:
        local.stop_mlflow(servers)


def test_bad_conversations_name_the_turn(direction_dataset):
    from zoo.data.prompting import ConversationError, render
    from zoo.config.recipe import PromptSpec

    with pytest.raises(ConversationError, match="turn 2: more than one <video>"):
        render(PromptSpec(), [{"from": "human", "value": "<video> a"}, {"from": "gpt", "value": "b"},
                              {"from": "human", "value": "<video> c"}])
    with pytest.raises(ConversationError, match="turn 1 has role 'robot'"):
        render(PromptSpec(), [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}])


def test_a_run_name_reused_for_another_recipe_is_refused(tmp_path):
    first = recipe_from_dict(tiny_recipe())
    first.scaling.storage_path = str(tmp_path)
    claim_run_directory(first, "my-run")
    claim_run_directory(first, "my-run")  # the same recipe again: fine (it resumes)
    changed = recipe_from_dict(tiny_recipe(frames=8))
    changed.scaling.storage_path = str(tmp_path)
    with pytest.raises(RecipeError, match="run name 'my-run' already has checkpoints .* from a different recipe"):
        claim_run_directory(changed, "my-run")
    logging_only = recipe_from_dict(tiny_recipe())
    logging_only.scaling.storage_path = str(tmp_path)
    logging_only.train.log_every = 7
    claim_run_directory(logging_only, "my-run")  # what does not change the weights does not count


# --- inputs found by the attack of issue 20, item 8 -------------------------------------------------


def test_a_recipe_with_non_utf8_bytes_is_one_sentence(tmp_path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: caf\u00e9\nextends: recipes/tiny/baseline.yaml\n".encode("latin-1"))
    assert cli_main(["resolve", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {recipe}: not UTF-8 text (byte 9 is b'\\xe9'); save the recipe as UTF-8") and "Traceback" not in err


def test_a_corrupt_recipe_in_a_checkpoint_is_one_sentence(tmp_path, capsys):
    from zoo.model.video_llm import build_model

    directory = tmp_path / "checkpoint"
    build_model(recipe_from_dict(tiny_recipe())).save_pretrained(directory)
    (directory / "recipe.yaml").write_text("model: [unclosed\n")
    assert cli_main(["eval", str(directory), "--benchmark", "x.json"]) == 2
    assert "recipe.yaml: unreadable (ParserError); the checkpoint is damaged" in capsys.readouterr().err
    (directory / "recipe.yaml").write_text("just text\n")
    assert cli_main(["eval", str(directory), "--benchmark", "x.json"]) == 2
    assert "holds no recipe with a model section" in capsys.readouterr().err


@pytest.mark.parametrize("arguments,words", [
    (["--size", "0", "0"], "at least 16 pixels (H.264, and room for the actor), got 0x0"), (["--size", "-32", "32"], "got -32x32"),
    (["--fps", "0"], "SuiteOptions.fps must be at least 1, got 0"), (["--videos", "-5"], "-5 is not at least 1"),
])
def test_data_synth_refuses_impossible_options(arguments, words, tmp_path, capsys):
    try:
        code = cli_main(["data", "synth", "--out", str(tmp_path / "suite"), *arguments])
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    captured = capsys.readouterr()
    assert code == 2 and words in captured.err and "Traceback" not in captured.err and "wrote" not in captured.out
    assert not (tmp_path / "suite").exists()


def test_an_unreachable_tracking_server_is_one_sentence_within_seconds(tmp_path, capsys, monkeypatch):
    """Issue 20, item 7: a dead tracking URI used to retry for minutes, then blame the run reference."""
    from zoo.launch.servers import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.perf_counter()
    assert cli_main(["train", "recipes/tiny/baseline.yaml", "--set", "data.synthetic=null", "--set", "data.eval={}",
                     "--set", f"data.train={tmp_path}/none.json"]) == 2
    assert cli_main(["eval", "runs:/0123456789abcdef0123456789abcdef", "--benchmark", "x.json"]) == 2
    assert time.perf_counter() - started < 30
    err = capsys.readouterr().err
    assert err.count(f"error: MLflow at {uri} does not answer (ConnectionRefusedError); start it, or set "
                     "MLFLOW_TRACKING_URI") == 2 and "Traceback" not in err


def test_a_checkpoint_without_its_tokenizer_fails_at_once(tmp_path):
    """Issue 20, item 10: a checkpoint missing tokenizer/ spent 52 s retrying the hub before its error."""
    from components.weights import CheckpointError
    from zoo.model.video_llm import VideoLLM, build_model

    directory = tmp_path / "checkpoint"
    build_model(recipe_from_dict(tiny_recipe())).save_pretrained(directory)
    assert "tokenizer: tokenizer" in (directory / "recipe.yaml").read_text()  # saved beside the weights
    shutil.rmtree(directory / "tokenizer")
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="its tokenizer/ folder is missing .* copy the whole checkpoint directory again"):
        VideoLLM.from_pretrained(directory)
    assert time.perf_counter() - started < 5


def test_a_tracking_server_lost_mid_run_costs_nothing_and_sync_closes_the_run(direction_dataset, tmp_path, monkeypatch, capsys):
    """Issue 20, item 7: MLflow killed mid-run used to make the job retry for about 10 minutes and fail, so
    evaluation never ran and the run stayed RUNNING. Now the run goes on offline, evaluates, keeps what it
    would send, and `stzoo sync` delivers it and closes the run once the server is back."""
    from mlflow.tracking import MlflowClient

    import zoo.launch.servers as local
    from zoo.runs.in_process import InProcessLauncher
    from zoo.runs.run_recipe import run_recipe

    monkeypatch.setenv("STZOO_HOME", str(tmp_path / "home"))
    servers = local.LocalServers(home=str(tmp_path / "servers"))
    port = local.free_port()

    class ServerLostDuringTraining(InProcessLauncher):
        def train_stage(self, *args, **kwargs):
            local.stop_mlflow(servers)  # killed after the run was created, before the first step
            return super().train_stage(*args, **kwargs)

    train_file = direction_dataset(8)
    data = tiny_recipe(frames=8)
    data["data"].update({"train": str(train_file), "eval": {"direction": str(train_file.with_name("test.json"))}})
    test = [{**json.loads(train_file.read_text())[0], "task": "multiple_choice", "split": "test", "candidates": ["left", "right"],
             "answer": "right", "answer_letter": "B"}]
    train_file.with_name("test.json").write_text(json.dumps(test))
    data["train"].update({"max_steps": 3, "batch_size": 4, "log_every": 1})
    data["eval"] = {"max_new_tokens": 3}
    try:
        local.start_mlflow(servers, port=port)
        data["tracking"] = {"tracking_uri": servers.mlflow_url, "experiment": "outage"}
        recipe = recipe_from_dict(data)
        started = time.perf_counter()
        result = run_recipe(recipe, ServerLostDuringTraining(tmp_path / "run", progress=False))
        assert time.perf_counter() - started < 180  # it used to retry for about 10 minutes, then fail
        assert "direction.multiple_choice.accuracy" in result.metrics  # evaluation ran without the server
        out = capsys.readouterr().out
        waiting = tmp_path / "home" / "unsent_runs" / result.run.run_id
        assert f"was lost during the run" in out and str(waiting) in out and "stzoo sync" in out
        assert (tmp_path / "home" / "unsent_metrics" / f"{result.run.run_id}.jsonl").is_file()

        local.start_mlflow(servers, port=port)
        assert cli_main(["sync"]) == 0
        client = MlflowClient(servers.mlflow_url)
        run = client.get_run(result.run.run_id)
        assert run.info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [1, 2, 3]
        assert run.data.metrics["direction.multiple_choice.accuracy"] == result.metrics["direction.multiple_choice.accuracy"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model", "eval", "plots", "recipe.yaml"} <= artifacts
        assert not waiting.exists() and cli_main(["sync"]) == 0 and "nothing waits" in capsys.readouterr().out
    finally:
        local.stop_mlflow(servers)


def damaged_videos(tmp_path: Path) -> dict[str, Path]:
    """A 60-frame mp4 with 400 bytes of its stream overwritten mid-way, and a faststart (index first) mp4 cut at
    45%: the two files on which `data probe` (decord) and the PyAV reader used to disagree (60 frames vs 18)."""
    import av

    good = write_video(tmp_path / "good.mp4", moving_square_frames("right", frames=60, size=64, seed=1), fps=10)
    data = bytearray(good.read_bytes())
    start, index = data.find(b"mdat"), data.find(b"moov")
    assert start < index  # the writer puts the index last
    middle = start + (index - start) // 2
    data[middle : middle + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (tmp_path / "corrupt.mp4").write_bytes(bytes(data))
    with av.open(str(good)) as source, av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    fast = (tmp_path / "fast.mp4").read_bytes()
    assert fast.find(b"moov") < fast.find(b"mdat")  # the index first, as streaming sites write mp4
    (tmp_path / "cut.mp4").write_bytes(fast[: int(len(fast) * 0.45)])
    return {"good": good, "corrupt": tmp_path / "corrupt.mp4", "cut": tmp_path / "cut.mp4",
            "audio": write_audio_only(tmp_path / "audio.m4a")}


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_one_reader_truth_on_damaged_streams(tmp_path, backend):
    """Issue 20, item 9: a damaged stream is refused the same way by both readers, in `data probe` and in
    training's read; the probe's frame count is training's; no native decoder lines; exit status 2."""
    import subprocess
    import sys

    from tests.helpers import REPO
    from zoo.data.sampling import uniform_indices

    videos = damaged_videos(tmp_path)
    reader = open_reader(backend)

    def probe(path):
        return subprocess.run([sys.executable, "-m", "zoo.cli", "data", "probe", str(path), "--reader", backend],
                              capture_output=True, text=True, cwd=REPO, timeout=120)

    good = probe(videos["good"])
    assert good.returncode == 0 and json.loads(good.stdout)["frames"] == 60
    _, info = reader.read_sampled(videos["good"], lambda info: uniform_indices(info.frames, 8))
    assert info.frames == 60
    for name in ("corrupt", "cut"):
        result = probe(videos[name])
        assert result.returncode == 2, result.stdout
        assert result.stderr.startswith(f"error: video {videos[name]}: the stream is damaged or truncated")
        assert result.stderr.count("\n") == 1 and "@ 0x" not in result.stderr  # one line: no FFmpeg chatter
        assert result.stderr.rstrip().endswith("or set data.skip_bad_videos: true to skip such files")
        with pytest.raises(VideoError, match="the stream is damaged or truncated"):  # training refuses it too
            reader.read_sampled(videos[name], lambda info: uniform_indices(info.frames, 8))
    audio = probe(videos["audio"])
    assert audio.returncode == 2 and audio.stderr == f"error: video {videos['audio']}: the file has no video stream (audio only?)\n"
