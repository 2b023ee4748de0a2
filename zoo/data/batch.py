"""A training or evaluation batch: pixels plus the tokenized text around the video."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from zoo.data.prompting import IGNORE, EncodedConversation


@dataclass
class VideoSample:
    """One encoded sample, as a dataset returns it."""

    pixels: torch.Tensor  # (T, 3, H, W) uint8 at the encoder's size (the model normalises), or normalised floats
    conversation: EncodedConversation
    instruction_ids: list[int] | None = None  # the question, tokenized for an instruction-aware encoder
    info: dict = field(default_factory=dict)  # id, video path, task and targets for evaluation


@dataclass
class VideoBatch:
    pixels: torch.Tensor  # (B, T, 3, H, W), as the samples' pixels
    text_ids: torch.Tensor  # (B, Lt) right-padded with the pad id
    text_labels: torch.Tensor  # (B, Lt) -100 outside answers and at padding
    text_lengths: torch.Tensor  # (B,)
    video_position: torch.Tensor  # (B,) index in text_ids where the visual tokens go
    instruction: dict[str, torch.Tensor] | None = None  # input_ids / attention_mask for the encoder
    info: list[dict] = field(default_factory=list)
    skipped: list = field(default_factory=list)  # the SkippedSamples dropped from this batch (bad videos) and why
    text_fractions: torch.Tensor | None = None  # (B, Lt) coordinate fractions (LAPE), -1 elsewhere

    @property
    def size(self) -> int:
        return self.pixels.shape[0]

    def to(self, device) -> "VideoBatch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return VideoBatch(
            move(self.pixels), move(self.text_ids), move(self.text_labels), move(self.text_lengths),
            move(self.video_position),
            None if self.instruction is None else {k: move(v) for k, v in self.instruction.items()},
            self.info,
            self.skipped,
            None if self.text_fractions is None else move(self.text_fractions),
        )


def collate(samples: list[VideoSample], pad_id: int, instruction_pad_id: int = 0) -> VideoBatch:
    if not samples:
        raise ValueError("cannot collate an empty batch")
    frames = {s.pixels.shape for s in samples}
    if len(frames) != 1:
        raise ValueError(f"samples of one batch must have the same frame count and size, got {sorted(frames)}")
    kinds = {s.pixels.dtype for s in samples}
    if len(kinds) != 1:  # stacking would promote uint8 frames to floats the model takes as normalised
        raise ValueError(f"samples of one batch must all be uint8 frames or all normalised floats, got {sorted(map(str, kinds))}")
    lengths = [len(s.conversation.ids) for s in samples]
    width = max(lengths)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    for i, sample in enumerate(samples):
        ids[i, : lengths[i]] = torch.tensor(sample.conversation.ids, dtype=torch.long)
        labels[i, : lengths[i]] = torch.tensor(sample.conversation.labels, dtype=torch.long)
    fractions = None
    if samples[0].conversation.fractions is not None:
        fractions = torch.full((len(samples), width), -1.0)
        for i, sample in enumerate(samples):
            fractions[i, : lengths[i]] = torch.tensor(sample.conversation.fractions)
    instruction = None
    if samples[0].instruction_ids is not None:
        widths = [len(s.instruction_ids) for s in samples]
        instruction_ids = torch.full((len(samples), max(widths)), instruction_pad_id, dtype=torch.long)
        mask = torch.zeros_like(instruction_ids)
        for i, sample in enumerate(samples):
            instruction_ids[i, : widths[i]] = torch.tensor(sample.instruction_ids, dtype=torch.long)
            mask[i, : widths[i]] = 1
        instruction = {"input_ids": instruction_ids, "attention_mask": mask}
    return VideoBatch(
        pixels=torch.stack([s.pixels for s in samples]),
        text_ids=ids,
        text_labels=labels,
        text_lengths=torch.tensor(lengths, dtype=torch.long),
        video_position=torch.tensor([s.conversation.video_position for s in samples], dtype=torch.long),
        instruction=instruction,
        info=[s.info for s in samples],
        text_fractions=fractions,
    )
