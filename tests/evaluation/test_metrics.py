"""Metrics on hand-computed cases: answer parsing, UNSCENE dual validation, the keyword judge,
multiple choice, grounding IoUs, and the scoring entry point."""

from __future__ import annotations

import json

import pytest

from zoo.evaluation.metrics.answers import parse_choice, parse_yes_no
from zoo.evaluation.metrics.grounding import (box_iou, score_spatial_grounding, score_spatiotemporal_grounding,
                             score_temporal_grounding, temporal_iou, tube_overlap)
from zoo.evaluation.metrics.multiple_choice import score_multiple_choice
from zoo.evaluation.metrics.open_ended import KeywordJudge, score_open_ended
from zoo.evaluation.metrics.scoring import flatten_metrics, score, write_results
from zoo.evaluation.metrics.unscene import score_binary

VOCABULARY = {
    "actions": {"skiing": ["skis"], "playing_basketball": ["basketball", "shooting hoops"],
                "surfing": ["riding a wave"], "kicking_ball": ["kicking a ball", "soccer"]},
    "scenes": {"snowy_mountain": ["ski slope", "snowy slope"], "basketball_court": ["court"],
               "beach": ["seaside", "shore"]},
    "usual_pairs": [["skiing", "snowy_mountain"]],  # extra manifest keys are ignored
}


def turns(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": answer}]


# ---- answer parsing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Yes.", True), ("yes, the person is skiing", True), ("YES", True), ("**Yes**", True), ("Yeah", True),
    ("Correct.", True), ("I think so.", True), ("Answer: yes", True), ("Assistant: No", False),
    ("No, there is no one", False), ("no.", False), ("Nope", False), ("Not really.", False),
    ("I don't think so.", False), ("I don’t believe so", False),  # curly apostrophe
    ("Nobody is skiing.", False), ("No one is in the video", False), ("The answer is no.", False),
    ("The video shows a beach. Yes, they are surfing.", True),
    ("Not sure", None), ("I'm not sure, but yes", None), ("Maybe", None), ("I don't know", None),
    ("Yes and no", None), ("It is not skiing", None), ("The person is skiing", None), ("", None), (None, None),
    ("Noon", None), ("Yesterday", None),
])
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) is expected


CANDIDATES = ["skiing", "surfing", "ski jumping", "playing basketball"]


@pytest.mark.parametrize("text, expected", [
    ("(B)", 1), ("B.", 1), ("B) surfing", 1), ("b", 1), ("Answer: B", 1), ("Option B", 1), ("option (b)", 1),
    ("The correct answer is (B).", 1), ("Best option: (C) ski jumping", 2), ("Best option:(A)", 0),
    ("I pick (D)", 3), ("surfing", 1), ("The person is surfing.", 1),
    ("ski jumping", 2),  # contains "ski" but not the whole word "skiing"; the longest option wins
    ("basketball", 3),  # only one option contains the answer
    ("A person is skiing", 0),  # "A" here is an article; the option text decides
    ("skiing or surfing", None), ("(A) or (B)", None), ("(A) skiing (B) surfing", None),
    ("E", None), ("(E)", None), ("", None), ("I cannot tell", None),
])
def test_parse_choice(text, expected):
    assert parse_choice(text, CANDIDATES) == expected


def test_parse_choice_duplicate_options_by_text_is_ambiguous():
    assert parse_choice("run", ["run", "run", "walk"]) is None
    assert parse_choice("(B)", ["run", "run", "walk"]) == 1


# ---- UNSCENE binary, dual validation -----------------------------------------------------------------------

def binary(ident, pair, split, qtype, answer, label="x"):
    return {"id": ident, "video": "v.mp4", "task": "binary", "split": split, "pair_id": pair,
            "question_type": qtype, "answer": answer, "label": label,
            "conversations": turns(f"Is it {label}?", answer.capitalize())}


