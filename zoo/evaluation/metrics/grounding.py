"""Grounding metrics: temporal spans, boxes, and spatio-temporal tubes, as percentages (0-100).

Predictions are read with ``zoo.data.grounding`` (decimal or coordinate-token style); all
coordinates are normalised to [0, 1]. A prediction that is missing or cannot be parsed
scores IoU 0 and stays in the denominator (LLaVA-ST's REC script skips unparsed boxes,
which would reward a model for not answering).

IoU conventions
    Intervals and boxes: intersection / union. Disjoint or touching -> 0 (the shared
    boundary has no length). Two zero-length intervals (or zero-area boxes) have no union:
    identical ones score 1, different ones 0; a zero-length one against a proper one 0.

Thresholds ("R@m", "Acc@0.5")
    A sample counts at threshold m when IoU >= m (inclusive, as the Charades-STA protocol and
    LLaVA-ST's STVG and REC scripts do; its TVG script uses a strict >). A 1e-9 slack keeps
    IoUs that are m up to float rounding (0.3 - 0.1 = 0.19999999999999998) on the right side.

temporal_grounding (Charades-STA, LLaVA-ST Table 3)
    ``recall_0.3``, ``recall_0.5``, ``recall_0.7`` (R@1, IoU=m) and ``miou``.

spatial_grounding (REC-style, LLaVA-ST Table 4)
    ``acc_0.5`` and ``miou`` of the one box against the reference box.

spatiotemporal_grounding (STVG, LLaVA-ST Table 2)
    The paper names tIoU@0.5, m_tIoU, sIoU@0.5 and m_sIoU without defining them; these follow
    LLaVA-ST's released evaluation, with times matched by tolerance instead of frame number:

    * tIoU: temporal IoU of the predicted and reference spans.
    * sIoU: mean box IoU over the reference box times that the prediction also has a box for.
      A predicted box belongs to a reference time when it is the predicted box nearest in
      time and within ``time_tolerance`` (default half a coordinate-token step,
      0.5 / (bins - 1), which also separates two-decimal times); 0 when no time matches.
    * vIoU (VidSTG's vIoU; LLaVA-ST's "stIoU"): the same IoU sum divided by the number of
      times in the union of reference and predicted box times (reference times plus the
      predicted times that match none), so missing and extra boxes are penalised.
    * nearest sIoU: mean over *every* reference box time of the IoU with the predicted box
      nearest in time, however far (0 without predicted boxes); tolerant of a model whose
      box times drift from the reference's.

    Reported: ``tiou_m``, ``siou_m``, ``viou_m`` for m in 0.3, 0.5, 0.7, ``mean_tiou``,
    ``mean_siou``, ``mean_viou``, ``mean_nearest_siou``.
"""

from __future__ import annotations

from zoo.data.grounding import parse_box, parse_span, parse_tube

THRESHOLDS = (0.3, 0.5, 0.7)
_SLACK = 1e-9

Span = tuple[float, float]
Box = tuple[float, float, float, float]


def temporal_iou(predicted: Span | None, reference: Span) -> float:
    if predicted is None:
        return 0.0
    (s1, e1), (s2, e2) = predicted, reference
    intersection = max(0.0, min(e1, e2) - max(s1, s2))
    union = (e1 - s1) + (e2 - s2) - intersection
    if union <= 0:
        return 1.0 if abs(s1 - s2) <= _SLACK and abs(e1 - e2) <= _SLACK else 0.0
    return intersection / union


def box_area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(predicted: Box | None, reference: Box) -> float:
    if predicted is None:
        return 0.0
    width = min(predicted[2], reference[2]) - max(predicted[0], reference[0])
    height = min(predicted[3], reference[3]) - max(predicted[1], reference[1])
    intersection = max(0.0, width) * max(0.0, height)
    union = box_area(predicted) + box_area(reference) - intersection
    if union <= 0:
        return 1.0 if all(abs(a - b) <= _SLACK for a, b in zip(predicted, reference)) else 0.0
    return intersection / union


def reaches(iou: float, threshold: float) -> bool:
    return iou >= threshold - _SLACK


def recall(ious: list[float], prefix: str, thresholds=THRESHOLDS) -> dict[str, float]:
    """{"<prefix>_<m>": percentage of ``ious`` reaching m}."""
    return {f"{prefix}_{m}": 100.0 * sum(reaches(i, m) for i in ious) / len(ious) if ious else 0.0
            for m in thresholds}


