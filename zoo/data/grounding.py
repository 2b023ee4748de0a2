"""Grounding targets as text, and back: the one place data preparation and evaluation share.

All coordinates are normalised to [0, 1]: times as a fraction of the video's duration,
boxes as (x1, y1, x2, y2) fractions of width and height.

Two styles:
- ``decimal`` (any LLM): "from 0.20 to 0.70", "[0.10, 0.20, 0.50, 0.60]".
- ``coordinate_tokens`` (LLaVA-ST's LAPE): one token per value and axis, "<t20>", "<w10>",
  "<h20>", where k means k / (bins - 1). The LAPE component registers these tokens.

Parsing accepts either style and is forgiving of what a model writes around the numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Box = tuple[float, float, float, float]

_NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)"
_COORD_TOKEN = re.compile(r"<([thw])(\d+(?:\.\d+)?)>")


def clamp01(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


@dataclass(frozen=True)
class GroundingStyle:
    name: str = "decimal"  # or "coordinate_tokens"
    bins: int = 100  # coordinate tokens per axis

    def value(self, x: float, axis: str) -> str:
        """One coordinate; axis is "t" (time), "w" (x / width) or "h" (y / height)."""
        if self.name == "decimal":
            return f"{clamp01(x):.2f}"
        if self.name == "coordinate_tokens":
            # The exact bin position: LAPE blends the two neighbouring tokens (input) and gives a
            # two-hot target; a model's own output is a whole token such as <t20>.
            return f"<{axis}{clamp01(x) * (self.bins - 1):.2f}>"
        raise ValueError(f"unknown grounding style {self.name!r}; styles: decimal, coordinate_tokens")

    def span(self, start: float, end: float) -> str:
        return f"from {self.value(start, 't')} to {self.value(end, 't')}"

    def box(self, box: Box) -> str:
        x1, y1, x2, y2 = box
        if self.name == "decimal":
            return "[" + ", ".join(self.value(v, "w" if i % 2 == 0 else "h") for i, v in enumerate(box)) + "]"
        return "[" + "".join([self.value(x1, "w"), self.value(y1, "h"), self.value(x2, "w"), self.value(y2, "h")]) + "]"

    def tube(self, start: float, end: float, boxes: list[tuple[float, Box]]) -> str:
        """A time span followed by boxes at given times: "from S to E; at T [box]; at T [box]"."""
        parts = [self.span(start, end)] + [f"at {self.value(t, 't')} {self.box(b)}" for t, b in boxes]
        return "; ".join(parts)


DECIMAL = GroundingStyle("decimal")


def _values(text: str, bins: int = 100) -> list[tuple[str, float]]:
    """Every coordinate in ``text`` in order, as (axis or '', value in [0,1])."""
    found: list[tuple[int, str, float]] = []
    for match in _COORD_TOKEN.finditer(text):
        found.append((match.start(), match.group(1), float(match.group(2)) / (bins - 1)))
    stripped = _COORD_TOKEN.sub(lambda m: " " * len(m.group(0)), text)
    for match in re.finditer(_NUMBER, stripped):
        found.append((match.start(), "", float(match.group(0))))
    found.sort()
    return [(axis, value) for _, axis, value in found]


def parse_span(text: str, bins: int = 100, duration: float | None = None) -> tuple[float, float] | None:
    """The first two time values in ``text`` as a normalised (start, end), ordered; None if there are fewer.

    With ``duration``, values above 1 are read as seconds (Charades-STA style answers).
    """
    values = [v for axis, v in _values(text, bins) if axis in ("", "t")]
    if len(values) < 2:
        return None
    start, end = values[0], values[1]
    if duration and (start > 1 or end > 1):
        start, end = start / duration, end / duration
    start, end = clamp01(start), clamp01(end)
    return (min(start, end), max(start, end))


def parse_box(text: str, bins: int = 100) -> Box | None:
    """The first four coordinates inside the first [...] (or anywhere) as a normalised box; None if absent."""
    bracket = re.search(r"\[([^\]]*)\]", text)
    values = [v for _, v in _values(bracket.group(1) if bracket else text, bins)]
    if len(values) < 4:
        return None
    x1, y1, x2, y2 = (clamp01(v) for v in values[:4])
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_tube(text: str, bins: int = 100) -> tuple[tuple[float, float] | None, list[tuple[float, Box]]]:
    """(span, [(time, box), ...]) from text written by ``GroundingStyle.tube``."""
    pieces = text.split(";")
    span = parse_span(pieces[0], bins) if pieces else None
    boxes = []
    for piece in pieces[1:]:
        head, _, rest = piece.partition("[")
        times = [v for axis, v in _values(head, bins) if axis in ("", "t")]
        box = parse_box("[" + rest, bins) if rest else None
        if times and box is not None:
            boxes.append((clamp01(times[-1]), box))
    return span, boxes


GROUNDING_TASKS = ("temporal_grounding", "spatial_grounding", "spatiotemporal_grounding")


def grounding_answer(task: str, target: dict, style: GroundingStyle) -> str:
    """The reference answer of a grounding entry written in ``style`` (from its numeric target)."""
    if task == "temporal_grounding":
        return style.span(*target["span"])
    if task == "spatial_grounding":
        return style.box(tuple(target["box"]))
    if task == "spatiotemporal_grounding":
        return style.tube(*target["span"], [(t, tuple(box)) for t, box in target["boxes"]])
    raise ValueError(f"{task!r} is not a grounding task; grounding tasks: {', '.join(GROUNDING_TASKS)}")