BINARY = [
    binary("p1_gt", "p1", "unusual", "action", "yes"), binary("p1_h", "p1", "unusual", "action", "no"),
    binary("p4_gt", "p4", "unusual", "action", "yes"), binary("p4_h", "p4", "unusual", "action", "no"),
    binary("p2_gt", "p2", "unusual", "scene", "yes"), binary("p2_h", "p2", "unusual", "scene", "no"),
    binary("p3_gt", "p3", "scene_only", "action", "yes"), binary("p3_h", "p3", "scene_only", "action", "no"),
]


def test_dual_validation_needs_both_answers_right():
    predictions = {
        "p1_gt": "Yes.", "p1_h": "No, he is kicking a ball.",  # both right -> pair 1
        "p4_gt": "Yes.", "p4_h": "Yes.",  # one right -> pair 0
        "p2_gt": "yes", "p2_h": "no",  # both right
        "p3_h": "No.",  # p3_gt missing -> pair 0, counted as missing
    }
    metrics, samples = score_binary(BINARY, predictions)
    assert metrics["unusual.action"] == pytest.approx(50.0)
    assert metrics["unusual.scene"] == pytest.approx(100.0)
    assert metrics["scene_only.action"] == pytest.approx(0.0)
    assert metrics["avg"] == pytest.approx((50.0 + 100.0 + 0.0) / 3)
    assert metrics["single_question_accuracy"]["unusual.action"] == pytest.approx(75.0)
    assert metrics["single_question_accuracy"]["scene_only.action"] == pytest.approx(50.0)
    assert metrics["missing"] == 1 and metrics["pairs"]["unusual.action"] == 2
    assert samples["p4_gt"] == {"parsed": "yes", "correct": True, "missing": False, "pair_correct": False}
    assert "usual.action" not in metrics


def test_always_yes_scores_zero_pairs_but_half_the_questions():
    metrics, _ = score_binary(BINARY, {entry["id"]: "Yes" for entry in BINARY})
    assert metrics["avg"] == 0.0
    assert metrics["single_question_accuracy"]["unusual.scene"] == pytest.approx(50.0)


def test_usual_split_is_reported_but_not_averaged_and_unparsed_counts_wrong():
    entries = BINARY + [binary("u_gt", "u", "usual", "scene", "yes"), binary("u_h", "u", "usual", "scene", "no")]
    predictions = {entry["id"]: ("Yes" if entry["answer"] == "yes" else "No") for entry in entries}
    predictions["p2_h"] = "Hard to say."
    metrics, _ = score_binary(entries, predictions)
    assert metrics["usual.scene"] == 100.0
    assert metrics["unusual.scene"] == 0.0
    assert metrics["avg"] == pytest.approx((100.0 + 0.0 + 100.0) / 3)
    assert metrics["unparsed"] == 1 and metrics["missing"] == 0


def test_a_pair_split_across_columns_is_a_data_error():
    entries = [binary("a", "p", "unusual", "action", "yes"), binary("b", "p", "unusual", "scene", "no")]
    with pytest.raises(ValueError, match="pair 'p' mixes columns"):
        score_binary(entries, {})


# ---- open-ended keyword judge ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def judge():
    return KeywordJudge(VOCABULARY)


@pytest.mark.parametrize("answer, action, scene, expected", [
    ("A man is skiing down a snowy slope.", "skiing", "snowy_mountain", (5, 5)),  # synonym for the scene
    ("A man is skiing on a beach.", "skiing", "snowy_mountain", (5, 0)),  # wrong scene only
    ("A man is skiing and surfing at the seaside.", "skiing", "beach", (3, 5)),  # right + one wrong action
    ("A man is skiing, surfing and shooting hoops.", "skiing", "beach", (2, 1)),  # right + two wrong; scene silent
    ("The person is not skiing, he is surfing.", "surfing", "beach", (5, 1)),  # "not skiing" asserts no skiing
    ("Someone is surfing instead of skiing.", "surfing", "beach", (5, 1)),
    ("A man is surfing at the seaside.", "skiing", "beach", (0, 5)),
    ("Two men play basketball on a basketball court.", "playing_basketball", "basketball_court", (5, 5)),
    ("A man kicks something on a basketball court.", "kicking_ball", "basketball_court", (1, 5)),
    ("SKIING on the Ski Slope", "skiing", "snowy_mountain", (5, 5)),  # case-insensitive
    ("Someone is skydiving in the desert.", "skiing", "snowy_mountain", (1, 1)),  # unknown words: silent
    ("A person is dancing in a ballroom.", "dancing", "ballroom", (5, 5)),  # labels outside the vocabulary
    ("  ", "skiing", "beach", (0, 0)),  # an empty answer describes nothing
])
def test_keyword_judge(judge, answer, action, scene, expected):
    result = judge.score(answer, action, scene)
    assert (result["action"], result["scene"]) == expected


