"""Annotation files in public formats, read into the STZoo schema (docs/data_format.md) and checked.

Loaders:

* ``load_entries``: the STZoo schema itself.
* ``load_llava_conversations``: LLaVA-style instruction data, ``[{"video", "conversations"}]``,
  and VideoChat2-IT's ``[{"video", "QA": [{"i", "q", "a"}]}]`` (instruction before question).
* ``load_mvbench``: one MVBench task file, ``[{"video", "question", "candidates", "answer"}]``.
* ``load_charades_sta``: Charades-STA's text lines ``VIDEO_ID START END##sentence`` (seconds).

Every problem is an ``AnnotationError`` whose one sentence names the file, the entry (index
and id, or line) and what is wrong, so a bad file stops a run before any video is decoded.
"""

from __future__ import annotations

import csv
import json
import math
import string
from pathlib import Path
from typing import NoReturn

from zoo.data.grounding import DECIMAL
from zoo.data.reader import VideoError, open_reader
from components.errors import UserError


class AnnotationError(UserError, ValueError):
    """An annotation file or entry that cannot be used; the message names the file and the entry."""


TASKS = ("conversation", "binary", "open_ended", "multiple_choice", "temporal_grounding", "spatial_grounding",
         "spatiotemporal_grounding")
SPEAKERS = ("human", "gpt")
# Other chat datasets name the two speakers differently; these are the same roles.
SPEAKER_ALIASES = {"user": "human", "assistant": "gpt"}
CHARADES_QUESTION = 'When does "{sentence}" happen in the video?'


def entry_name(path, index: int, entry=None) -> str:
    """ "FILE: entry 3 (id 'abc')", the way every message names an entry."""
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{path}: entry {index}" + (f" (id {ident!r})" if ident is not None else "")


def fail(where: str, problem: str) -> NoReturn:
    raise AnnotationError(f"{where}: {problem}.")


# ---- checks of single values: each returns the problem as a phrase, or None -------------------------------

def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fraction_problem(value, what: str) -> str | None:
    if not is_number(value):
        return f"{what} {value!r} is not a number"
    if not 0 <= value <= 1:
        return f"{what} {value} is outside [0, 1]"
    return None


def span_problem(span, what: str = "target span") -> str | None:
    if not isinstance(span, (list, tuple)) or len(span) != 2:
        return f"{what} {span!r} is not [start, end]"
    problem = fraction_problem(span[0], f"{what} start") or fraction_problem(span[1], f"{what} end")
    if problem:
        return problem
    if span[1] < span[0]:
        return f"{what} {list(span)} ends before it starts"
    return None


def box_problem(box, what: str = "target box") -> str | None:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return f"{what} {box!r} is not [x1, y1, x2, y2]"
    for name, value in zip(("x1", "y1", "x2", "y2"), box):
        problem = fraction_problem(value, f"{what} {name}")
        if problem:
            return problem
    if box[2] < box[0] or box[3] < box[1]:
        return f"{what} {list(box)} has x2 < x1 or y2 < y1"
    return None