def mean_percent(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def distinct_times(boxes: list[tuple[float, Box]]) -> list[tuple[float, Box]]:
    """The first box at each time: a repeated time is one timestamp, as in LLaVA-ST's per-frame dict."""
    kept: dict[float, Box] = {}
    for time, box in boxes:
        kept.setdefault(round(time, 9), box)
    return list(kept.items())


def tube_overlap(predicted_span: Span | None, predicted_boxes: list[tuple[float, Box]], reference_span: Span,
                 reference_boxes: list[tuple[float, Box]], time_tolerance: float) -> dict[str, float]:
    """tIoU, sIoU, vIoU and nearest sIoU (fractions) of one predicted tube; definitions in the module notes."""
    predicted = distinct_times(predicted_boxes)
    result = {"tiou": temporal_iou(predicted_span, reference_span), "siou": 0.0, "viou": 0.0, "nearest_siou": 0.0}
    if not predicted or not reference_boxes:
        return result
    matched: list[float] = []
    nearest: list[float] = []
    used: set[int] = set()
    for time, reference_box in reference_boxes:
        # min() keeps the first of equally near boxes: ties go to the earlier predicted time.
        index = min(range(len(predicted)), key=lambda i: abs(predicted[i][0] - time))
        iou = box_iou(predicted[index][1], reference_box)
        nearest.append(iou)
        if abs(predicted[index][0] - time) <= time_tolerance + _SLACK:
            matched.append(iou)
            used.add(index)
    union = len(reference_boxes) + len(predicted) - len(used)
    result["siou"] = sum(matched) / len(matched) if matched else 0.0
    result["viou"] = sum(matched) / union
    result["nearest_siou"] = sum(nearest) / len(nearest)
    return result


def score_temporal_grounding(entries: list[dict], predictions: dict[str, str | None],
                             bins: int = 100) -> tuple[dict, dict[str, dict]]:
    samples: dict[str, dict] = {}
    for entry in entries:
        text = predictions.get(entry["id"])
        duration = (entry.get("meta") or {}).get("duration")
        span = parse_span(text, bins, duration=duration) if text is not None else None
        samples[entry["id"]] = {"predicted": None if span is None else list(span),
                                "iou": temporal_iou(span, tuple(entry["target"]["span"])), "missing": text is None,
                                "unparsed": text is not None and span is None}
    return aggregate_temporal_grounding(entries, samples), samples


def aggregate_temporal_grounding(entries: list[dict], samples: dict[str, dict]) -> dict:
    chosen = [samples[entry["id"]] for entry in entries]
    ious = [s["iou"] for s in chosen]
    return {**recall(ious, "recall"), "miou": mean_percent(ious), **counts(chosen)}


def score_spatial_grounding(entries: list[dict], predictions: dict[str, str | None],
                            bins: int = 100) -> tuple[dict, dict[str, dict]]:
    samples: dict[str, dict] = {}
    for entry in entries:
        text = predictions.get(entry["id"])
        box = parse_box(text, bins) if text is not None else None
        samples[entry["id"]] = {"predicted": None if box is None else list(box),
                                "iou": box_iou(box, tuple(entry["target"]["box"])), "missing": text is None,
                                "unparsed": text is not None and box is None}
    return aggregate_spatial_grounding(entries, samples), samples


def aggregate_spatial_grounding(entries: list[dict], samples: dict[str, dict]) -> dict:
    chosen = [samples[entry["id"]] for entry in entries]
    ious = [s["iou"] for s in chosen]
    return {**recall(ious, "acc", (0.5,)), "miou": mean_percent(ious), **counts(chosen)}


def score_spatiotemporal_grounding(entries: list[dict], predictions: dict[str, str | None], bins: int = 100,
                                   time_tolerance: float | None = None) -> tuple[dict, dict[str, dict]]:
    tolerance = 0.5 / (bins - 1) if time_tolerance is None else time_tolerance
    samples: dict[str, dict] = {}
    for entry in entries:
        text = predictions.get(entry["id"])
        span, boxes = parse_tube(text, bins) if text is not None else (None, [])
        target = entry["target"]
        reference_boxes = [(float(t), tuple(box)) for t, box in target["boxes"]]
        overlap = tube_overlap(span, boxes, tuple(target["span"]), reference_boxes, tolerance)
        samples[entry["id"]] = {"predicted_span": None if span is None else list(span),
                                "predicted_boxes": len(boxes), **overlap, "missing": text is None,
                                "unparsed": text is not None and span is None and not boxes}
    return aggregate_spatiotemporal_grounding(entries, samples), samples


def aggregate_spatiotemporal_grounding(entries: list[dict], samples: dict[str, dict]) -> dict:
    chosen = [samples[entry["id"]] for entry in entries]
    metrics: dict = {}
    for name in ("tiou", "siou", "viou"):
        values = [s[name] for s in chosen]
        metrics.update(recall(values, name))
        metrics[f"mean_{name}"] = mean_percent(values)
    metrics["mean_nearest_siou"] = mean_percent([s["nearest_siou"] for s in chosen])
    metrics.update(counts(chosen))
    return metrics


def counts(samples: list[dict]) -> dict[str, int]:
    missing = sum(s["missing"] for s in samples)
    unparsed = sum(s["unparsed"] for s in samples)
    return {"count": len(samples), "missing": missing, "unparsed": unparsed}
