"""Loaders of real annotation formats into the STZoo schema, on small fixtures written here,
and the one-sentence errors that name the file, the entry and the problem."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from zoo.data.formats import AnnotationError
from zoo.data.formats import (load_charades_sta, load_entries, load_llava_conversations, load_mvbench,
                               validate_entry)


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def turns(question="<video>\nQ?", answer="A"):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


VALID = [
    {"id": "c1", "video": "videos/train/c1.mp4", "task": "conversation", "split": "train", "meta": {"action": "ski"},
     "conversations": turns() + [{"from": "human", "value": "And?"}, {"from": "gpt", "value": "More."}]},
    {"id": "b1", "video": "v.mp4", "task": "binary", "split": "unusual", "pair_id": "p1", "question_type": "action",
     "answer": "yes", "label": "skiing", "conversations": turns("<video>\nIs the person skiing?", "Yes")},
    {"id": "o1", "video": "v.mp4", "task": "open_ended", "split": "scene_only",
     "targets": {"action": None, "scene": "beach"}, "conversations": turns()},
    {"id": "m1", "video": "v.mp4", "task": "multiple_choice", "split": "test", "candidates": ["run", "walk"],
     "answer": "walk", "answer_letter": "B", "task_type": "action", "conversations": turns()},
    {"id": "t1", "video": "v.mp4", "task": "temporal_grounding", "target": {"span": [0.2, 0.7]},
     "conversations": turns()},
    {"id": "s1", "video": "v.mp4", "task": "spatial_grounding", "target": {"time": 0.5, "box": [0.1, 0.2, 0.5, 0.6]},
     "conversations": turns()},
    {"id": "st1", "video": "v.mp4", "task": "spatiotemporal_grounding",
     "target": {"span": [0.2, 0.7], "boxes": [[0.2, [0.1, 0.2, 0.5, 0.6]], [0.7, [0.2, 0.2, 0.6, 0.6]]]},
     "conversations": turns()},
]


def test_load_entries_accepts_every_task(tmp_path):
    path = write_json(tmp_path / "suite.json", VALID)
    assert load_entries(path) == VALID


def broken(index: int, change) -> list:
    entries = copy.deepcopy(VALID)
    change(entries[index])
    return entries


@pytest.mark.parametrize("index, change, problem", [
    (1, lambda e: e.pop("video"), "entry 1 (id 'b1'): the entry has no 'video' key."),
    (3, lambda e: e.update(answer="jump"), "entry 3 (id 'm1'): answer 'jump' is not one of the candidates ['run', 'walk']."),
    (3, lambda e: e.update(answer_letter="A"), "entry 3 (id 'm1'): answer_letter 'A' names 'run', not the answer 'walk'."),
    (3, lambda e: e.update(answer_letter="E"), "answer_letter 'E' names no option (there are 2)."),
    (4, lambda e: e["target"].update(span=[0.7, 0.2]), "entry 4 (id 't1'): target span [0.7, 0.2] ends before it starts."),
    (4, lambda e: e["target"].update(span=[0.2, 1.5]), "entry 4 (id 't1'): target span end 1.5 is outside [0, 1]."),
    (5, lambda e: e["target"].update(box=[0.1, 0.2, 1.2, 0.6]), "target box x2 1.2 is outside [0, 1]."),
    (5, lambda e: e["target"].update(box=[0.5, 0.2, 0.1, 0.6]), "target box [0.5, 0.2, 0.1, 0.6] has x2 < x1 or y2 < y1."),
    (5, lambda e: e["target"].update(time=-0.1), "target time -0.1 is outside [0, 1]."),
    (6, lambda e: e["target"]["boxes"].__setitem__(1, [1.3, [0, 0, 1, 1]]), "target box 1 time 1.3 is outside [0, 1]."),
    (6, lambda e: e["target"].update(boxes=[]), "target 'boxes' is not a non-empty list"),
    (4, lambda e: e["target"].update(span=["a", 0.5]), "target span start 'a' is not a number."),
    (1, lambda e: e.update(answer="maybe"), "binary answer 'maybe' is not 'yes' or 'no'."),
    (1, lambda e: e.pop("pair_id"), "needs a 'pair_id'"),
    (1, lambda e: e.update(question_type="object"), "question_type 'object' is not 'action' or 'scene'."),
    (2, lambda e: e.update(targets={"action": None}), "targets scene None is not a name."),
    (0, lambda e: e.pop("task"), "entry 0 (id 'c1'): the entry has no 'task' key"),
    (0, lambda e: e.update(task="captions"), "task 'captions' is not one of conversation, binary"),
    (0, lambda e: e.pop("id"), "entry 0: the entry has no 'id'"),
    (0, lambda e: e["conversations"].reverse(), "conversation turn 0 is from 'gpt' where 'human' was expected"),
    (0, lambda e: e.update(conversations=turns()[:1]), "the conversation has no gpt turn to learn from."),
    (1, lambda e: e["conversations"].extend(turns()), "a binary entry needs exactly one human and one gpt turn, not 4 turns."),
    (0, lambda e: e.update(meta=[1]), "'meta' is not an object."),
])
def test_load_entries_names_file_entry_and_problem(tmp_path, index, change, problem):
    path = write_json(tmp_path / "bad.json", broken(index, change))
    with pytest.raises(AnnotationError) as error:
        load_entries(path)
    message = str(error.value)
    assert message.startswith(f"{path}: entry {index}")
    assert problem in message
    assert message.count("\n") == 0 and message.endswith(".")


def test_load_entries_rejects_bad_files(tmp_path):
    invalid = tmp_path / "invalid.json"
    invalid.write_text('[{"id": "a",}]')
    with pytest.raises(AnnotationError, match=re.escape(f"{invalid} is not valid JSON: ") + ".*line 1, column 13"):
        load_entries(invalid)
    with pytest.raises(AnnotationError, match="holds a JSON dict where a list of entries was expected"):
        load_entries(write_json(tmp_path / "dict.json", {"entries": []}))
    with pytest.raises(FileNotFoundError, match="absent.json does not exist"):
        load_entries(tmp_path / "absent.json")
    with pytest.raises(AnnotationError, match=r"entry 1 \(id 'c1'\): its id is already used by entry 0"):
        load_entries(write_json(tmp_path / "twice.json", [VALID[0], VALID[0]]))


def test_validate_entry_is_reusable_with_any_location():
    validate_entry(VALID[3], "anywhere")
    with pytest.raises(AnnotationError, match=r"^my file, row 9: the entry is a JSON list, not an object\.$"):
        validate_entry([], "my file, row 9")


# ---- LLaVA / VideoChat2-IT ---------------------------------------------------------------------------------

def test_load_llava_conversations_both_styles(tmp_path):
    data = [
        {"id": 17, "video": "clips/a.mp4", "conversations": [
            {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A man skis."},
            {"from": "user", "value": "Where?"}, {"from": "assistant", "value": "On a slope."}]},
        {"video": "clips/b.mp4", "QA": [
            {"i": "Watch the video carefully.", "q": "What is the man doing?", "a": "Surfing."},
            {"i": "Describe the video.", "q": "", "a": "A man surfs a wave."}]},
        {"id": 17, "video": "clips/c.mp4", "start": 1.5, "end": 4.0, "conversations": turns()},
    ]
    entries = load_llava_conversations(write_json(tmp_path / "it.json", data))
    assert [e["id"] for e in entries] == ["17", "it_1", "17_2"]
    assert all(e["task"] == "conversation" and e["split"] == "train" for e in entries)
    assert [t["from"] for t in entries[0]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert entries[1]["conversations"] == [
        {"from": "human", "value": "Watch the video carefully.\nWhat is the man doing?"},
        {"from": "gpt", "value": "Surfing."},
        {"from": "human", "value": "Describe the video."},
        {"from": "gpt", "value": "A man surfs a wave."},
    ]
    assert entries[2]["meta"] == {"start": 1.5, "end": 4.0}
    assert entries[1]["video"] == "clips/b.mp4"


@pytest.mark.parametrize("item, problem", [
    ({"conversations": turns()}, "entry 0: the entry has no 'video' key."),
    ({"image": "a.jpg", "conversations": turns()}, "entry 0: the entry has no 'video' key."),
    ({"video": "a.mp4"}, "has neither 'conversations' (LLaVA) nor 'QA' (VideoChat2-IT)."),
    ({"video": "a.mp4", "conversations": turns(), "QA": []}, "has both 'conversations' and 'QA'"),
    ({"video": "a.mp4", "QA": [{"i": "Describe.", "q": "What?"}]}, "QA item 0 has no answer 'a'."),
    ({"video": "a.mp4", "QA": [{"i": "", "q": " ", "a": "x"}]}, "QA item 0 has neither an instruction 'i' nor a question 'q'."),
    ({"id": "x", "video": "a.mp4", "conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}]},
     "entry 0 (id 'x'): conversation turn 0 is from 'robot' where 'human' was expected"),
])
def test_load_llava_conversations_errors(tmp_path, item, problem):
    path = write_json(tmp_path / "it.json", [item])
    with pytest.raises(AnnotationError) as error:
        load_llava_conversations(path)
    assert str(error.value).startswith(f"{path}: entry 0") and problem in str(error.value)


# ---- MVBench -----------------------------------------------------------------------------------------------

MVBENCH = [
    {"video": "166583.webm", "question": "What is the action performed by the person in the video?",
     "candidates": ["Not sure", "Scattering something down", "Piling something up"],
     "answer": "Piling something up"},
    {"video": "99.mp4", "question": "What happened after the person took the box?",
     "candidates": ["Ate the medicine.", "Tidied up the blanket."], "answer": "Ate the medicine.",
     "start": 11.1, "end": 19.6},
]


def test_load_mvbench(tmp_path):
    entries = load_mvbench(write_json(tmp_path / "action_antonym.json", MVBENCH), video_dir="ssv2_video")
    first = entries[0]
    assert first["id"] == "action_antonym_0" and first["task"] == "multiple_choice"
    assert first["task_type"] == "action_antonym" and first["answer_letter"] == "C"
    assert first["video"] == "ssv2_video/166583.webm"
    assert first["conversations"][0]["value"] == (
        "<video>\nWhat is the action performed by the person in the video?\nOptions:\n"
        "(A) Not sure\n(B) Scattering something down\n(C) Piling something up")
    assert first["conversations"][1]["value"] == "(C) Piling something up"
    assert entries[1]["meta"] == {"start": 11.1, "end": 19.6} and entries[1]["answer_letter"] == "A"
    assert load_mvbench(write_json(tmp_path / "x.json", MVBENCH), task_type="AA")[0]["task_type"] == "AA"


@pytest.mark.parametrize("change, problem", [
    (lambda e: e.update(answer="Jumping"), "entry 1: answer 'Jumping' is not one of the candidates"),
    (lambda e: e.pop("candidates"), "entry 1: the entry has no 'candidates' key."),
    (lambda e: e.pop("video"), "entry 1: the entry has no 'video' key."),
    (lambda e: e.update(candidates=["only one"], answer="only one"), "entry 1: candidates ['only one'] is not a list of two"),
])
def test_load_mvbench_errors(tmp_path, change, problem):
    data = copy.deepcopy(MVBENCH)
    change(data[1])
    path = write_json(tmp_path / "episodic_reasoning.json", data)
    with pytest.raises(AnnotationError) as error:
        load_mvbench(path)
    assert str(error.value).startswith(str(path)) and problem in str(error.value)


# ---- Charades-STA ------------------------------------------------------------------------------------------

CHARADES = "3MSZA 24.3 30.4##person turn a light on.\n\nAO8RW 0.0 6.9##a person is putting a book on a shelf.\n" \
           "AO8RW 10.0 31.0##person opens the door.\n"
DURATIONS = {"3MSZA": 30.4, "AO8RW": 30.0}


def test_load_charades_sta_with_durations_dict(tmp_path):
    path = tmp_path / "charades_sta_test.txt"
    path.write_text(CHARADES)
    entries = load_charades_sta(path, DURATIONS)
    assert [e["id"] for e in entries] == ["3MSZA_1", "AO8RW_3", "AO8RW_4"]
    first = entries[0]
    assert first["task"] == "temporal_grounding" and first["split"] == "test" and first["video"] == "3MSZA.mp4"
    assert first["target"]["span"] == [pytest.approx(24.3 / 30.4), 1.0]
    assert first["conversations"][0]["value"] == '<video>\nWhen does "person turn a light on" happen in the video?'
    assert first["conversations"][1]["value"] == "from 0.80 to 1.00"
    assert first["meta"] == {"duration": 30.4, "start": 24.3, "end": 30.4, "sentence": "person turn a light on."}
    # An end past the video's end is clipped to it; the original end stays in meta.
    assert entries[2]["target"]["span"] == [pytest.approx(1 / 3), 1.0] and entries[2]["meta"]["end"] == 31.0


def test_load_charades_sta_durations_from_json_and_csv(tmp_path):
    path = tmp_path / "charades_sta_train.txt"
    path.write_text(CHARADES)
    from_json = load_charades_sta(path, write_json(tmp_path / "durations.json", DURATIONS), video_dir="Charades_v1")
    assert from_json[0]["split"] == "train" and from_json[0]["video"] == "Charades_v1/3MSZA.mp4"
    csv_file = tmp_path / "Charades_v1_test.csv"
    csv_file.write_text("id,subject,scene,length\n3MSZA,A,Kitchen,30.4\nAO8RW,B,Bedroom,30.0\n")
    from_csv = load_charades_sta(path, csv_file)
    assert [e["target"] for e in from_csv] == [e["target"] for e in from_json]


def test_load_charades_sta_reads_durations_from_the_videos(tmp_path):
    from zoo.data.writer import write_video

    write_video(tmp_path / "videos" / "clip1.mp4", np.zeros((8, 32, 32, 3), dtype=np.uint8), fps=4)  # 2.0 s
    path = tmp_path / "sta.txt"
    path.write_text("clip1 0.5 1.5##someone waves.\n")
    (entry,) = load_charades_sta(path, video_dir="videos")  # relative to the annotation file's folder
    assert entry["video"] == "videos/clip1.mp4"
    assert entry["target"]["span"] == [pytest.approx(0.25), pytest.approx(0.75)]
    assert entry["meta"]["duration"] == pytest.approx(2.0)


@pytest.mark.parametrize("line, problem", [
    ("3MSZA 24.3 30.4 person turn a light on.", "line 2: has no '##' between 'VIDEO_ID START END' and the sentence."),
    ("3MSZA 24.3##person turn a light on.", "line 2: starts with '3MSZA 24.3' where 'VIDEO_ID START END' was expected."),
    ("3MSZA 24.3 abc##person.", "line 2: times '24.3' and 'abc' are not both numbers of seconds."),
    ("3MSZA 20.0 10.0##person.", "line 2: ends at 10.0 s, before it starts at 20.0 s."),
    ("XXXXX 1.0 2.0##person.", "line 2: video 'XXXXX' has no duration among the durations given."),
    ("3MSZA 31.0 32.0##person.", "line 2: starts at 31.0 s, at or after the end of its 30.4 s video."),
    ("3MSZA 1.0 2.0##  ", "line 2: has an empty sentence."),
])
def test_load_charades_sta_errors(tmp_path, line, problem):
    path = tmp_path / "sta.txt"
    path.write_text("3MSZA 1.0 2.0##fine.\n" + line + "\n")
    with pytest.raises(AnnotationError) as error:
        load_charades_sta(path, DURATIONS)
    assert str(error.value) == f"{path}: {problem}"


def test_load_charades_sta_missing_video_when_probing(tmp_path):
    path = tmp_path / "sta.txt"
    path.write_text("nothere 1.0 2.0##someone waves.\n")
    with pytest.raises(AnnotationError, match=r"sta.txt: line 1: its duration was to be read from the video, but "
                                              r"video .*nothere.mp4: file not found\.$"):
        load_charades_sta(path)
