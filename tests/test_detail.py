"""The detail view: the same region of every image of a round, magnified, pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidSettingError
from core.game.detail import magnified_crops, region_at


@pytest.mark.parametrize(
    ("size", "point", "box", "factor"),
    [
        ((128, 128), (64, 64), (48, 48, 80, 80), 4),  # a quarter of the side, 4×
        ((128, 128), (0, 127), (0, 96, 32, 128), 4),  # kept inside at a corner
        ((256, 256), (200, 10), (168, 0, 232, 64), 4),
        ((1024, 1024), (512, 512), (448, 448, 576, 576), 3),  # at most 128 px, 3×
        ((1024, 512), (1023, 511), (896, 384, 1024, 512), 3),
        ((40, 40), (5, 5), (0, 0, 16, 16), 4),  # at least 16 px
    ],
)
def test_the_region_is_centred_on_the_point_and_kept_inside(size, point, box, factor):
    region = region_at(size, point)
    assert region.box == box
    assert region.factor == factor


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ((128, 5), "outside the 128×128 image"),
        ((-1, 5), "outside"),
        ((1, 2, 3), "two pixel coordinates"),
        (("1", 2), "two pixel coordinates"),
        ((True, 2), "two pixel coordinates"),
        (None, "two pixel coordinates"),
    ],
)
def test_a_bad_point_is_refused(point, message):
    with pytest.raises(InvalidSettingError, match=message):
        region_at((128, 128), point)


def write_png(path, seed: int, size: tuple[int, int] = (128, 128)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def test_every_image_gives_the_same_region_magnified(tmp_path):
    sources = [write_png(tmp_path / f"{i}.png", i) for i in range(3)]
    region, crops = magnified_crops([tmp_path / f"{i}.png" for i in range(3)], (70, 20))
    left, top, right, bottom = region.box
    assert len(crops) == 3
    for source, data in zip(sources, crops, strict=True):
        with Image.open(io.BytesIO(data)) as crop:
            assert crop.size == (region.side * region.factor,) * 2
            assert not crop.info  # no text chunks or other metadata
            shown = np.asarray(crop.convert("RGB"))
        # Each source pixel is a factor × factor block: undo it and compare exactly.
        assert (shown[:: region.factor, :: region.factor] == source[top:bottom, left:right]).all()


def test_images_of_different_sizes_are_refused(tmp_path):
    write_png(tmp_path / "a.png", 0, (128, 128))
    write_png(tmp_path / "b.png", 1, (64, 64))
    with pytest.raises(InvalidSettingError, match="differ in size"):
        magnified_crops([tmp_path / "a.png", tmp_path / "b.png"], (10, 10))
