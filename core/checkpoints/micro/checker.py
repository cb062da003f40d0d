"""A deterministic judge of micro-model pictures: does an image show what its prompt says?

Pixels are matched to the nearest palette colour. The background is the commonest colour
of the border; a shape is the largest connected region that differs from it. Its colour is
the palette colour nearest the region's median, its position the nearest nominal centre to
its centroid, its size the nearer (in log area) of the two nominal areas of the prompted
shape, and its identity the nearest prototype in (extent, solidity) — two
``skimage.measure.regionprops`` properties that separate square (extent ~1), circle
(~0.79), triangle (~0.5, solid) and star (solidity ~0.6). Prototypes and areas are measured
on this module's own drawings, so the judge and the drawings cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image
from skimage.measure import label, regionprops

from core.checkpoints.micro.scenes import CENTRES, IMAGE_SIZE, RADII, draw
from core.checkpoints.micro.vocabulary import COLOURS, SHAPES, SIZES, Scene, Shape

PALETTE_NAMES = tuple(COLOURS)
PALETTE = np.array([COLOURS[n] for n in PALETTE_NAMES], dtype=np.float32)
FOREGROUND_DISTANCE = 80.0  # RGB distance from the background beyond which a pixel is shape
MIN_PIXELS = 12  # fewer foreground pixels than this: no shape found


@dataclass(frozen=True)
class ShapeReading:
    """What the judge sees of one shape (None where nothing was found)."""

    colour: str | None
    position: str | None
    size: str | None
    shape: str | None


def _nearest_colour(rgb: np.ndarray) -> str:
    return PALETTE_NAMES[int(np.argmin(((PALETTE - rgb) ** 2).sum(-1)))]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32)


def background(image: Image.Image) -> str:
    """The palette colour nearest the median of the image's 2-pixel border."""
    px = _pixels(image)
    border = np.concatenate([px[:2].reshape(-1, 3), px[-2:].reshape(-1, 3)])
    border = np.concatenate([border, px[:, :2].reshape(-1, 3), px[:, -2:].reshape(-1, 3)])
    return _nearest_colour(np.median(border, axis=0))


def _foreground(px: np.ndarray, background_name: str) -> np.ndarray:
    distance = np.sqrt(((px - np.array(COLOURS[background_name])) ** 2).sum(-1))
    return distance > FOREGROUND_DISTANCE


@cache
def _prototypes() -> dict[tuple[str, str], tuple[float, float, float]]:
    """(shape, size) -> (extent, solidity, area) measured on nominal drawings."""
    out = {}
    for shape in SHAPES:
        for size in SIZES:
            scene = Scene("black", (Shape("white", shape, "middle", size),))
            mask = _foreground(_pixels(draw(scene)), "black")
            region = max(regionprops(label(mask, connectivity=2)), key=lambda r: r.area)
            out[(shape, size)] = (float(region.extent), float(region.solidity), float(region.area))
    return out


def classify_shape(extent: float, solidity: float) -> str:
    """The shape whose prototype (mean over sizes) is nearest in (extent, solidity)."""
    protos = _prototypes()
    best, best_d = SHAPES[0], math.inf
    for shape in SHAPES:
        e = np.mean([protos[(shape, s)][0] for s in SIZES])
        so = np.mean([protos[(shape, s)][1] for s in SIZES])
        d = (extent - e) ** 2 + (solidity - so) ** 2
        if d < best_d:
            best, best_d = shape, d
    return best


