"""Asking a trained model about one video: load, read, prompt, stream the answer."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator

import torch

from zoo.data.reader import open_reader
from zoo.data.sampling import frame_indices
from zoo.data.transforms import FrameResize
from zoo.data.batch import VideoSample, collate
from zoo.data.dataset import ConversationDataset, entries_dataset
from zoo.data.prompting import encode, question_turns
from zoo.model.generation import generate


def prepare_sample(model, video: str, prompt: str) -> VideoSample:
    recipe = model.recipe
    frames, _ = open_reader(recipe.data.video.reader).read_sampled(video, lambda info: frame_indices(info, recipe.data.video))
    pixels = FrameResize.for_encoder(model.encoder, recipe.data.video.resize)(frames)
    conversation = encode(model.tokenizer, recipe.prompt, question_turns(prompt), for_generation=True,
                          add_bos=recipe.prompt.add_bos, codec=model.position.text_codec)
    return VideoSample(pixels, conversation, model.encoder.encode_instruction(conversation.question), {"video": video})


def generation_dataset(model, entries: list[dict], source: str = "entries in memory") -> ConversationDataset:
    """Entries held in memory (video paths absolute) as the dataset ``stzoo eval`` builds for a file of them
    (zoo.data.dataset.entries_dataset for generation): frames sampled as the recipe's eval.video says, else as
    data.video, the first turn encoded for generation; a bad video stops it (an adapter answers every question).
    ``source`` names them in errors."""
    recipe = model.recipe
    return entries_dataset(recipe, model, entries, Path.cwd(), video_spec=recipe.eval.video or recipe.data.video,
                           for_generation=True, source=source, skip_bad_videos=False)


def answer_stream(model, video: str, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0) -> Iterator[str]:
    """Pieces of the answer text as they are generated (decoding runs in a thread and hands pieces over a queue)."""
    batch = collate([prepare_sample(model, video, prompt)], model.pad_id).to(model.device)
    pieces: queue.Queue = queue.Queue()
    produced: list[int] = []
    emitted = ""
    done = object()

    def on_token(_sample: int, token: int) -> None:
        nonlocal emitted
        produced.append(token)
        text = model.tokenizer.decode(produced, skip_special_tokens=True)
        if len(text) > len(emitted) and not text.endswith("\ufffd"):  # wait for complete UTF-8 characters
            pieces.put(text[len(emitted):])
            emitted = text

    def run() -> None:
        try:
            generate(model, batch, max_new_tokens=max_new_tokens, temperature=temperature, on_token=on_token)
        except BaseException as error:  # handed to the consumer, which re-raises it
            pieces.put(error)
        finally:
            pieces.put(done)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while (item := pieces.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
    worker.join()
