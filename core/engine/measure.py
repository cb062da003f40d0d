"""Honest timing and peak-memory measurement of one pipeline call.

GPU: peak statistics are reset before the call and read after it, with the device
synchronized around the timer, so the figures belong to that call alone. CPU: torch
tensors are invisible to tracemalloc, so the process's peak resident set size is used
(``VmHWM``), reset before the call through ``/proc/self/clear_refs`` where Linux allows.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes, or None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size in bytes since the last reset, or None."""
    return _status_bytes("VmHWM")


def rss_bytes() -> int | None:
    """The process's current resident set size in bytes (``VmRSS``), or None."""
    return _status_bytes("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def release_memory(device: torch.device) -> None:
    """Collect garbage and return cached accelerator memory to the driver."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    """Seconds of the measured block and its peak memory in bytes (None where not measured)."""

    seconds: float = 0.0
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None


@contextmanager
def measure(device: torch.device) -> Iterator[Measurement]:
    """Time the block and record its peak memory on ``device``; fills the yielded record."""
    result = Measurement()
    release_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    synchronize(device)
    started = time.perf_counter()
    try:
        yield result
    finally:
        synchronize(device)
        result.seconds = time.perf_counter() - started
        if device.type == "cuda":
            result.peak_allocated_bytes = int(torch.cuda.max_memory_allocated(device))
            result.peak_reserved_bytes = int(torch.cuda.max_memory_reserved(device))
        else:
            result.peak_rss_bytes = peak_rss_bytes()
