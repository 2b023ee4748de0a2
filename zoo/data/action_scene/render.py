"""Drawing the suite's videos with numpy: a scene's static background, an actor whose motion is the action.

A scene is recognisable from any single frame; the actor's look (colour, size) is drawn
from one distribution whatever the action, so the action shows only in how the actor
moves across frames. The actor is on screen during [start, end) of the video and its box
is recorded for every frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Color = tuple[int, int, int]


def jitter(rng: np.random.Generator, color: Color, amount: int = 18) -> np.ndarray:
    return np.clip(np.array(color) + rng.integers(-amount, amount + 1, size=3), 0, 255)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w]
    return ys / h, xs / w  # normalised row and column of every pixel


# --- backgrounds -----------------------------------------------------------------------


def snowy_mountain(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    sky = jitter(rng, (120, 170, 230))
    image[:] = sky * (0.8 + 0.2 * (1 - y))[..., None]
    peak = 0.35 + rng.uniform(-0.12, 0.12)
    top = 0.18 + rng.uniform(-0.05, 0.05)
    mountain = y > top + 1.4 * np.abs(x - peak)
    image[mountain] = jitter(rng, (235, 240, 248), 10)
    image[y > 0.72] = jitter(rng, (250, 250, 252), 5)
    return image


def boxing_ring(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    image[:] = jitter(rng, (30, 30, 40), 10)
    canvas = (y > 0.55) & (x > 0.06) & (x < 0.94)
    image[canvas] = jitter(rng, (40, 80, 170))
    for level in (0.3, 0.4, 0.5):
        rope = np.abs(y - (level + rng.uniform(-0.02, 0.02))) < 0.012
        image[rope & (x > 0.06) & (x < 0.94)] = jitter(rng, (200, 30, 40))
    for post in (0.06, 0.94):
        image[(np.abs(x - post) < 0.02) & (y > 0.25)] = jitter(rng, (220, 220, 220), 10)
    return image


def swimming_pool(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    water = jitter(rng, (40, 130, 200))
    image[:] = water * (0.9 + 0.1 * np.sin(2 * np.pi * (6 * x + 3 * y + rng.uniform())))[..., None]
    image[y < 0.08] = jitter(rng, (220, 220, 210), 10)
    for lane in np.linspace(0.25, 0.9, 4) + rng.uniform(-0.02, 0.02):
        dashed = (np.abs(y - lane) < 0.012) & (np.sin(2 * np.pi * 10 * x) > 0)
        image[dashed] = jitter(rng, (230, 60, 60), 10)
    return image


def basketball_court(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    wood = jitter(rng, (190, 130, 70))
    image[:] = wood * (0.92 + 0.08 * np.sin(2 * np.pi * 24 * x))[..., None]
    line = jitter(rng, (245, 245, 245), 5)
    center = (0.5 + rng.uniform(-0.05, 0.05), 0.55)
    ring = np.abs(np.hypot(x - center[0], (y - center[1]) * h / w) - 0.16) < 0.012
    image[ring] = line
    image[np.abs(x - center[0]) < 0.008] = line
    image[(y < 0.22) & (np.abs(x - center[0]) < 0.12)] = jitter(rng, (240, 240, 240), 5)  # backboard
    hoop = np.abs(np.hypot(x - center[0], (y - 0.24) * 3) - 0.05) < 0.012
    image[hoop] = jitter(rng, (240, 100, 20))
    return image


def soccer_field(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    light, dark = jitter(rng, (70, 160, 70)), jitter(rng, (50, 130, 50))
    stripes = (np.floor(x * 8 + rng.uniform()) % 2 == 0)
    image[:] = np.where(stripes[..., None], light, dark)
    line = jitter(rng, (240, 240, 240), 5)
    image[np.abs(x - 0.5) < 0.008] = line
    image[np.abs(np.hypot(x - 0.5, (y - 0.5) * h / w) - 0.18) < 0.01] = line
    return image


def beach(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    horizon = 0.3 + rng.uniform(-0.05, 0.05)
    shore = 0.55 + rng.uniform(-0.05, 0.05) + 0.03 * np.sin(2 * np.pi * (2 * x + rng.uniform()))
    image[:] = jitter(rng, (150, 200, 240))
    image[y > horizon] = jitter(rng, (30, 110, 170))
    image[y > shore] = jitter(rng, (230, 205, 140))
    return image


def library(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    image[:] = jitter(rng, (110, 70, 40), 10)
    shelf_rows = np.floor(y * 4)
    within = (y * 4) % 1
    spine = np.floor(x * (22 + rng.integers(-3, 4)) + shelf_rows * 0.37)
    palette = rng.integers(40, 220, size=(64, 3))
    colours = palette[(spine.astype(int) * 7 + shelf_rows.astype(int) * 13) % 64]
    books = (within > 0.12) & (within < 0.92)
    image[books] = colours[books]
    image[within <= 0.12] = jitter(rng, (80, 50, 25), 8)
    return image


def kitchen(rng, h, w):
    y, x = _grid(h, w)
    image = np.zeros((h, w, 3))
    tile = jitter(rng, (225, 225, 215), 8)
    grout = (np.abs((x * 10) % 1) < 0.08) | (np.abs((y * 10) % 1) < 0.08)
    image[:] = tile
    image[grout] = tile - 45
    image[y > 0.62] = jitter(rng, (70, 60, 55), 10)  # counter
    stove = (y > 0.64) & (y < 0.8) & (x > 0.55) & (x < 0.9)
    image[stove] = jitter(rng, (25, 25, 25), 5)
    for burner in (0.63, 0.81):
        image[np.abs(np.hypot(x - burner, (y - 0.72) * 2) - 0.05) < 0.012] = jitter(rng, (200, 40, 30))
    return image


BACKGROUNDS = {
    "snowy mountain": snowy_mountain, "boxing ring": boxing_ring, "swimming pool": swimming_pool,
    "basketball court": basketball_court, "soccer field": soccer_field, "beach": beach,
    "library": library, "kitchen": kitchen,
}


def background(scene: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    image = BACKGROUNDS[scene](rng, height, width)
    image = image + rng.normal(0, 4, size=image.shape)  # sensor noise: no two videos of a scene are alike
    return np.clip(image, 0, 255).astype(np.uint8)


# --- the actor and its motion -----------------------------------------------------------


@dataclass
class Actor:
    color: Color
    size: float  # body height as a fraction of the frame height
    phase: float
    amplitude: float
    origin: tuple[float, float]  # where its motion is anchored (normalised x, y)
    direction: int  # +1 or -1: which way it travels


def random_actor(rng: np.random.Generator) -> Actor:
    """The actor's look and the free parameters of its motion, independent of the action."""
    palette = [(230, 60, 60), (250, 200, 40), (240, 120, 200), (60, 220, 120), (255, 140, 0), (160, 90, 230)]
    return Actor(
        color=tuple(int(c) for c in jitter(rng, palette[rng.integers(len(palette))], 20)),
        # Large enough to cover a patch of a tiny 32 x 32 encoder input (8-pixel patches):
        # a smaller actor is invisible to the CPU-size models and only the scene is learnt.
        size=float(rng.uniform(0.36, 0.44)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        amplitude=float(rng.uniform(0.8, 1.2)),
        origin=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.45, 0.65))),
        direction=int(rng.choice([-1, 1])),
    )