def non_empty_string(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


# ---- checks of whole entries --------------------------------------------------------------------------------

def conversation_problem(turns, task: str) -> str | None:
    if not isinstance(turns, list) or not turns:
        return "'conversations' is not a non-empty list of turns"
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            return f"conversation turn {number} is not {{'from': ..., 'value': text}}"
        expected = SPEAKERS[number % 2]
        if turn.get("from") != expected:
            return f"conversation turn {number} is from {turn.get('from')!r} where {expected!r} was expected " \
                   f"(turns alternate human, gpt, starting with human)"
    if task == "conversation" and len(turns) < 2:
        return "the conversation has no gpt turn to learn from"
    if task != "conversation" and len(turns) != 2:
        return f"a {task} entry needs exactly one human and one gpt turn, not {len(turns)} turns"
    return None


def binary_problem(entry: dict) -> str | None:
    if not isinstance(entry.get("pair_id"), (str, int)) or isinstance(entry.get("pair_id"), bool):
        return "a binary entry needs a 'pair_id' (string or integer) shared by the two questions of its pair"
    if entry.get("question_type") not in ("action", "scene"):
        return f"question_type {entry.get('question_type')!r} is not 'action' or 'scene'"
    if str(entry.get("answer", "")).strip().lower() not in ("yes", "no"):
        return f"binary answer {entry.get('answer')!r} is not 'yes' or 'no'"
    if not non_empty_string(entry.get("label")):
        return "a binary entry needs the 'label' its question names"
    if not non_empty_string(entry.get("split")):
        return "a binary entry needs a 'split' (usual, unusual, scene_only ...) to place it in a column"
    return None


def open_ended_problem(entry: dict) -> str | None:
    targets = entry.get("targets")
    if not isinstance(targets, dict):
        return "an open_ended entry needs 'targets': {'action': name or null, 'scene': name}"
    if targets.get("action") is not None and not non_empty_string(targets.get("action")):
        return f"targets action {targets.get('action')!r} is neither a name nor null"
    if not non_empty_string(targets.get("scene")):
        return f"targets scene {targets.get('scene')!r} is not a name"
    return None


def multiple_choice_problem(entry: dict) -> str | None:
    candidates = entry.get("candidates")
    if not isinstance(candidates, list) or len(candidates) < 2 or not all(isinstance(c, str) for c in candidates):
        return f"candidates {candidates!r} is not a list of two or more option texts"
    if len(candidates) > len(string.ascii_uppercase):
        return f"{len(candidates)} candidates are more than letters A-Z can name"
    answer = entry.get("answer")
    if answer not in candidates:
        return f"answer {answer!r} is not one of the candidates {candidates}"
    letter = entry.get("answer_letter")
    if letter is not None:
        index = string.ascii_uppercase.find(letter) if isinstance(letter, str) and len(letter) == 1 else -1
        if not 0 <= index < len(candidates):
            return f"answer_letter {letter!r} names no option (there are {len(candidates)})"
        if candidates[index] != answer:
            return f"answer_letter {letter!r} names {candidates[index]!r}, not the answer {answer!r}"
    return None


def target_problem(entry: dict) -> str | None:
    task, target = entry["task"], entry.get("target")
    if not isinstance(target, dict):
        return f"a {task} entry needs a 'target' object"
    if task == "temporal_grounding":
        return span_problem(target.get("span"))
    if task == "spatial_grounding":
        return fraction_problem(target.get("time"), "target time") or box_problem(target.get("box"))
    problem = span_problem(target.get("span"))
    if problem:
        return problem
    boxes = target.get("boxes")
    if not isinstance(boxes, list) or not boxes:
        return "target 'boxes' is not a non-empty list of [time, [x1, y1, x2, y2]]"
    for number, item in enumerate(boxes):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return f"target box {number} {item!r} is not [time, [x1, y1, x2, y2]]"
        problem = fraction_problem(item[0], f"target box {number} time") or box_problem(item[1], f"target box {number}")
        if problem:
            return problem
    return None


TASK_CHECKS = {
    "binary": binary_problem,
    "open_ended": open_ended_problem,
    "multiple_choice": multiple_choice_problem,
    "temporal_grounding": target_problem,
    "spatial_grounding": target_problem,
    "spatiotemporal_grounding": target_problem,
}


def entry_problem(entry) -> str | None:
    """What makes ``entry`` invalid in the STZoo schema, as a phrase; None when it is valid."""
    if not isinstance(entry, dict):
        return f"the entry is a JSON {type(entry).__name__}, not an object"
    if not non_empty_string(entry.get("id")):
        return "the entry has no 'id' (a non-empty string)"
    if "video" not in entry:
        return "the entry has no 'video' key"
    if not non_empty_string(entry["video"]):
        return f"'video' {entry['video']!r} is not a path"
    task = entry.get("task")
    if "task" not in entry:
        return f"the entry has no 'task' key (one of {', '.join(TASKS)})"
    if task not in TASKS:
        return f"task {task!r} is not one of {', '.join(TASKS)}"
    if "split" in entry and not isinstance(entry["split"], str):
        return f"split {entry['split']!r} is not a string"
    if "meta" in entry and not isinstance(entry["meta"], dict):
        return "'meta' is not an object"
    problem = conversation_problem(entry.get("conversations"), task)
    if problem:
        return problem
    check = TASK_CHECKS.get(task)
    return check(entry) if check else None


def validate_entry(entry, where: str) -> None:
    """Raise an AnnotationError "<where>: <problem>." when ``entry`` breaks the STZoo schema."""
    problem = entry_problem(entry)
    if problem:
        fail(where, problem)


# ---- files --------------------------------------------------------------------------------------------------

def read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise AnnotationError(f"{path} is not UTF-8 text.") from None
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}, "
                              f"column {error.colno}.") from None


