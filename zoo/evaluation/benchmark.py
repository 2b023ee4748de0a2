"""Evaluating a model on a benchmark: generate an answer for every entry, score, write the results.

The benchmark is an annotation file in the STZoo schema; its entries' tasks decide the
metrics (zoo.evaluation.metrics.scoring). A synthetic suite's manifest.json beside the file provides the
vocabulary the open-ended judge needs. Frames are sampled as the recipe's ``eval.video``
says, else as in training.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from zoo.data.dataset import SkippedSample, SkippingCollate, batches_of, build_dataset, data_path, instruction_pad_id
from zoo.data.reader import VideoError
from zoo.runtime.threads import refresh_threads
from zoo.evaluation.metrics.scoring import first_turn, flatten_metrics, score, write_results
from zoo.evaluation.provenance import EvaluationSettings, provenance
from components.config import to_plain
from zoo.config.recipe import AnnotationFormat
from tqdm.auto import tqdm


def vocabulary_near(annotation_file: Path) -> dict | None:
    manifest = Path(annotation_file).parent / "manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text()).get("vocabulary")
    return None


class AnswerStream:
    """predictions.jsonl written as answers come, so an evaluation that stops keeps what it produced."""

    def __init__(self, path: Path | None, entries: list[dict]):
        self.path = path
        self.by_id = {entry["id"]: entry for entry in entries}
        self.count = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def add(self, entry_id: str, text: str | None) -> None:
        self.count += 1
        if self.path is None:
            return
        entry = self.by_id[entry_id]
        line = {"id": entry_id, "task": entry.get("task"), "split": entry.get("split"),
                "question": first_turn(entry, "human"), "reference": first_turn(entry, "gpt"), "prediction": text}
        with self.path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")


def generate_answers(model, dataset, stream: AnswerStream, batch_size: int = 1, max_new_tokens: int = 64,
                     progress: bool = False) -> tuple[dict[str, str | None], list[SkippedSample]]:
    """Every entry's answer (streamed as it comes) and the samples whose videos were skipped as unreadable."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=model.recipe.data.num_workers,
                        collate_fn=SkippingCollate(model.pad_id, instruction_pad_id(model)))
    predictions: dict[str, str | None] = {}
    skipped: list[SkippedSample] = []
    bar = tqdm(total=len(dataset), desc=f"eval {Path(dataset.source).name}", unit="sample") if progress else None
    try:
        for batch in batches_of(loader):
            refresh_threads()
            batch_skipped = batch if isinstance(batch, list) else batch.skipped  # a list: every video of it unreadable
            skipped += batch_skipped
            if not isinstance(batch, list):
                generation = model.generate(batch.to(model.device), max_new_tokens=max_new_tokens)
                for info, text in zip(batch.info, generation.texts):
                    predictions[info["id"]] = text
                    stream.add(info["id"], text)
            if bar is not None:
                bar.update(len(batch_skipped) + (0 if isinstance(batch, list) else batch.size))
    finally:  # closed on an error too, so the bar ends its line before the error's sentence is printed
        if bar is not None:
            bar.close()
    return predictions, skipped


@torch.no_grad()
def evaluate(model, annotation_file, out_dir: Path | None = None, max_samples: int | None = None,
             batch_size: int | None = None, max_new_tokens: int | None = None, progress: bool = False,
             skip_bad_videos: bool | None = None, annotation_format: str | AnnotationFormat | None = None) -> dict:
    """Metrics for one benchmark; with ``out_dir``, predictions.jsonl grows as answers come and results.json
    (and the scored predictions) are written at the end. ``skip_bad_videos`` (default: the recipe's
    data.skip_bad_videos) leaves unreadable videos out of the scores and lists them in the results.
    ``annotation_format`` (default: what the recipe's data.format says for this file) names the file's format, or
    gives it with its options (an AnnotationFormat: MVBench's video folder, Charades' durations)."""
    recipe = copy.deepcopy(model.recipe)
    if skip_bad_videos is not None:
        recipe.data.skip_bad_videos = skip_bad_videos
    if annotation_format is not None:
        recipe.data.format = {str(annotation_file): annotation_format}
    video_spec = recipe.eval.video or recipe.data.video
    started = time.time()
    dataset = build_dataset(recipe, model, annotation_file, for_generation=True, video_spec=video_spec,
                            max_samples=max_samples or recipe.eval.max_samples)
    stream = AnswerStream(Path(out_dir) / "predictions.jsonl" if out_dir is not None else None, dataset.entries)
    settings = EvaluationSettings(
        model_source=model.source or "a model in memory (not loaded from a directory or run)",
        recipe_fingerprint=model.recipe_fingerprint,
        batch_size=1 if video_spec.sampler == "fps" else batch_size or recipe.eval.batch_size,  # fps: frame counts differ
        max_new_tokens=max_new_tokens or recipe.eval.max_new_tokens, limit=max_samples or recipe.eval.max_samples,
        device=str(model.device), video=to_plain(video_spec), annotation_format=recipe.data.format_of(annotation_file).name)
    try:
        predictions, skipped = generate_answers(model, dataset, stream, max_new_tokens=settings.max_new_tokens,
                                                progress=progress, batch_size=settings.batch_size)
    except VideoError as error:
        kept = f"the {stream.count} answers before it are in {stream.path}" if stream.path else "nothing was kept"
        raise VideoError(f"{error}; {kept}; --skip-bad-videos leaves such videos out and lists them") from None
    left_out = {sample.entry_id for sample in skipped}
    entries = [entry for entry in dataset.entries if entry["id"] not in left_out]
    bins = getattr(model.position.text_codec, "bins", 100)
    results = score(entries, predictions, vocabulary_near(data_path(annotation_file)), bins=bins)
    if skipped:
        results["skipped_videos"] = {"count": len(skipped), "entries": [{"id": s.entry_id, "reason": s.reason} for s in skipped]}
    if out_dir is not None:
        ran_on = provenance(recipe, data_path(annotation_file), settings, started, time.time())
        write_results(results, predictions, entries, out_dir, provenance=ran_on)
    return results


def evaluate_benchmarks(model, out_dir: Path, benchmarks: dict[str, str] | None = None,
                        progress: bool = False) -> dict[str, dict[str, float]]:
    """Every benchmark (default: the recipe's data.eval): name -> flat metrics; files under out_dir/NAME/."""
    metrics = {}
    for name, annotation_file in (model.recipe.data.eval if benchmarks is None else benchmarks).items():
        results = evaluate(model, annotation_file, out_dir=Path(out_dir) / name, progress=progress)
        metrics[name] = flatten_metrics(results)
    return metrics
