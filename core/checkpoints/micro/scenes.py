"""Drawing the micro model's training pictures: deterministic scenes of flat shapes.

``sample_scene(rng)`` draws a scene description from a ``random.Random``; ``draw(scene,
rng)`` paints it with PIL at ``IMAGE_SIZE`` pixels (4x supersampled, so edges are
anti-aliased), with a few pixels of position and size jitter taken from ``rng``. Scenes
whose hash falls in the held-out tenth (``is_held_out``) are never used for training: the
evaluation asks for them.
"""

from __future__ import annotations

import hashlib
import math
import random

from PIL import Image, ImageDraw

from core.checkpoints.micro.vocabulary import (
    COLOURS,
    OPPOSITE_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    Shape,
)

IMAGE_SIZE = 128  # pixels, square
SUPERSAMPLE = 4
# Centre of each position, as a fraction of the image side (x, y).
CENTRES: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "middle": (0.5, 0.5),
}
# Radius of each size as a fraction of the image side.
RADII: dict[str, float] = {"small": 0.10, "large": 0.19}
JITTER = 3 / 128  # position jitter, fraction of the side, uniform in +-JITTER
SIZE_JITTER = 0.08  # relative radius jitter, uniform in +-SIZE_JITTER
TWO_SHAPE_SHARE = 0.4  # share of training scenes with two shapes
HELD_OUT_SHARE = 10  # one scene description in this many is held out


def is_held_out(scene: Scene) -> bool:
    """True for the tenth of scene descriptions kept out of training (a stable hash)."""
    digest = hashlib.sha256(scene.prompt().encode()).digest()
    return digest[0] % HELD_OUT_SHARE == 0


def _random_scene(rng: random.Random) -> Scene:
    colours = list(COLOURS)
    background = rng.choice(colours)
    others = [c for c in colours if c != background]
    if rng.random() < TWO_SHAPE_SHARE:
        first, second = rng.choice(OPPOSITE_PAIRS)
        c1, c2 = rng.sample(others, 2)
        shapes = (
            Shape(c1, rng.choice(SHAPES), first, rng.choice(SIZES)),
            Shape(c2, rng.choice(SHAPES), second, rng.choice(SIZES)),
        )
    else:
        shapes = (
            Shape(
                rng.choice(others),
                rng.choice(SHAPES),
                rng.choice(list(POSITIONS)),
                rng.choice(SIZES),
            ),
        )
    return Scene(background, shapes)


def sample_scene(rng: random.Random, *, held_out: bool = False) -> Scene:
    """A random scene from the training split (or, with ``held_out``, the held-out split)."""
    while True:
        scene = _random_scene(rng)
        if is_held_out(scene) == held_out:
            return scene


def sample_shape_scene(rng: random.Random, count: int, *, held_out: bool = False) -> Scene:
    """Like ``sample_scene`` but with exactly ``count`` (1 or 2) shapes."""
    while True:
        scene = sample_scene(rng, held_out=held_out)
        if len(scene.shapes) == count:
            return scene


def outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The polygon of ``shape`` centred at (cx, cy) with radius ``r`` (pixels); a circle is
    returned as its bounding box corners (top-left, bottom-right)."""
    if shape == "circle":
        return [(cx - r, cy - r), (cx + r, cy + r)]
    if shape == "square":
        h = r * 0.86
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = r * 1.2
        cy += R * 0.15
        return [
            (cx + R * math.cos(a), cy - R * math.sin(a))
            for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
        ]
    if shape == "star":
        R, inner = r * 1.2, r * 1.2 * 0.45
        points = []
        for k in range(10):
            a = math.pi / 2 + k * math.pi / 5
            rad = R if k % 2 == 0 else inner
            points.append((cx + rad * math.cos(a), cy - rad * math.sin(a)))
        return points
    raise ValueError(f"unknown shape {shape!r}")


def draw(scene: Scene, rng: random.Random | None = None, size: int = IMAGE_SIZE) -> Image.Image:
    """Paint ``scene`` as an RGB image of ``size`` x ``size`` pixels.

    Without ``rng`` every shape sits exactly at its nominal centre and radius.
    """
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    pen = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fx, fy = CENTRES[shape.position]
        r = RADII[shape.size]
        if rng is not None:
            fx += rng.uniform(-JITTER, JITTER)
            fy += rng.uniform(-JITTER, JITTER)
            r *= 1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
        points = outline(shape.shape, fx * big, fy * big, r * big)
        if shape.shape == "circle":
            pen.ellipse(points, fill=COLOURS[shape.colour])
        else:
            pen.polygon(points, fill=COLOURS[shape.colour])
    return image.resize((size, size), Image.Resampling.BOX)


def held_out_pairs(count: int, seed: int = 0) -> list[tuple[Scene, int]]:
    """``count`` (held-out scene, generation seed) pairs: the first half one-shape scenes,
    the rest two-shape scenes; a function of ``seed`` only."""
    rng = random.Random(f"evaluation:{seed}")
    ones = count - count // 2
    scenes = [sample_shape_scene(rng, 1, held_out=True) for _ in range(ones)]
    scenes += [sample_shape_scene(rng, 2, held_out=True) for _ in range(count // 2)]
    return [(scene, rng.randrange(2**32)) for scene in scenes]
