"""Evaluating a model on a benchmark: generate an answer for every entry, score, write the results.

The benchmark is an annotation file in the STZoo schema; its entries' tasks decide the
metrics (zoo.evaluation.metrics.scoring). A synthetic suite's manifest.json beside the file provides the
vocabulary the open-ended judge needs. Frames are sampled as the recipe's ``eval.video``
says, else as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from zoo.evaluation.metrics.scoring import flatten_metrics, score, write_results
from zoo.data.dataset import SkippingCollate, build_dataset, data_path, instruction_pad_id
from tqdm.auto import tqdm


def vocabulary_near(annotation_file: Path) -> dict | None:
    manifest = Path(annotation_file).parent / "manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text()).get("vocabulary")
    return None


def generate_answers(model, annotation_file, max_samples: int | None = None, batch_size: int = 1,
                     max_new_tokens: int = 64, progress: bool = False) -> tuple[list[dict], dict[str, str | None]]:
    recipe = model.recipe
    video_spec = recipe.eval.video or recipe.data.video
    if video_spec.sampler == "fps":
        batch_size = 1  # frame counts differ from video to video
    dataset = build_dataset(recipe, model, annotation_file, for_generation=True, max_samples=max_samples,
                            video_spec=video_spec)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=recipe.data.num_workers,
                        collate_fn=SkippingCollate(model.pad_id, instruction_pad_id(model)))
    predictions: dict[str, str | None] = {}
    bar = None
    if progress:
        bar = tqdm(total=len(dataset), desc=f"eval {Path(annotation_file).name}", unit="sample")
    for batch in loader:
        if isinstance(batch, list):  # every video of this batch was unreadable (skip_bad_videos)
            continue
        generation = model.generate(batch.to(model.device), max_new_tokens=max_new_tokens)
        for info, text in zip(batch.info, generation.texts):
            predictions[info["id"]] = text
        if bar is not None:
            bar.update(batch.size + len(batch.skipped))
    if bar is not None:
        bar.close()
    return dataset.entries, predictions


@torch.no_grad()
def evaluate(model, annotation_file, out_dir: Path | None = None, max_samples: int | None = None,
             batch_size: int | None = None, max_new_tokens: int | None = None, progress: bool = False) -> dict:
    """Metrics for one benchmark; with ``out_dir``, results.json and predictions.jsonl are written there."""
    recipe = model.recipe
    entries, predictions = generate_answers(
        model, annotation_file, max_samples=max_samples or recipe.eval.max_samples,
        batch_size=batch_size or recipe.eval.batch_size, max_new_tokens=max_new_tokens or recipe.eval.max_new_tokens,
        progress=progress,
    )
    bins = getattr(model.position.text_codec, "bins", 100)
    results = score(entries, predictions, vocabulary_near(data_path(annotation_file)), bins=bins)
    if out_dir is not None:
        write_results(results, predictions, entries, out_dir)
    return results


def evaluate_benchmarks(model, out_dir: Path, benchmarks: dict[str, str] | None = None,
                        progress: bool = False) -> dict[str, dict[str, float]]:
    """Every benchmark (default: the recipe's data.eval): name -> flat metrics; files under out_dir/NAME/."""
    metrics = {}
    for name, annotation_file in (model.recipe.data.eval if benchmarks is None else benchmarks).items():
        results = evaluate(model, annotation_file, out_dir=Path(out_dir) / name, progress=progress)
        metrics[name] = flatten_metrics(results)
    return metrics
