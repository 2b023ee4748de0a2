"""Annotation entries -> encoded samples (frames decoded and resized to the encoder's size, conversation tokenized).

Decoding happens in ``__getitem__``, so a DataLoader with workers decodes in worker
processes. A video that cannot be read stops the run with a message naming the entry,
or, when the recipe sets ``data.skip_bad_videos``, becomes a SkippedSample that the
collate function drops and counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from torch.utils.data import Dataset

from zoo.config.recipe import AnnotationFormat
from zoo.data.formats import AnnotationError, load_charades_sta, load_entries, load_llava_conversations, load_mvbench
from zoo.data.grounding import DECIMAL, GROUNDING_TASKS, GroundingStyle, grounding_answer
from zoo.data.reader import VideoError, open_reader
from zoo.data.sampling import frame_indices, frame_order
from zoo.data.transforms import FrameResize
from zoo.data.batch import VideoBatch, VideoSample, collate
from zoo.data.prompting import ConversationError, EncodedConversation, encode
from zoo.data.text_cache import EncodedTextCache
from components.config import RecipeError
from zoo.data.action_scene import GENERATOR_VERSION, SuiteOptions, generate_suite



@dataclass
class SkippedSample:
    reason: str
    entry_id: str | None = None


def load_annotations(path: str | Path, annotation_format: AnnotationFormat | None = None,
                     reader: str = "decord") -> list[dict]:
    """An annotation file as entries in the STZoo schema (docs/data_format.md), checked entry by entry: read as
    the recipe's data.format says it is written (LLaVA, VideoChat2-IT, MVBench, Charades-STA or STZoo's own)."""
    annotation_format = annotation_format or AnnotationFormat()
    name = annotation_format.name
    if name in ("llava", "videochat2"):
        return load_llava_conversations(path, layout=name)
    if name == "mvbench":
        return load_mvbench(path, task_type=annotation_format.task_type, video_dir=annotation_format.video_dir)
    if name == "charades_sta":
        durations = data_path(annotation_format.durations) if annotation_format.durations else None
        return load_charades_sta(path, durations, video_dir=annotation_format.video_dir, reader=reader)
    return load_entries(path)


def data_path(path: str | Path) -> Path:
    """A recipe's data path: absolute as given, relative to $STZOO_DATA_ROOT when set, else to the cwd."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    root = os.environ.get("STZOO_DATA_ROOT")
    return (Path(root) / path) if root else path


def video_folder(annotation_dir: Path, video_root: str | None) -> Path:
    """Where an entry's relative video path starts: the recipe's data.video_root, else the annotation file's folder."""
    return data_path(video_root) if video_root else Path(annotation_dir)


def resolve_video(entry: dict, annotation_dir: Path, video_root: str | None) -> Path:
    return Path(video_file(entry["video"], str(video_folder(annotation_dir, video_root))))


def video_file(video: str, folder: str) -> str:
    """An entry's video path joined to its folder as strings: the loader resolves one per sample, after a decode
    has evicted the caches, where pathlib's objects cost ~40 us and this ~19 (benchmarks/README.md, the loader)."""
    return video if os.path.isabs(video) else os.path.join(folder, video)