@pytest.mark.parametrize("answer, expected_action", [
    ("No one is in the video; it shows a snowy mountain.", 5),
    ("Nobody is skiing on the ski slope.", 5),  # the skiing mention is negated
    ("There is no person in the video.", 5),
    ("An empty snowy mountain.", 5),
    ("A person is skiing on a snowy mountain.", 0),
    ("The slope is empty, although a man is skiing.", 3),  # nobody and an action: contradictory
    ("It is not empty: a man is skiing.", 0),
    ("A beautiful snowy mountain under a blue sky.", 1),  # says nothing about people
])
def test_keyword_judge_scene_only(judge, answer, expected_action):
    assert judge.score(answer, None, "snowy_mountain")["action"] == expected_action


def test_keyword_judge_word_boundaries(judge):
    # "skis" is a synonym of skiing; "skiscape" and "courtyard" are not words of the vocabulary.
    assert judge.assertions("a skiscape by a courtyard") == {"action": set(), "scene": set()}
    assert judge.assertions("he skis") == {"action": {"skiing"}, "scene": set()}


def test_keyword_judge_needs_actions_and_scenes():
    with pytest.raises(ValueError, match="actions"):
        KeywordJudge({"scenes": {}})


def open_entry(ident, split, action, scene):
    return {"id": ident, "video": "v.mp4", "task": "open_ended", "split": split,
            "targets": {"action": action, "scene": scene}, "conversations": turns("Describe the video in detail.", "x")}


def test_open_ended_aggregation(judge):
    entries = [open_entry("s1", "scene_only", None, "beach"), open_entry("s2", "scene_only", None, "beach"),
               open_entry("u1", "unusual", "skiing", "beach"), open_entry("u2", "unusual", "surfing", "beach")]
    predictions = {"s1": "An empty beach.", "s2": "A man is surfing at the shore.",
                   "u1": "A man is skiing on the beach."}  # u2 missing: 0 and 0
    metrics, samples = score_open_ended(entries, predictions, judge)
    assert metrics["scene_only.action"] == pytest.approx(2.5)
    assert "scene_only.scene" not in metrics  # scene-only videos: action score only, as the paper
    assert metrics["unusual.action"] == pytest.approx(2.5)
    assert metrics["unusual.scene"] == pytest.approx(2.5)
    assert metrics["avg"] == pytest.approx(2.5)
    assert metrics["missing"] == 1 and samples["u2"]["missing"]


# ---- multiple choice ---------------------------------------------------------------------------------------

def choice(ident, task_type, candidates, answer, letter=True):
    entry = {"id": ident, "video": "v.mp4", "task": "multiple_choice", "split": "mvbench", "task_type": task_type,
             "candidates": candidates, "answer": answer, "conversations": turns("Which?", answer)}
    if letter:
        entry["answer_letter"] = "ABCD"[candidates.index(answer)]
    return entry


