"""core.store.round_images: padded PNGs keep their pixels, every image of a generation is
served at one size and one timestamp, and every round gets fresh names."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from core.store.round_images import (
    MIN_PADDING,
    SERVED_MTIME,
    NotAPngError,
    RoundImages,
    pad_png,
)
from tests.data_helpers import Clock


def png(seed: int, size: int = 32, noise: int = 255) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, noise + 1, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("extra", [0, *range(MIN_PADDING, MIN_PADDING + 12), 10_000])
def test_padding_keeps_the_pixels_and_hits_the_size_exactly(extra):
    data = png(1, size=300)  # several IDAT chunks
    padded = pad_png(data, len(data) + extra)
    assert len(padded) == len(data) + extra
    assert (pixels(padded) == pixels(data)).all()


def test_padding_refuses_what_it_cannot_do():
    data = png(1)
    with pytest.raises(ValueError, match="under the minimum"):
        pad_png(data, len(data) + MIN_PADDING - 1)
    with pytest.raises(NotAPngError):
        pad_png(b"GIF89a" + b"\0" * 100, 200)


@pytest.fixture
def stored(tmp_path):
    """Three stored PNGs of different sizes, as a generation's variants."""
    folder = tmp_path / "images"
    folder.mkdir()
    paths = {}
    for i, (variant, noise) in enumerate({"bf16": 255, "int8": 60, "nf4": 3}.items()):
        paths[variant] = folder / f"{i:032x}.png"
        paths[variant].write_bytes(png(i, noise=noise))
    assert len({p.stat().st_size for p in paths.values()}) == 3
    return paths


def test_a_rounds_files_differ_only_in_name_and_pixels(stored, tmp_path):
    images = RoundImages(tmp_path / "serve", keep_seconds=60)
    first = images.serve(stored, ("nf4", "bf16", "int8"))
    duel = images.serve(stored, ("bf16", "int8"))
    later = images.serve(stored, ("int8", "nf4", "bf16"))
    every = [*first, *duel, *later]
    assert len({p.name for p in every}) == len(every)  # fresh names every round
    assert len({p.parent for p in every}) == 3  # one folder per round
    # One size and one modification time for every image of the generation, every round:
    # Content-Length, Last-Modified and the ETag (mtime + size) cannot tell them apart.
    assert len({os.stat(p).st_size for p in every}) == 1
    assert {os.stat(p).st_mtime for p in every} == {SERVED_MTIME}
    for variant, path in zip(("nf4", "bf16", "int8"), first, strict=True):
        assert (pixels(path.read_bytes()) == pixels(stored[variant].read_bytes())).all()
    # Hard links to one padded copy per image: no disk per round.
    assert os.stat(first[1]).st_ino == os.stat(duel[0]).st_ino == os.stat(later[2]).st_ino


def test_old_round_folders_are_pruned(stored, tmp_path):
    clock = Clock(1_000_000.0)
    images = RoundImages(tmp_path / "serve", keep_seconds=3600, clock=clock)
    old = images.serve(stored, ("bf16", "int8"))
    os.utime(old[0].parent, (clock.now - 7200, clock.now - 7200))
    clock.now += 61  # pruning runs at most once a minute
    fresh = images.serve(stored, ("bf16", "int8"))
    assert not old[0].parent.exists()
    assert all(p.exists() for p in fresh)
    assert all(p.exists() for p in stored.values())


def test_fresh_pngs_are_served_like_a_round(tmp_path):
    """The detail view's crops: one length, one mtime, fresh random names, same pixels."""
    images = RoundImages(tmp_path / "serve", keep_seconds=60)
    crops = [png(i, noise=noise) for i, noise in enumerate((255, 60, 3))]
    first = images.serve_pngs(crops)
    again = images.serve_pngs(crops)
    assert len({os.stat(p).st_size for p in (*first, *again)}) == 1
    assert {os.stat(p).st_mtime for p in (*first, *again)} == {SERVED_MTIME}
    assert len({p.name for p in (*first, *again)}) == 6
    assert first[0].parent != again[0].parent
    for data, path in zip(crops, first, strict=True):
        assert (pixels(path.read_bytes()) == pixels(data)).all()