class ConversationDataset(Dataset):
    def __init__(self, entries: list[dict], annotation_dir: Path, *, video_spec, resize: FrameResize,
                 tokenizer, template, encode_instruction=lambda text: None,
                 video_root: str | None = None, skip_bad_videos: bool = False, for_generation: bool = False,
                 source: str = "<annotations>", codec=None, grounding_style: GroundingStyle = DECIMAL):
        self.entries = entries
        self.annotation_dir = Path(annotation_dir)
        self.video_spec = video_spec
        self.reader = open_reader(video_spec.reader)
        self.resize = resize  # to the encoder's size, uint8: the model normalises on its device, per batch
        self.tokenizer = tokenizer
        self.template = template
        self.encode_instruction = encode_instruction  # the encoder's: question -> instruction ids, or None
        self.video_folder = str(video_folder(self.annotation_dir, video_root))
        self.skip_bad_videos = skip_bad_videos
        self.for_generation = for_generation
        self.source = source
        self.codec = codec  # the position scheme's coordinate codec (LAPE), or None
        self.grounding_style = grounding_style
        self.encoded = EncodedTextCache()  # fixed per entry: tokenised once, then read back every epoch

    def __len__(self) -> int:
        return len(self.entries)

    def turns(self, index: int) -> list[dict]:
        entry = self.entries[index]
        turns = entry["conversations"]
        if self.for_generation:
            return turns[:1]
        if entry.get("task") in GROUNDING_TASKS and "target" in entry and len(turns) == 2:
            # Written from the numeric target in this model's style (coordinate tokens for LAPE).
            answer = grounding_answer(entry["task"], entry["target"], self.grounding_style)
            return [turns[0], {**turns[1], "value": answer}]
        return turns

    def encode_text(self, index: int) -> EncodedConversation:
        """The entry's conversation tokenized, without touching its video."""
        cached = self.encoded.get(index)
        if cached is not None:
            return cached
        entry = self.entries[index]
        try:
            encoded = encode(self.tokenizer, self.template, self.turns(index), self.for_generation,
                             self.template.add_bos, codec=self.codec)
        except ConversationError as error:
            raise AnnotationError(f"{self.source}: entry {index} (id {entry.get('id', '?')}): {error}") from None
        self.encoded.put(index, encoded)
        return encoded

    def __getitem__(self, index: int) -> VideoSample | SkippedSample:
        entry = self.entries[index]
        where = f"{self.source}: entry {index} (id {entry.get('id', '?')})"
        path = video_file(entry["video"], self.video_folder)
        try:
            frames, info = self.reader.read_sampled(path, lambda info: frame_indices(info, self.video_spec))
        except VideoError as error:
            if self.skip_bad_videos:
                return SkippedSample(f"{where}: {error}", entry.get("id"))
            raise VideoError(f"{where}: {error}") from None
        if self.video_spec.frame_order != "time":
            frames = frames[frame_order(len(frames), self.video_spec.frame_order, str(entry.get("id", index)))]
        conversation = self.encode_text(index)
        turns = entry["conversations"]
        instruction_ids = self.encode_instruction(conversation.question)
        details = {k: v for k, v in entry.items() if k != "conversations"}
        details.update(index=index, video_path=path, frames_read=len(frames), video_frames=info.frames,
                       question=turns[0]["value"], reference=entry["conversations"][1]["value"] if len(entry["conversations"]) > 1 else None)
        return VideoSample(self.resize(frames), conversation, instruction_ids, details)


def build_dataset(recipe, model, annotation_file: str | Path | list, for_generation: bool = False,
                  max_samples: int | None = None, video_spec=None) -> Dataset:
    """The encoded samples of one annotation file, or of several concatenated.

    ``video_spec`` replaces the recipe's data.video (evaluation may sample frames differently).
    """
    if isinstance(annotation_file, (list, tuple)):
        parts = [build_dataset(recipe, model, f, for_generation, None, video_spec) for f in annotation_file]
        combined = ConcatAnnotations(parts)
        return combined.truncated(max_samples) if max_samples else combined
    path = data_path(annotation_file)
    entries = load_annotations(path, recipe.data.format_of(annotation_file), reader=(video_spec or recipe.data.video).reader)
    if recipe.data.train_tasks and not for_generation:
        entries = [e for e in entries if e.get("task") in recipe.data.train_tasks]
    if max_samples:
        entries = entries[:max_samples]
    return entries_dataset(recipe, model, entries, path.parent, video_spec=video_spec or recipe.data.video,
                           for_generation=for_generation, source=str(path))


def entries_dataset(recipe, model, entries: list[dict], folder: Path, *, video_spec, for_generation: bool, source: str,
                    skip_bad_videos: bool | None = None) -> ConversationDataset:
    """``entries`` (videos relative to ``folder``) encoded for ``model`` as the recipe says: its frame preprocessing,
    prompt template, video root and grounding style. ``skip_bad_videos`` defaults to the recipe's."""
    codec = model.position.text_codec
    style = recipe.data.grounding_style
    if style == "auto":
        style = "coordinate_tokens" if codec is not None else "decimal"
    return ConversationDataset(
        entries, folder,
        video_spec=video_spec,
        resize=FrameResize.for_encoder(model.encoder, video_spec.resize),
        tokenizer=model.tokenizer,
        template=recipe.prompt,
        encode_instruction=model.encoder.encode_instruction,
        video_root=recipe.data.video_root,
        skip_bad_videos=recipe.data.skip_bad_videos if skip_bad_videos is None else skip_bad_videos,
        for_generation=for_generation,
        source=source,
        codec=codec,
        grounding_style=GroundingStyle(style, getattr(codec, "bins", 100)),
    )


