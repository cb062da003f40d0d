"""The image files of generations: metadata-free PNGs with neutral names and one mtime.

A file's name is 32 random hex digits, its bytes are the pixels alone (no text chunk,
EXIF or ICC profile), and every file of one generation gets the same modification time,
so neither a name, a chunk nor a ``Last-Modified`` header tells which variant made it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.errors import StorageFullError


@dataclass(frozen=True)
class WrittenImage:
    """One PNG on disk: its file name (relative to the images folder) and SHA-256 (hex)."""

    name: str
    sha256: str


def clean_png(image: Image.Image) -> bytes:
    """PNG bytes of the pixels alone: no text chunks, EXIF, ICC or other metadata."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    pixels = Image.frombytes(image.mode, image.size, image.tobytes())
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue()


def neutral_name() -> str:
    """A fresh file name that says nothing: 32 random hex digits and ``.png``."""
    return f"{secrets.token_hex(16)}.png"


class ImageWriter:
    """Writes one generation's PNGs; ``discard()`` removes every file it wrote.

    Use as a context manager: on an exception inside the block, the files are removed.
    """

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = Path(images_dir)
        self.written: list[Path] = []

    def __enter__(self) -> ImageWriter:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.discard()

    def write(self, image: Image.Image) -> WrittenImage:
        """Write ``image`` as a clean PNG under a neutral name (never overwriting)."""
        data = clean_png(image)
        path = self.images_dir / neutral_name()
        try:
            with open(path, "xb") as f:
                self.written.append(path)
                f.write(data)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(
                    f"no space left for images in {self.images_dir}; nothing was stored"
                ) from e
            raise
        return WrittenImage(path.name, hashlib.sha256(data).hexdigest())

    def stamp(self, seconds: float) -> None:
        """Give every written file the same modification time (seconds since the epoch).

        A file server sends it as Last-Modified: the write order (BF16 first) must not show.
        """
        for path in self.written:
            os.utime(path, (seconds, seconds))

    def discard(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()