def position(action: str, actor: Actor, u: float, seconds: float) -> tuple[float, float]:
    """Normalised centre (x, y) of the actor at progress u in [0, 1] of its time on screen."""
    a, p, d = actor.amplitude, actor.phase, actor.direction
    x0, y0 = actor.origin
    t = u * seconds  # seconds since it appeared
    if action == "skiing":  # a steady diagonal descent
        return 0.5 + d * (0.35 - 0.7 * u), 0.3 + 0.45 * u
    if action == "boxing":  # quick small jabs back and forth in place
        return x0 + 0.06 * a * math.sin(2 * math.pi * 3.0 * t + p), y0
    if action == "swimming":  # across the frame on a gentle wave
        return 0.5 + d * (0.35 - 0.7 * u), y0 + 0.06 * a * math.sin(2 * math.pi * 1.2 * t + p)
    if action == "dribbling":  # fast short bounces in place
        return x0, y0 - 0.08 * a * abs(math.sin(math.pi * 2.5 * t + p))
    if action == "running":  # fast straight line across the whole frame
        return 0.5 + d * (0.42 - 0.84 * u), y0
    if action == "jumping":  # slow high hops in place
        return x0, y0 + 0.05 - 0.25 * a * abs(math.sin(math.pi * 0.9 * t + p))
    if action == "walking":  # a short slow walk
        return x0 + d * 0.18 * (u - 0.5), y0
    if action == "cooking":  # small circles, stirring
        angle = 2 * math.pi * 1.5 * t + p
        return x0 + 0.05 * a * math.cos(angle), y0 + 0.05 * a * math.sin(angle)
    raise ValueError(f"no motion for action {action!r}")


def draw_actor(frame: np.ndarray, actor: Actor, center: tuple[float, float]) -> tuple[float, float, float, float]:
    """Paint a head and a body at ``center``; returns the normalised box (x1, y1, x2, y2)."""
    h, w = frame.shape[:2]
    body_h = actor.size
    body_w = body_h * 0.55 * h / w
    cx = min(max(center[0], body_w / 2 + 0.01), 1 - body_w / 2 - 0.01)
    cy = min(max(center[1], body_h / 2 + 0.01), 1 - body_h / 2 - 0.01)
    ys, xs = np.mgrid[0:h, 0:w]
    y, x = (ys + 0.5) / h, (xs + 0.5) / w
    head_r = body_h * 0.18
    head = ((x - cx) * w / h) ** 2 + (y - (cy - body_h / 2 + head_r)) ** 2 < head_r**2
    torso = (((x - cx) / (body_w / 2)) ** 2 + ((y - (cy + head_r * 0.9)) / (body_h / 2 - head_r * 0.9)) ** 2) < 1
    shape = head | torso
    frame[shape] = actor.color
    frame[head] = np.clip(np.array(actor.color) * 0.8 + 40, 0, 255)
    rows, cols = np.nonzero(shape)
    return (cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)


def render(scene: str, action: str | None, rng: np.random.Generator, frames: int, height: int, width: int,
           seconds: float, span: tuple[int, int] | None) -> tuple[np.ndarray, list]:
    """(T, H, W, 3) uint8 frames and the actor's box per frame (None where it is off screen)."""
    base = background(scene, rng, height, width)
    video = np.repeat(base[None], frames, axis=0)
    boxes: list = [None] * frames
    if action is None:
        # Scene-only: a slow camera drift, so the clip is still a video.
        drift = rng.uniform(-1.5, 1.5, size=2)
        for t in range(frames):
            shift = (int(round(drift[0] * t / frames)), int(round(drift[1] * t / frames)))
            video[t] = np.roll(base, shift, axis=(0, 1))
        return video, boxes
    actor = random_actor(rng)
    first, last = span
    on_screen = max(last - first, 1)
    for t in range(first, last):
        u = (t - first + 0.5) / on_screen
        boxes[t] = draw_actor(video[t], actor, position(action, actor, u, seconds * on_screen / frames))
    return video, boxes