class ConcatAnnotations(Dataset):
    """Several annotation files as one dataset; ``entries`` and ``encode_text`` span all of them."""

    def __init__(self, parts: list[ConversationDataset]):
        self.parts = parts
        self.offsets = [0]
        for part in parts:
            self.offsets.append(self.offsets[-1] + len(part))
        self.source = " + ".join(p.source for p in parts)
        self.limit = self.offsets[-1]

    @property
    def entries(self) -> list[dict]:
        return [e for p in self.parts for e in p.entries][: self.limit]

    def truncated(self, count: int) -> "ConcatAnnotations":
        self.limit = min(count, self.offsets[-1])
        return self

    def __len__(self) -> int:
        return self.limit

    def _locate(self, index: int) -> tuple[ConversationDataset, int]:
        for part, start, end in zip(self.parts, self.offsets, self.offsets[1:]):
            if index < end:
                return part, index - start
        raise IndexError(index)

    def encode_text(self, index: int):
        part, local = self._locate(index)
        return part.encode_text(local)

    def __getitem__(self, index: int):
        part, local = self._locate(index)
        return part[local]


class SkippingCollate:
    """Collate that drops SkippedSamples (recording why in ``batch.info``); a picklable callable for workers."""

    def __init__(self, pad_id: int, instruction_pad_id: int = 0):
        self.pad_id = pad_id
        self.instruction_pad_id = instruction_pad_id

    def __call__(self, samples: list) -> VideoBatch | list[SkippedSample]:
        kept = [s for s in samples if isinstance(s, VideoSample)]
        skipped = [s for s in samples if isinstance(s, SkippedSample)]
        if not kept:
            return skipped
        batch = collate(kept, self.pad_id, self.instruction_pad_id)
        batch.skipped = skipped
        return batch


def batches_of(loader):
    """The loader's batches. An error of a sample raised in a DataLoader worker process reaches here with the
    worker's traceback folded into its message; it is raised again as its own sentence."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (VideoError, AnnotationError, ConversationError) as error:
            message = str(error).strip()
            if "Original Traceback" not in message:
                raise
            last = message.splitlines()[-1]  # "zoo.data.reader.VideoError: FILE: entry 3 (id x): ..."
            raise type(error)(last.split(": ", 1)[1] if ": " in last else last) from None
        yield batch


def ensure_synthetic_suite(recipe, progress: bool = True) -> None:
    """Generate the recipe's synthetic suite where none exists yet. An existing suite is never written
    over: one drawn with other options (or by another generator version) is refused with the options
    that differ, and a data file missing beside a complete suite is reported as a wrong path."""
    spec = recipe.data.synthetic
    if spec is None:
        return
    out = data_path(spec.out)
    where = f"{recipe.source}: data.synthetic.out"
    if (out / "manifest.json").is_file():
        differences = suite_differences(json.loads((out / "manifest.json").read_text()), spec)
        if differences:
            raise RecipeError(f"{where}: {out} holds a suite drawn with {', '.join(d[0] for d in differences)} where "
                              f"this recipe asks for {', '.join(d[1] for d in differences)}; it is never replaced: "
                              "delete that folder to draw it anew, or point data.synthetic.out elsewhere")
    elif out.exists() and any(out.iterdir()):
        raise RecipeError(f"{where}: {out} holds files but no suite manifest.json; a suite is only written into a new "
                          "or empty folder: point data.synthetic.out elsewhere")
    else:
        generate_suite(out, seed=spec.seed, videos=spec.videos, calibration_videos=spec.calibration_videos)
    train = recipe.data.train if isinstance(recipe.data.train, list) else [recipe.data.train]
    wanted = [data_path(p) for p in [*train, *recipe.data.eval.values()] if p]
    for stage in recipe.train.stages:
        stage_train = stage.set.get("data.train")
        wanted += [data_path(p) for p in (stage_train if isinstance(stage_train, list) else [stage_train]) if p]
    missing = [p for p in wanted if not p.exists()]
    if missing:
        raise RecipeError(f"{recipe.source}: data: {missing[0]} does not exist (the synthetic suite in {out} is complete "
                          f"and holds {', '.join(sorted(f.name for f in out.glob('*.json')))}); check data.train and data.eval")


def suite_differences(manifest: dict, spec) -> list[tuple[str, str]]:
    """(what the suite on disk was drawn with, what the recipe asks for) for each setting that differs."""
    options = json.loads(json.dumps(asdict(SuiteOptions())))
    wanted = {"generator_version": GENERATOR_VERSION, "seed": spec.seed, "videos": spec.videos,
              "calibration_videos": spec.calibration_videos,
              **{f"options.{k}": v for k, v in options.items() if k != "workers"}}
    found = {"generator_version": manifest.get("generator_version", 1), "seed": manifest.get("seed"),
             "videos": manifest.get("videos"), "calibration_videos": manifest.get("calibration_videos", 0),
             **{f"options.{k}": v for k, v in manifest.get("options", {}).items()}}
    return [(f"{key} {found.get(key)}", f"{key} {value}") for key, value in wanted.items() if found.get(key) != value]


def instruction_pad_id(model) -> int:
    tokenizer = model.encoder.instruction_tokenizer
    return tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0

