"""lmms-eval's ``stzoo`` model: a trained STZoo model answering an lmms-eval task's questions as ``stzoo eval`` does.

``--model_args pretrained=REF`` takes a checkpoint directory, a run's output folder (its final model) or
``runs:/RUN_ID`` (zoo.runs.tracking.load_model); ``plugins=A+B`` names the plugin modules of the recipe to
trust (``+`` because lmms-eval splits model_args at commas); ``device=`` as ``stzoo eval --device``.

Each request's video (the task's doc_to_visual) and prompt (its context) become an entry of the dataset
``stzoo eval`` builds (zoo.model.inference.generation_dataset), answered by its loop
(zoo.evaluation.benchmark.generate_answers): the recipe's evaluation frame sampling and prompt template,
greedy decoding, ``max_new_tokens`` from the task's generation_kwargs else the recipe's eval.max_new_tokens,
batches of ``--batch_size`` (``auto``: the recipe's eval.batch_size; 1 where frames are sampled by fps).
"""

from __future__ import annotations

from pathlib import Path

import torch
from lmms_eval.api.model import lmms

from zoo.evaluation.benchmark import AnswerStream, generate_answers
from zoo.model.inference import generation_dataset
from zoo.runs.tracking import load_model

ARGUMENTS = ("pretrained= (a checkpoint directory, a run's output folder or runs:/RUN_ID), plugins= and device= "
             "(the batch size is lmms-eval's --batch_size)")


class STZoo(lmms):
    is_simple = True  # answers doc_to_visual + doc_to_text requests, not lmms-eval's chat messages

    def __init__(self, pretrained=None, device=None, batch_size=1, max_batch_size=None, plugins="", **unknown):
        super().__init__()
        if unknown:
            raise TypeError(f"--model_args {', '.join(sorted(unknown))}: not an argument of the stzoo model, "
                            f"which takes {ARGUMENTS}")
        if pretrained is None or str(pretrained).strip() == "":
            raise ValueError(f"--model_args: pretrained= is missing; the stzoo model takes {ARGUMENTS}")
        self.model = load_model(str(pretrained), device, plugin_names(plugins))
        self.batch_size_per_gpu = batch_size_of(batch_size, self.model.recipe)

    def generate_until(self, requests) -> list[str]:
        """Each request's answer, in request order; the requests of one task and split are answered together."""
        answers: list[str] = [""] * len(requests)
        for positions in by_task(requests).values():
            for position, text in zip(positions, self.answer([requests[i] for i in positions])):
                answers[position] = text
        return answers

    @torch.no_grad()
    def answer(self, requests) -> list[str]:
        _, gen_kwargs, _, _, task, split = requests[0].args
        max_new_tokens, stops = decoding(gen_kwargs, task, self.model.recipe)
        wanted = [self.entry(request) for request in requests]
        entries = distinct(wanted, task)  # lmms-eval's repeats ask the same question again: answered once
        dataset = generation_dataset(self.model, entries, source=f"lmms-eval task {task} ({split})")
        predictions, _ = generate_answers(self.model, dataset, AnswerStream(None, entries),
                                          batch_size=self.batch_size_per_gpu, max_new_tokens=max_new_tokens,
                                          progress=self.rank == 0)
        return [cut(predictions[entry["id"]], stops) for entry in wanted]

    def entry(self, request) -> dict:
        """The request as an STZoo entry: the doc's id (which seeds frame_order), its video, the context as question."""
        context, _, doc_to_visual, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc)
        if not (isinstance(visuals, list) and len(visuals) == 1 and isinstance(visuals[0], (str, Path))):
            raise ValueError(f"lmms-eval task {task}: doc_to_visual gave {describe(visuals)} for doc {doc_id}, "
                             "where the stzoo model answers about one video given as a file path")
        entry_id = doc.get("id") if isinstance(doc, dict) else None
        return {"id": str(doc_id if entry_id is None else entry_id), "video": str(Path(visuals[0]).absolute()),
                "conversations": [{"from": "human", "value": context}]}

    def loglikelihood(self, requests):
        raise NotImplementedError("the stzoo model answers generate_until tasks only (it generates as stzoo "
                                  "eval does); this task asks for loglikelihood: pick one whose output_type is "
                                  "generate_until")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("the stzoo model answers generate_until tasks only (one question per video, as "
                                  "stzoo eval asks it); this task asks for generate_until_multi_round")


def plugin_names(text) -> list[str]:
    """``plugins=a+b`` (lmms-eval splits model_args at commas, so "+" joins them; quoted commas work too)."""
    return [name.strip() for name in str(text or "").strip("\"'").replace(",", "+").split("+") if name.strip()]


def batch_size_of(value, recipe) -> int:
    """lmms-eval's --batch_size as ``stzoo eval`` batches: ``auto`` is the recipe's eval.batch_size."""
    video = recipe.eval.video or recipe.data.video
    if video.sampler == "fps":
        return 1  # frame counts differ between videos (zoo.evaluation.benchmark.evaluate does the same)
    text = str(value).strip()
    if text.startswith("auto"):
        return recipe.eval.batch_size
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--batch_size {value!r}: the stzoo model takes a whole number of at least 1, or auto "
                         "(the recipe's eval.batch_size)")
    return int(text)


def by_task(requests) -> dict[tuple[str, str], list[int]]:
    """Request positions by (task, split), in request order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for position, request in enumerate(requests):
        task, split = request.args[4], request.args[5]
        groups.setdefault((task, split), []).append(position)
    return groups


def decoding(gen_kwargs: dict, task: str, recipe) -> tuple[int, list[str]]:
    """(max_new_tokens, stop strings) of a task's generation_kwargs; sampling is refused (stzoo eval is greedy)."""
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
        raise ValueError(f"lmms-eval task {task}: generation_kwargs ask for sampling (do_sample or temperature > 0), "
                         "but the stzoo model decodes greedily as stzoo eval does; set temperature 0, do_sample false")
    until = gen_kwargs.get("until") or []
    stops = [until] if isinstance(until, str) else [stop for stop in until if stop]
    return int(gen_kwargs.get("max_new_tokens") or recipe.eval.max_new_tokens), stops


def distinct(entries: list[dict], task: str) -> list[dict]:
    """Each id once; one id asking two different questions cannot be told apart in the answers."""
    seen: dict[str, dict] = {}
    for entry in entries:
        first = seen.setdefault(entry["id"], entry)
        if first != entry:
            raise ValueError(f"lmms-eval task {task}: two docs share the id {entry['id']!r} with different videos or "
                             "questions; give each doc a unique 'id'")
    return list(seen.values())


def cut(text: str | None, stops: list[str]) -> str:
    """The answer up to the first of the task's stop strings (lmms-eval's ``until``)."""
    text = text or ""
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text


def describe(visuals) -> str:
    if isinstance(visuals, list):
        return f"{len(visuals)} visuals ({', '.join(sorted({type(v).__name__ for v in visuals})) or 'none'})"
    return f"a {type(visuals).__name__}"