def test_multiple_choice_accuracy_overall_and_per_type():
    entries = [choice("a1", "action", ["run", "walk"], "walk"), choice("a2", "action", ["run", "walk"], "run"),
               choice("s1", "scene", ["beach", "court", "mountain"], "mountain", letter=False)]
    predictions = {"a1": "(B) walk", "a2": "walk", "s1": "The answer is C."}
    metrics, samples = score_multiple_choice(entries, predictions)
    assert metrics["by_task_type"] == {"action": pytest.approx(50.0), "scene": pytest.approx(100.0)}
    assert metrics["accuracy"] == pytest.approx(200.0 / 3)
    assert metrics["mean_task_accuracy"] == pytest.approx(75.0)
    assert samples["a2"] == {"chosen": "B", "correct": False, "missing": False}


def test_multiple_choice_missing_and_unreadable_are_wrong():
    entries = [choice("a", "t", ["x", "y"], "x"), choice("b", "t", ["x", "y"], "y")]
    metrics, _ = score_multiple_choice(entries, {"b": "no idea"})
    assert metrics["accuracy"] == 0.0 and metrics["missing"] == 1 and metrics["unparsed"] == 1


# ---- grounding ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("predicted, reference, expected", [
    ((0.2, 0.6), (0.2, 0.6), 1.0),  # identical
    ((0.0, 0.2), (0.5, 0.7), 0.0),  # disjoint
    ((0.0, 0.5), (0.5, 1.0), 0.0),  # touching: the shared instant has no length
    ((0.0, 0.6), (0.3, 0.9), 0.3 / 0.9),  # overlap 0.3, union 0.9
    ((0.2, 0.4), (0.0, 1.0), 0.2),  # contained
    ((0.5, 0.5), (0.5, 0.5), 1.0),  # identical zero-length spans
    ((0.5, 0.5), (0.0, 1.0), 0.0),  # zero-length inside a span: no overlap length
    ((0.4, 0.4), (0.5, 0.5), 0.0),  # different zero-length spans
    (None, (0.0, 1.0), 0.0),  # no prediction
])
def test_temporal_iou(predicted, reference, expected):
    assert temporal_iou(predicted, reference) == pytest.approx(expected)


@pytest.mark.parametrize("predicted, reference, expected", [
    ((0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 0.5, 0.5), 1.0),
    ((0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75), 0.0625 / 0.4375),  # = 1/7
    ((0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 1.0, 1.0), 0.25),  # contained
    ((0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), 0.0),  # touching edges
    ((0.0, 0.0, 0.2, 0.2), (0.6, 0.6, 0.9, 0.9), 0.0),  # disjoint
    ((0.3, 0.3, 0.3, 0.6), (0.3, 0.3, 0.3, 0.6), 1.0),  # identical zero-area boxes
    ((0.3, 0.3, 0.3, 0.6), (0.0, 0.0, 1.0, 1.0), 0.0),  # zero-area box against a real one
    (None, (0.0, 0.0, 1.0, 1.0), 0.0),
])
def test_box_iou(predicted, reference, expected):
    assert box_iou(predicted, reference) == pytest.approx(expected)


def grounding(ident, task, target, meta=None):
    return {"id": ident, "video": "v.mp4", "task": task, "split": "test", "target": target, "meta": meta or {},
            "conversations": turns("Where?", "x")}


def test_temporal_recall_thresholds_are_inclusive():
    reference = {"span": [0.1, 0.5]}
    entries = [grounding(str(i), "temporal_grounding", reference) for i in range(5)]
    predictions = {
        "0": "from 0.10 to 0.50",  # IoU 1
        "1": "from 0.1 to 0.3",  # IoU 0.2 / 0.4 = 0.5 up to float rounding (0.49999999999999994): counts at 0.5
        "2": "from 0.22 to 0.34",  # IoU 0.12 / 0.4 = 0.3 exactly at the threshold: counts at 0.3
        "3": "at some point",  # unparsed: IoU 0, stays in the denominator
    }  # "4" missing
    metrics, samples = score_temporal_grounding(entries, predictions)
    assert samples["1"]["iou"] == pytest.approx(0.5)
    assert metrics["recall_0.3"] == pytest.approx(60.0)
    assert metrics["recall_0.5"] == pytest.approx(40.0)
    assert metrics["recall_0.7"] == pytest.approx(20.0)
    assert metrics["miou"] == pytest.approx(100.0 * (1.0 + 0.5 + 0.3) / 5)
    assert (metrics["count"], metrics["missing"], metrics["unparsed"]) == (5, 1, 1)