def read_json_list(path: Path) -> list:
    data = read_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path} holds a JSON {type(data).__name__} where a list of entries was expected.")
    return data


def load_entries(path: str | Path) -> list[dict]:
    """An annotation file in the STZoo schema, every entry checked and every id unique."""
    path = Path(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        raise AnnotationError(f"{path} is a text file where a JSON list of STZoo entries was expected; for "
                              "Charades-STA's 'VIDEO_ID START END##sentence' lines set data.format to charades_sta.")
    entries = read_json_list(path)
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = entry_name(path, index, entry)
        problem = entry_problem(entry)
        if problem:
            fail(where, problem + layout_hint(entry))
        if entry["id"] in first_index:
            fail(where, f"its id is already used by entry {first_index[entry['id']]}")
        first_index[entry["id"]] = index
    return entries


def llava_turns(turns, where: str) -> list[dict]:
    """LLaVA conversation turns with the speaker aliases resolved and LLaVA's ``<image>`` mark read as the
    video's place (LLaVA-Video's data marks a video with the token its model swaps for visual features);
    the schema check judges the rest."""
    if not isinstance(turns, list):
        fail(where, "'conversations' is not a list of turns")
    return [{**turn, "from": SPEAKER_ALIASES.get(turn.get("from"), turn.get("from")),
             **({"value": turn["value"].replace("<image>", "<video>")} if isinstance(turn.get("value"), str) else {})}
            if isinstance(turn, dict) else turn for turn in turns]


def videochat2_turns(qa, where: str) -> list[dict]:
    """VideoChat2-IT question-answer items as conversation turns: instruction, then question; then answer."""
    if not isinstance(qa, list) or not qa:
        fail(where, "'QA' is not a non-empty list of {'i', 'q', 'a'} items")
    turns = []
    for number, item in enumerate(qa):
        if not isinstance(item, dict):
            fail(where, f"QA item {number} is not an object")
        parts = [item.get(key) for key in ("i", "q")]
        if not all(part is None or isinstance(part, str) for part in parts):
            fail(where, f"QA item {number} has an instruction or question that is not text")
        prompt = "\n".join(part.strip() for part in parts if part and part.strip())
        if not prompt:
            fail(where, f"QA item {number} has neither an instruction 'i' nor a question 'q'")
        if not non_empty_string(item.get("a")):
            fail(where, f"QA item {number} has no answer 'a'")
        turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": item["a"].strip()}]
    return turns


INSTRUCTION_LAYOUTS = {"llava": "conversations", "videochat2": "QA"}


def load_llava_conversations(path: str | Path, layout: str | None = None) -> list[dict]:
    """LLaVA / VideoChat2-IT instruction data as ``conversation`` entries (split "train").

    ``layout`` ("llava" or "videochat2"), when given, is the one every entry must have, so a file
    declared as one and written as the other is refused instead of read half-right.
    Entries without an id get "<file stem>_<index>"; a repeated id gets "_<index>" appended,
    because instruction sets repeat ids and training does not look them up.
    """
    path = Path(path)
    entries, seen = [], set()
    for index, item in enumerate(read_json_list(path)):
        where = entry_name(path, index, item)
        if not isinstance(item, dict):
            fail(where, f"the entry is a JSON {type(item).__name__}, not an object")
        if not non_empty_string(item.get("video")):
            fail(where, "the entry has no 'video' key" if "video" not in item
                 else f"'video' {item['video']!r} is not a path")
        if "conversations" in item and "QA" in item:
            fail(where, "the entry has both 'conversations' and 'QA', so which one to train on is unclear")
        if layout and ("task" in item or "candidates" in item):
            fail(where, f"the entry is in the STZoo schema (it has {'task' if 'task' in item else 'candidates'!r}), "
                        f"which data.format {layout} would read as a plain conversation and lose its answer; key "
                        "data.format by file or role so that this file reads as stzoo")
        if layout and INSTRUCTION_LAYOUTS[layout] not in item:
            fail(where, f"the entry has no {INSTRUCTION_LAYOUTS[layout]!r}, which data.format {layout} expects"
                        f"{layout_hint(item)}")
        if "conversations" in item:
            turns = llava_turns(item["conversations"], where)
        elif "QA" in item:
            turns = videochat2_turns(item["QA"], where)
        else:
            fail(where, "the entry has neither 'conversations' (LLaVA) nor 'QA' (VideoChat2-IT)")
        ident = str(item["id"]) if item.get("id") not in (None, "") else f"{path.stem}_{index}"
        if ident in seen:
            ident = f"{ident}_{index}"
        seen.add(ident)
        meta = {key: item[key] for key in ("start", "end", "duration", "fps") if is_number(item.get(key))}
        entry = {"id": ident, "video": item["video"], "conversations": turns, "task": "conversation",
                 "split": "train", "meta": meta}
        validate_entry(entry, where)
        entries.append(entry)
    return entries


def public_layout(item) -> str | None:
    """The public format an entry is written in, judged by its keys (None: none of them)."""
    if not isinstance(item, dict):
        return None
    if "QA" in item:
        return "videochat2"
    if "candidates" in item and "question" in item:
        return "mvbench"
    if "conversations" in item and "task" not in item:
        return "llava"
    return None


def layout_hint(item) -> str:
    """Advice for an entry read in the wrong format ("; it looks like mvbench: set data.format ..."), or ""."""
    name = public_layout(item)
    return f"; the entry looks like the {name} format: set data.format (or data.format.ROLE) to {name}" if name else ""


def mvbench_question(question: str, candidates: list[str]) -> str:
    options = "\n".join(f"({string.ascii_uppercase[i]}) {text}" for i, text in enumerate(candidates))
    return f"<video>\n{question.strip()}\nOptions:\n{options}"


def load_mvbench(path: str | Path, task_type: str | None = None, video_dir: str | None = None) -> list[dict]:
    """One MVBench task file as ``multiple_choice`` entries.

    ``task_type`` defaults to the file's stem ("action_sequence.json" -> "action_sequence").
    MVBench keeps each task's video folder in its config, not in the JSON: ``video_dir``,
    when given, is put before every "video". Clip bounds ("start", "end") go into meta.
    """
    path = Path(path)
    task_type = task_type or path.stem
    entries = []
    for index, item in enumerate(read_json_list(path)):
        where = entry_name(path, index, item)
        if not isinstance(item, dict):
            fail(where, f"the entry is a JSON {type(item).__name__}, not an object")
        for key in ("video", "question", "candidates", "answer"):
            if key not in item:
                fail(where, f"the entry has no {key!r} key")
        candidates, answer = item["candidates"], item["answer"]
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            fail(where, f"candidates {candidates!r} is not a list of option texts")
        if answer not in candidates:
            fail(where, f"answer {answer!r} is not one of the candidates {candidates}")
        if not isinstance(item["question"], str):
            fail(where, f"question {item['question']!r} is not text")
        letter = string.ascii_uppercase[candidates.index(answer)]
        video = item["video"]
        if video_dir and isinstance(video, str):
            video = str(Path(video_dir) / video)
        entry = {
            "id": f"{task_type}_{index}", "video": video, "task": "multiple_choice", "split": "mvbench",
            "conversations": [{"from": "human", "value": mvbench_question(item["question"], candidates)},
                              {"from": "gpt", "value": f"({letter}) {answer}"}],
            "meta": {key: item[key] for key in ("start", "end") if is_number(item.get(key))},
            "candidates": list(candidates), "answer": answer, "answer_letter": letter, "task_type": task_type,
        }
        validate_entry(entry, where)
        entries.append(entry)
    return entries


def durations_from_file(path: Path) -> dict[str, float]:
    """Video id -> duration (seconds) from a JSON object or a Charades CSV (columns "id" and "length")."""
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise FileNotFoundError(f"durations file {path} does not exist")
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "id" not in reader.fieldnames or "length" not in reader.fieldnames:
                raise AnnotationError(f"{path} has no 'id' and 'length' columns to read durations from.")
            durations = {}
            for number, row in enumerate(reader, start=2):
                try:
                    durations[row["id"]] = float(row["length"])
                except (TypeError, ValueError):
                    raise AnnotationError(f"{path}: line {number}: length {row['length']!r} is not a number.") from None
            return durations
    data = read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path} holds a JSON {type(data).__name__} where an object of video id -> "
                              f"duration was expected.")
    return data


