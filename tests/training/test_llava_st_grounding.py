"""The tiny LLaVA-ST learns temporal grounding: trained on the synthetic suite's short-span clips, it
answers held-out videos' "when is the person in the video?" with coordinate tokens whose spans beat
the best constant span by a wide margin (the LLaVA-ST issue's Done-when line).

What makes it learnable at CPU size is the batch: with 4 clips a step the gradient reaching a
random tower is too noisy and every configuration tried collapsed to one constant span (twelve of
them, up to 3000 steps); with 16 clips a step and no gradient clipping it is learnt (here: held-out
mIoU 77.9, R@0.5 95.2 against the best constant span's 38.4, after 1500 steps, about 3.5 minutes).
The onset is sudden and depends on the seed: with train.seed=1 the spans had only begun to vary
at step 1500 (mIoU 23.5) and reached 78.1 by step 3000. experiments/results/headline_tiny/README.md
has the measurements behind the batch size."""

from __future__ import annotations

import json

import pytest

from zoo.evaluation.metrics.grounding import temporal_iou
from zoo.data.action_scene import SuiteOptions, generate_suite
from zoo.evaluation.benchmark import evaluate
from zoo.config.recipe import load_recipe
from zoo.training.trainer import Trainer

pytestmark = pytest.mark.slow

STEPS = 1500


def best_constant_span_iou(spans: list[tuple[float, float]]) -> float:
    """The mean IoU of the single span that fits ``spans`` best, searched on a 1/32 grid: chosen on
    the evaluated clips themselves, so it is an upper bound for any constant prediction."""
    grid = [i / 32 for i in range(33)]
    return max(sum(temporal_iou((s, e), span) for span in spans) / len(spans)
               for s in grid for e in grid if e > s)


def test_tiny_llava_st_grounds_held_out_videos(tmp_path):
    suite = tmp_path / "suite"
    generate_suite(suite, seed=0, videos=1000, options=SuiteOptions(train_share=0.75, seconds=2.0,
                                                                    span_range=(0.2, 0.4), workers=2))
    held_out = [e for e in json.loads((suite / "test_grounding.json").read_text()) if e["task"] == "temporal_grounding"]
    (suite / "test_temporal.json").write_text(json.dumps(held_out))
    recipe = load_recipe("recipes/tiny/llava_st.yaml", [
        "train.stages=[]", f"data.train={suite}/train_grounding.json", "data.train_tasks=[temporal_grounding]",
        "data.eval={}", "data.synthetic=null", f"train.max_steps={STEPS}", "train.batch_size=16",
        "train.grad_clip=null", "train.progress_bar=false",
    ])
    trainer = Trainer(recipe, output_dir=tmp_path / "run", device="cpu")
    trainer.fit()
    results = evaluate(trainer.model.eval(), suite / "test_temporal.json", out_dir=tmp_path / "eval",
                       max_samples=len(held_out), max_new_tokens=24)["temporal_grounding"]
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert results["unparsed"] == 0 and all("<t" in p for p in predictions)  # coordinate tokens out, parsed back
    assert len(set(predictions)) >= 10  # a span per video, not one answer for all

    constant = 100 * best_constant_span_iou([tuple(e["target"]["span"]) for e in held_out])
    assert results["miou"] > constant + 20, (results["miou"], constant)