def test_temporal_prediction_in_seconds_uses_the_duration():
    entries = [grounding("a", "temporal_grounding", {"span": [0.25, 0.5]}, meta={"duration": 20.0})]
    _, samples = score_temporal_grounding(entries, {"a": "from 5.0 to 10.0 seconds"})
    assert samples["a"]["iou"] == pytest.approx(1.0)


def test_spatial_grounding_accuracy_and_miou():
    target = {"time": 0.5, "box": [0.0, 0.0, 0.5, 0.5]}
    entries = [grounding(str(i), "spatial_grounding", target) for i in range(3)]
    predictions = {"0": "[0.00, 0.00, 0.50, 0.50]", "1": "at 0.50 [0.25, 0.25, 0.75, 0.75]", "2": "<w0><h0><w49><h49>"}
    metrics, samples = score_spatial_grounding(entries, predictions)
    assert samples["1"]["iou"] == pytest.approx(1 / 7)
    assert samples["2"]["iou"] == pytest.approx((49 / 99) ** 2 / 0.25)  # coordinate tokens, k / 99
    assert metrics["acc_0.5"] == pytest.approx(200.0 / 3)
    assert metrics["miou"] == pytest.approx(100.0 * (1 + 1 / 7 + (49 / 99) ** 2 / 0.25) / 3)


def test_tube_overlap_by_hand():
    box, shifted = (0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)
    reference = [(0.2, box), (0.4, box), (0.6, box)]
    predicted = [(0.2, box), (0.4, shifted), (0.9, box)]
    result = tube_overlap((0.2, 0.6), predicted, (0.2, 0.6), reference, time_tolerance=0.5 / 99)
    assert result["tiou"] == pytest.approx(1.0)
    # Times 0.2 and 0.4 match (IoU 1 and 1/7); 0.6 has no predicted box within tolerance.
    assert result["siou"] == pytest.approx((1 + 1 / 7) / 2)
    # Union of times: 0.2, 0.4, 0.6 (reference) and 0.9 (predicted only) -> 4.
    assert result["viou"] == pytest.approx((1 + 1 / 7) / 4)
    # Nearest box to 0.6 is the one at 0.4 (0.2 away; 0.9 is 0.3 away).
    assert result["nearest_siou"] == pytest.approx((1 + 1 / 7 + 1 / 7) / 3)


def test_tube_overlap_without_boxes_and_repeated_times():
    reference = [(0.5, (0.0, 0.0, 1.0, 1.0))]
    assert tube_overlap(None, [], (0.0, 1.0), reference, 0.005) == {"tiou": 0.0, "siou": 0.0, "viou": 0.0,
                                                                   "nearest_siou": 0.0}
    # A repeated time is one timestamp; its first box counts.
    twice = [(0.5, (0.0, 0.0, 1.0, 1.0)), (0.5, (0.0, 0.0, 0.1, 0.1))]
    assert tube_overlap((0.0, 1.0), twice, (0.0, 1.0), reference, 0.005)["viou"] == pytest.approx(1.0)


