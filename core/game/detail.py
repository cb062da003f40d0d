"""The detail view: the same region of every image of a round, magnified side by side.

A player points at a spot in any image of a round; this module cuts the square region
around that spot out of *every* image of the round, at the same pixel coordinates, and
magnifies it with nearest-neighbour resampling (each source pixel becomes a block of
``factor × factor`` pixels, so nothing is smoothed away or invented). The crops are
made from the round's served files, in slot order, and know nothing of variants: they
carry exactly what the images already showed. Serving them without a side channel (one
size, one mtime, random names) is ``core.store.round_images.RoundImages.serve_pngs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.errors import InvalidSettingError
from core.store.images import clean_png

# The side of the region, as a fraction of the image's shorter side, and its bounds (px).
REGION_FRACTION = 4
REGION_MIN_PX = 16
REGION_MAX_PX = 128
# The magnified crop aims at about this many pixels a side, with a factor of 2 to 4.
TARGET_PX = 384
FACTOR_MIN = 2
FACTOR_MAX = 4


@dataclass(frozen=True)
class Region:
    """A square region of an image, in source pixels: left and top inclusive, ``side`` px
    wide and high, magnified ``factor`` times (a whole number) when shown."""

    left: int
    top: int
    side: int
    factor: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) as PIL's ``crop`` takes it (right/bottom exclusive)."""
        return (self.left, self.top, self.left + self.side, self.top + self.side)

    def describe(self) -> str:
        """A short caption: where the region is and how much it is magnified."""
        x, y = self.left + self.side // 2, self.top + self.side // 2
        return f"{self.side}×{self.side} px around ({x}, {y}), magnified {self.factor}×"


def region_at(size: tuple[int, int], point: Sequence[object]) -> Region:
    """The region centred on ``point`` (x, y in source pixels), kept inside the image.

    ``size`` is (width, height) in pixels. The side is a quarter of the shorter side,
    within 16…128 px; the factor brings the crop near 384 px, within 2…4. A point outside
    the image, or not two numbers, is an InvalidSettingError (nothing is cut).
    """
    width, height = size
    if (
        not isinstance(point, Sequence)
        or len(point) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
    ):
        raise InvalidSettingError("the detail view needs a point: two pixel coordinates x, y")
    x, y = (int(v) for v in point)  # type: ignore[call-overload]
    if not (0 <= x < width and 0 <= y < height):
        raise InvalidSettingError(f"the point ({x}, {y}) is outside the {width}×{height} image")
    side = max(REGION_MIN_PX, min(REGION_MAX_PX, min(width, height) // REGION_FRACTION))
    side = min(side, width, height)
    left = min(max(x - side // 2, 0), width - side)
    top = min(max(y - side // 2, 0), height - side)
    factor = max(FACTOR_MIN, min(FACTOR_MAX, TARGET_PX // side))
    return Region(left=left, top=top, side=side, factor=factor)


def magnified_crops(paths: Sequence[Path], point: Sequence[object]) -> tuple[Region, list[bytes]]:
    """The region at ``point`` cut from each image of ``paths`` (in that order) and
    magnified, as metadata-free PNG bytes; the images must all have one size."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise InvalidSettingError(f"the round's images differ in size: {sorted(sizes)}")
    region = region_at(images[0].size, point)
    side = region.side * region.factor
    crops = [
        clean_png(image.crop(region.box).resize((side, side), Image.Resampling.NEAREST))
        for image in images
    ]
    return region, crops