def _read_region(px: np.ndarray, mask: np.ndarray, prompted_shape: str) -> ShapeReading:
    labels = label(mask, connectivity=2)
    regions = regionprops(labels)
    if not regions:
        return ShapeReading(None, None, None, None)
    region = max(regions, key=lambda r: r.area)
    if region.area < MIN_PIXELS:
        return ShapeReading(None, None, None, None)
    colour = _nearest_colour(np.median(px[labels == region.label], axis=0))
    cy, cx = region.centroid
    position = min(
        CENTRES,
        key=lambda p: (
            (CENTRES[p][0] * IMAGE_SIZE - cx) ** 2 + (CENTRES[p][1] * IMAGE_SIZE - cy) ** 2
        ),
    )
    protos = _prototypes()
    size = min(SIZES, key=lambda s: abs(math.log(region.area / protos[(prompted_shape, s)][2])))
    shape = classify_shape(float(region.extent), float(region.solidity))
    return ShapeReading(colour, position, size, shape)


def read_one(image: Image.Image, prompted_shape: str) -> tuple[str, ShapeReading]:
    """(background, the largest shape) of an image meant to show one shape."""
    bg = background(image)
    px = _pixels(image)
    return bg, _read_region(px, _foreground(px, bg), prompted_shape)


def read_at(image: Image.Image, bg: str, shape: Shape) -> ShapeReading:
    """The shape nearest ``shape``'s position: only pixels within 1.3 large radii of it."""
    px = _pixels(image)
    fx, fy = CENTRES[shape.position]
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    reach = RADII["large"] * IMAGE_SIZE * 1.3
    window = (xx - fx * IMAGE_SIZE) ** 2 + (yy - fy * IMAGE_SIZE) ** 2 <= reach**2
    return _read_region(px, _foreground(px, bg) & window, shape.shape)


@dataclass(frozen=True)
class Verdict:
    """How an image matches its scene. ``right`` is the headline: for one shape,
    background, colour, position and size all right; for two, the background right and
    each position holding its own colour (colour binding). ``seen_background`` and ``seen``
    (one reading per prompted shape, in the scene's order) are what the judge read; they
    take no part in ``==``."""

    right: bool
    background: bool
    colour: bool
    position: bool
    size: bool
    shape: bool
    # micro_quality counts the verdicts quantization changes: only the checks compare.
    seen_background: str = field(compare=False)
    seen: tuple[ShapeReading, ...] = field(compare=False)


def judge(image: Image.Image, scene: Scene) -> Verdict:
    """Judge ``image`` against ``scene`` (one or two shapes)."""
    if len(scene.shapes) == 1:
        target = scene.shapes[0]
        bg, seen = read_one(image, target.shape)
        checks = (
            bg == scene.background,
            seen.colour == target.colour,
            seen.position == target.position,
            seen.size == target.size,
            seen.shape == target.shape,
        )
        return Verdict(all(checks[:4]), *checks, bg, (seen,))
    bg = background(image)
    seen_all = tuple(read_at(image, bg, s) for s in scene.shapes)
    colours = all(r.colour == s.colour for r, s in zip(seen_all, scene.shapes, strict=True))
    sizes = all(r.size == s.size for r, s in zip(seen_all, scene.shapes, strict=True))
    shapes = all(r.shape == s.shape for r, s in zip(seen_all, scene.shapes, strict=True))
    found = all(r.colour is not None for r in seen_all)
    bg_ok = bg == scene.background
    return Verdict(bg_ok and colours, bg_ok, colours, found, sizes, shapes, bg, seen_all)


def binding_outcome(verdict: Verdict, scene: Scene) -> str:
    """How a two-shape image, judged as ``verdict`` against ``scene``, fares on colour
    binding: ``bound`` (each position its own colour), ``background`` (the background is
    wrong), ``swapped`` (each position the other shape's colour), ``one colour twice``
    (both positions one of the two colours), ``missing`` (no shape found at a position) or
    ``other`` (any other colour)."""
    if verdict.seen_background != scene.background:
        return "background"
    seen = [reading.colour for reading in verdict.seen]
    wanted = [s.colour for s in scene.shapes]
    if seen == wanted:
        return "bound"
    if None in seen:
        return "missing"
    if seen == wanted[::-1]:
        return "swapped"
    if seen[0] == seen[1] and seen[0] in wanted:
        return "one colour twice"
    return "other"