def probed_duration(video: Path, where: str, reader: str) -> float:
    try:
        return open_reader(reader).info(video).duration
    except VideoError as error:
        fail(where, f"its duration was to be read from the video, but {error}")


def load_charades_sta(path: str | Path, durations: dict[str, float] | str | Path | None = None,
                      video_dir: str | None = None, split: str | None = None,
                      reader: str = "decord") -> list[dict]:
    """Charades-STA sentence lines as ``temporal_grounding`` entries with spans normalised by duration.

    ``durations``: video id -> seconds, as a dict, a JSON file, or Charades' own CSV (its
    "length" column); when None, each video's duration is read from ``video_dir``/ID.mp4
    (``video_dir`` is relative to the annotation file's folder, or absolute; by default that
    folder itself). Some Charades-STA sentences end a fraction of a second after their video
    does; such ends are clipped to the duration (the original end stays in meta["end"]),
    while a sentence starting at or after the end is an error. ``split`` defaults to "train" for a file whose name contains "train",
    else "test".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    if isinstance(durations, (str, Path)):
        durations = durations_from_file(Path(durations))
    split = split or ("train" if "train" in path.stem.lower() else "test")
    # Entry videos are relative to the annotation file's folder (docs/data_format.md), so probing looks there too.
    folder = path.parent / video_dir if video_dir else path.parent
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            entries.append(charades_entry(line, f"{path}: line {number}", number, durations, folder, video_dir, split, reader))
    return entries


def charades_line(line: str, where: str) -> tuple[str, float, float, str]:
    """(video id, start s, end s, sentence) of one 'VIDEO_ID START END##sentence' line, each part checked."""
    head, separator, sentence = line.partition("##")
    if not separator:
        fail(where, "has no '##' between 'VIDEO_ID START END' and the sentence")
    fields = head.split()
    if len(fields) != 3:
        fail(where, f"starts with {head.strip()!r} where 'VIDEO_ID START END' was expected")
    video_id, start_text, end_text = fields
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        fail(where, f"times {start_text!r} and {end_text!r} are not both numbers of seconds")
    sentence = sentence.strip()
    if not sentence:
        fail(where, "has an empty sentence")
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
        fail(where, f"start {start_text} s is not a time in the video")
    if end < start:
        fail(where, f"ends at {end} s, before it starts at {start} s")
    return video_id, start, end, sentence


def charades_entry(line: str, where: str, number: int, durations: dict[str, float] | None, folder: Path,
                   video_dir: str | None, split: str, reader: str) -> dict:
    video_id, start, end, sentence = charades_line(line, where)
    video = f"{video_id}.mp4"
    if durations is None:
        duration = probed_duration(folder / video, where, reader)
    elif video_id in durations:
        duration = durations[video_id]
    else:
        fail(where, f"video {video_id!r} has no duration among the durations given")
    if not is_number(duration) or duration <= 0:
        fail(where, f"video {video_id!r} has duration {duration!r}, not a positive number of seconds")
    if start >= duration:
        fail(where, f"starts at {start} s, at or after the end of its {duration} s video")
    span = [round(start / duration, 6), round(min(end, duration) / duration, 6)]
    entry = {
        "id": f"{video_id}_{number}", "video": str(Path(video_dir) / video) if video_dir else video,
        "task": "temporal_grounding", "split": split,
        "conversations": [{"from": "human", "value": "<video>\n" + CHARADES_QUESTION.format(sentence=sentence.rstrip("."))},
                          {"from": "gpt", "value": DECIMAL.span(*span)}],
        "meta": {"duration": duration, "start": start, "end": end, "sentence": sentence},
        "target": {"span": span},
    }
    validate_entry(entry, where)
    return entry