def test_spatiotemporal_grounding_matches_coordinate_token_times():
    target = {"span": [0.25, 0.75], "boxes": [[0.25, [0.0, 0.0, 0.5, 0.5]], [0.5, [0.0, 0.0, 0.5, 0.5]]]}
    entries = [grounding("a", "spatiotemporal_grounding", target), grounding("b", "spatiotemporal_grounding", target)]
    # <t25> is 25/99 = 0.2525..., within half a token step of 0.25; <t50> = 0.50505... is exactly half a step
    # from 0.5 (the token 0.5 is written as, since round(49.5) = 50), the edge of the tolerance, still inside.
    tokens = "from <t25> to <t74>; at <t25> [<w0><h0><w50><h50>]; at <t50> [<w0><h0><w50><h50>]"
    metrics, samples = score_spatiotemporal_grounding(entries, {"a": tokens, "b": "no idea"})
    assert samples["a"]["siou"] == pytest.approx(0.25 / (50 / 99) ** 2)  # reference box inside the predicted one
    assert samples["a"]["viou"] == pytest.approx(samples["a"]["siou"])
    assert metrics["siou_0.5"] == pytest.approx(50.0)
    assert metrics["mean_viou"] == pytest.approx(100.0 * samples["a"]["viou"] / 2)
    assert metrics["unparsed"] == 1


# ---- scoring entry point -----------------------------------------------------------------------------------

def mixed_entries() -> list[dict]:
    return (BINARY[:2] + [open_entry("o1", "unusual", "skiing", "beach")]
            + [choice("m1", "action", ["run", "walk"], "walk")]
            + [grounding("t1", "temporal_grounding", {"span": [0.2, 0.6]})]
            + [{"id": "train1", "video": "v.mp4", "task": "conversation", "conversations": turns("Hi", "Hello")}])


def test_score_groups_by_task_and_flattens_for_mlflow():
    predictions = {"p1_gt": "Yes", "p1_h": "No", "o1": "A man skiing on the beach.", "m1": "(B)",
                   "t1": "from 0.20 to 0.60", "stray": "an answer for no entry"}
    results = score(mixed_entries(), predictions, vocabulary=VOCABULARY)
    assert set(results) == {"binary", "open_ended", "multiple_choice", "temporal_grounding", "coverage", "samples"}
    assert results["binary"]["unusual.action"] == 100.0
    assert results["coverage"] == {"entries": 6, "answered": 5, "unknown_ids": 1}
    flat = flatten_metrics(results)
    assert flat["binary.unusual.action"] == 100.0
    assert flat["binary.single_question_accuracy.unusual.action"] == 100.0
    assert flat["open_ended.unusual.action"] == 5.0
    assert flat["multiple_choice.by_task_type.action"] == 100.0
    assert flat["temporal_grounding.recall_0.7"] == 100.0
    assert not any(key.startswith("samples") for key in flat)
    assert all(isinstance(value, float) for value in flat.values())


def test_flatten_makes_names_mlflow_safe():
    assert flatten_metrics({"multiple_choice": {"by_task_type": {"Action (AS)": 50}}}) == {
        "multiple_choice.by_task_type.Action _AS_": 50.0}


def test_score_needs_a_judge_or_vocabulary_for_open_ended():
    with pytest.raises(ValueError, match="vocabulary"):
        score([open_entry("o", "unusual", "skiing", "beach")], {})


def test_score_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="captioning"):
        score([{"id": "x", "task": "captioning"}], {})


def test_write_results(tmp_path):
    entries = mixed_entries()
    predictions = {"p1_gt": "Yes", "p1_h": "Yes", "m1": "walk"}
    results = score(entries, predictions, vocabulary=VOCABULARY)
    metrics_path, predictions_path = write_results(results, predictions, entries, tmp_path / "out")
    written = json.loads(metrics_path.read_text())
    assert "samples" not in written and written["binary"]["unusual.action"] == 0.0
    lines = [json.loads(line) for line in predictions_path.read_text().splitlines()]
    assert [line["id"] for line in lines] == [entry["id"] for entry in entries]
    first = lines[0]
    assert first["question"] == "<video>\nIs it x?" and first["reference"] == "Yes" and first["prediction"] == "Yes"
    assert first["score"] == {"parsed": "yes", "correct": True, "missing": False, "pair_correct": False}
    by_id = {line["id"]: line for line in lines}
    assert by_id["m1"]["score"]["correct"] is True
    assert by_id["o1"]["prediction"] is None and by_id["o1"]["score"]["missing"] is True
    assert by_id["train1"]["score"] is None
