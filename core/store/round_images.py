"""Per-round image files that carry no history and no variant.

A round shows a generation's stored PNGs. Served as they are, they would give the answer
away through the web server: Gradio copies a served file into its cache folder once per
content and *touches the cached copy each time it hands it out again*
(``gradio.processing_utils.save_file_to_cache`` calls ``os.utime``), so BF16, shown in
every round, always had the freshest ``Last-Modified`` and ``ETag`` (Starlette derives
the ETag from mtime and size), and its URL was the same in every round. PNG sizes differ
by variant too.

What this module does instead, at the root of each channel:

* **Size.** Each image of a generation is served *padded* to one common length (the
  largest of the generation's PNGs plus ``MIN_PADDING``), with the very same pixels: empty
  deflate "stored" blocks (5 bytes each) go in front of the compressed data and the data is
  split over more IDAT chunks (12 bytes each). A PNG reader decodes the identical pixels;
  the file holds only IHDR, IDAT and IEND. So every slot of a round has one
  ``Content-Length``.
* **Timestamps.** The padded files get one fixed modification time, ``SERVED_MTIME``, for
  every image of every generation: ``Last-Modified`` and the ETag (mtime + size) are the
  same for every slot and every round.
* **History.** Each round gets its own folder with a random name, holding a hard link per
  slot, also randomly named: nothing in a URL repeats between rounds or follows a variant.
  The folder lives *inside Gradio's cache folder* (the caller passes it): Gradio serves a
  file already there as it is — no copy into a content-hash folder and no ``utime`` (see
  ``Block.move_resource_to_block_cache``) — so the fixed timestamp is what is sent.
  Hard links cost no disk; a copy is made only where links are impossible.

Round folders older than ``keep_seconds`` are removed as new rounds are made. The padded
files are derived data: removing them all is harmless (they are rebuilt on demand).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# 2000-01-01T00:00:00Z: the modification time of every served image.
SERVED_MTIME = 946_684_800
# An empty, non-final deflate stored block when the stream is byte-aligned: 3 header bits
# (BFINAL=0, BTYPE=00) padded to a byte, then LEN=0 and NLEN=0xFFFF.
EMPTY_STORED_BLOCK = b"\x00\x00\x00\xff\xff"
CHUNK_OVERHEAD = 12  # length, type and CRC of a PNG chunk
# Any padding of at least this many bytes is 5·k + 12·b with b in 0…4.
MIN_PADDING = 4 * CHUNK_OVERHEAD
PRUNE_EVERY_SECONDS = 60.0


class NotAPngError(ValueError):
    """The bytes are not a PNG this module can pad (signature or chunk layout)."""


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if data[:8] != PNG_SIGNATURE:
        raise NotAPngError("not a PNG signature")
    chunks, pos = [], 8
    while pos < len(data):
        if pos + 8 > len(data):
            raise NotAPngError("truncated chunk header")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += CHUNK_OVERHEAD + length
    if pos != len(data):
        raise NotAPngError("truncated chunk")
    return chunks


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def pad_png(data: bytes, size: int) -> bytes:
    """The PNG ``data`` re-chunked to exactly ``size`` bytes, decoding to the same pixels.

    ``size`` must equal ``len(data)`` or exceed it by at least ``MIN_PADDING`` bytes.
    Only the IHDR, IDAT and IEND chunks are kept (the project's PNGs have no others).
    """
    padding = size - len(data)
    if padding == 0:
        return data
    if padding < MIN_PADDING:
        raise ValueError(f"padding of {padding} bytes is under the minimum {MIN_PADDING}")
    chunks = _chunks(data)
    kinds = [kind for kind, _ in chunks]
    if set(kinds) != {b"IHDR", b"IDAT", b"IEND"} or kinds[0] != b"IHDR":
        raise NotAPngError(f"unexpected chunks {sorted(set(kinds))}")
    stream = b"".join(payload for kind, payload in chunks if kind == b"IDAT")
    idat_count = kinds.count(b"IDAT")
    extra_chunks = next(b for b in range(5) if (padding - CHUNK_OVERHEAD * b) % 5 == 0)
    blocks = (padding - CHUNK_OVERHEAD * extra_chunks) // 5
    # The zlib header (2 bytes) leaves the deflate stream byte-aligned: empty stored blocks
    # there change no output, so the Adler-32 at the end still holds.
    stream = stream[:2] + EMPTY_STORED_BLOCK * blocks + stream[2:]
    pieces = idat_count + extra_chunks
    step = -(-len(stream) // pieces)
    idats = [stream[i * step : (i + 1) * step] for i in range(pieces)]
    if not all(idats):
        raise NotAPngError("image data too short to split")
    header = _chunk(b"IHDR", chunks[0][1])
    out = PNG_SIGNATURE + header + b"".join(_chunk(b"IDAT", p) for p in idats)
    out += _chunk(b"IEND", b"")
    if len(out) != size:  # a bug here would be a side channel: fail loudly
        raise AssertionError(f"padded PNG has {len(out)} bytes, wanted {size}")
    return out


class RoundImages:
    """Makes the files a round serves, under ``serve_dir`` (inside the web server's cache).

    Thread-safe: every file is written under a temporary name and renamed into place.
    """

    def __init__(
        self,
        serve_dir: Path,
        keep_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.serve_dir = Path(serve_dir)
        self.keep_seconds = keep_seconds
        self.clock = clock
        self._padded_dir = self.serve_dir / "padded"
        self._rounds_dir = self.serve_dir / "rounds"
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    def serve(self, stored: Mapping[str, Path], shown: Sequence[str]) -> tuple[Path, ...]:
        """Paths of this round's files for the variants ``shown``, in that order.

        ``stored`` maps every variant of the generation to its stored PNG: all of them are
        padded to one length, so a duel's two images match a trio's three.
        """
        self._prune()
        sizes = {variant: path.stat().st_size for variant, path in stored.items()}
        size = max(sizes.values()) + MIN_PADDING
        round_dir = self._rounds_dir / secrets.token_hex(16)
        round_dir.mkdir(parents=True)
        served = []
        for variant in shown:
            source = self._padded(stored[variant], size)
            target = round_dir / f"{secrets.token_hex(16)}.png"
            try:
                os.link(source, target)
            except OSError:  # a file system without hard links: a copy, same mtime
                shutil.copy2(source, target)
            served.append(target)
        return tuple(served)

    def serve_pngs(self, pngs: Sequence[bytes]) -> tuple[Path, ...]:
        """Serve freshly made PNGs (e.g. the detail view's crops) the way ``serve`` serves
        a round: all padded to one length, one fixed mtime, random names in a fresh random
        folder. Paths come back in the order of ``pngs``; nothing is cached or reused."""
        self._prune()
        size = max(len(data) for data in pngs) + MIN_PADDING
        folder = self._rounds_dir / secrets.token_hex(16)
        folder.mkdir(parents=True)
        served = []
        for data in pngs:
            target = folder / f"{secrets.token_hex(16)}.png"
            self._write(target, pad_png(data, size))
            served.append(target)
        return tuple(served)

    def _write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically, with the served mtime."""
        fd, staging = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".png")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.utime(staging, (SERVED_MTIME, SERVED_MTIME))
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise

    def _padded(self, stored: Path, size: int) -> Path:
        """The padded copy of ``stored`` at ``size`` bytes, made once and then reused."""
        path = self._padded_dir / f"{stored.stem}-{size}.png"
        if path.exists():
            return path
        self._padded_dir.mkdir(parents=True, exist_ok=True)
        self._write(path, pad_png(stored.read_bytes(), size))
        return path

    def _prune(self) -> None:
        """Remove round folders older than ``keep_seconds`` (at most once a minute)."""
        now = self.clock()
        with self._prune_lock:
            if now < self._next_prune:
                return
            self._next_prune = now + PRUNE_EVERY_SECONDS
        if not self._rounds_dir.is_dir():
            return
        cutoff = now - self.keep_seconds
        for folder in self._rounds_dir.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                continue
