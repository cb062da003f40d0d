"""Honest timing and memory measurement: weights, one pipeline call, the process.

GPU: peak statistics are reset before the call and read after it, with the device
synchronized around the timer, and the bytes allocated just before the call are kept, so
the peak *above* them belongs to that call alone. CPU: torch tensors are invisible to
tracemalloc, so the process's peak resident set size is used (``VmHWM``), reset before the
call through ``/proc/self/clear_refs`` where Linux allows — a figure of the whole process.
Weights are counted tensor by tensor, bitsandbytes' quantization state included
(``get_memory_footprint`` leaves out NF4's absmax and LLM.int8's row scales).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from core.engine.backends import state_slots, stored_tensors

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


def _module_tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Every tensor a module holds: parameters, buffers and its backend's state (the
    quantization backends' registry says where: ``core.engine.backends.state_slots``)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        yield from stored_tensors(tensor)  # a torchao weight: its parts
    for layer in module.modules():
        for holder, attribute in state_slots(layer):
            yield getattr(holder, attribute)


def _same_device(tensor: torch.Tensor, device: torch.device) -> bool:
    if tensor.device.type != device.type:
        return False
    return device.index is None or tensor.device.index == device.index


def tensor_bytes(modules: Iterable[object], device: torch.device | None = None) -> int:
    """Bytes of every tensor the modules hold (non-modules are skipped), quantization state
    included, each storage counted once; only those on ``device`` when it is given."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for module in modules:
        if not isinstance(module, torch.nn.Module):
            continue
        for tensor in _module_tensors(module):
            if tensor.device.type == "meta":
                continue
            if device is not None and not _same_device(tensor, device):
                continue
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            if key in seen:
                continue
            seen.add(key)
            total += storage.nbytes()
    return total


def memory_now(device: torch.device) -> dict[str, int | None]:
    """Memory held right now: allocated / reserved bytes on CUDA, process RSS on the CPU."""
    synchronize(device)
    if device.type == "cuda":
        return {
            "allocated": int(torch.cuda.memory_allocated(device)),
            "reserved": int(torch.cuda.memory_reserved(device)),
            "rss": None,
        }
    return {"allocated": None, "reserved": None, "rss": rss_bytes()}


def fresh_peak(device: torch.device) -> dict[str, int | None]:
    """Release cached memory, reset the peak counters and return what is held now: the
    prologue of every measurement (a call, a load)."""
    release_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    return memory_now(device)


@dataclass
class Measurement:
    """Seconds of the measured block and its memory in bytes (None where not measured).

    ``allocated_before_bytes`` / ``reserved_before_bytes``: CUDA bytes allocated and
    reserved just before the block (cached blocks released first);
    ``peak_allocated_bytes`` / ``peak_reserved_bytes``: the device's peaks during it (all
    of the process's tensors); ``peak_rss_bytes``: the whole process's peak RSS (CPU).
    """

    seconds: float = 0.0
    allocated_before_bytes: int | None = None
    reserved_before_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None

    @property
    def activation_peak_bytes(self) -> int | None:
        """The peak above what was allocated just before the block (CUDA), or None."""
        if self.peak_allocated_bytes is None or self.allocated_before_bytes is None:
            return None
        return max(0, self.peak_allocated_bytes - self.allocated_before_bytes)

    @property
    def reserved_growth_bytes(self) -> int | None:
        """How far the reserved peak rose above what was reserved just before the block
        (CUDA): the call's activations as ``max_memory_reserved`` sees them, the caching
        allocator's blocks and fragmentation included. None off CUDA."""
        if self.peak_reserved_bytes is None or self.reserved_before_bytes is None:
            return None
        return max(0, self.peak_reserved_bytes - self.reserved_before_bytes)


@contextmanager
def measure(device: torch.device) -> Iterator[Measurement]:
    """Time the block and record its peak memory on ``device``; fills the yielded record."""
    result = Measurement()
    before = fresh_peak(device)
    result.allocated_before_bytes = before["allocated"]
    result.reserved_before_bytes = before["reserved"]
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
