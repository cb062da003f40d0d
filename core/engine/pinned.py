"""Offloaded weights in pinned host memory: allocated once, moved at the link's speed.

Model offload (accelerate's hooks) moves a module with ``module.to("cpu")`` and back with
``module.to(device)``. Through plain ``nn.Module._apply`` every move off allocates fresh
pageable host memory and copies into it (about 1.2 GB/s device → pageable host on an H200,
against 55 GB/s pinned), and every move on copies from pageable memory (6.8–8.2 GB/s).

``PinnedModules`` keeps one page-locked host copy of every tensor of some modules —
parameters, buffers and the quantization state (LLM.int8's ``CB``/``SCB`` wherever they
are held: ``core.engine.int8.state_slots``; NF4's quant state) — allocated once, packed
into ``ARENA_CHUNK_BYTES`` buffers (the pinned allocator rounds each allocation up to a
power of two; full chunks are powers of two already). Then:

- **moving on** copies each host tensor to the device with ``non_blocking=True`` on a side
  stream; the compute stream waits for that stream before it runs the module (the hook
  runs right before the module's forward, so the order allows no earlier start), and each
  device tensor is marked as used by the compute stream;
- **moving off** copies nothing and allocates nothing: weights do not change at inference,
  so every tensor is pointed back at its pinned host copy and the device copy is freed.

``install_move_hook`` routes a module's own ``.to(device)`` through its copies, so
accelerate's hooks, diffusers' ``pipe.to`` and ``ModelSet.prepare`` need no change; a
``.to`` that would cast (a dtype or memory format) is refused, as the copies are of the
loaded dtype. ``TimedModules`` is the pageable fallback (the plan falls back by name when
pinning does not fit the host budget): plain ``_apply``, timed the same way.

Every move is logged (bytes, seconds) so the benchmark can set each variant's move time
beside bytes ÷ the measured pinned copy rate.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from core.engine import backends

logger = logging.getLogger(__name__)

# Pinned host buffers are packed in chunks of this size (a power of two, so the pinned
# allocator's rounding costs nothing on a full chunk); a tensor above it gets its own.
ARENA_CHUNK_BYTES = 256 * 2**20
# Each tensor starts on this boundary (bytes) inside a chunk: every dtype's alignment.
ALIGN_BYTES = 512

Slot = backends.Slot


def allocate_pinned(nbytes: int) -> torch.Tensor:
    """One page-locked host buffer of ``nbytes`` bytes (uint8); needs CUDA."""
    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)


def _pow2(size: int) -> int:
    return 1 << max(0, size - 1).bit_length()


def _aligned(size: int) -> int:
    return -(-size // ALIGN_BYTES) * ALIGN_BYTES


def arena_layout(
    sizes: Sequence[int], chunk: int = ARENA_CHUNK_BYTES
) -> tuple[list[tuple[int, int]], list[int]]:
    """Where each tensor of ``sizes`` bytes lives: (buffer index, byte offset) per tensor,
    and each buffer's size in bytes. Tensors are packed in order; one that does not fit
    the rest of the current chunk opens the next; one larger than a chunk gets a buffer
    of its own size."""
    places: list[tuple[int, int]] = []
    buffers: list[int] = []
    current = None  # index of the chunk being filled
    for size in sizes:
        need = _aligned(size)
        if need > chunk:
            buffers.append(need)
            places.append((len(buffers) - 1, 0))
            continue
        if current is None or buffers[current] + need > chunk:
            buffers.append(0)
            current = len(buffers) - 1
        places.append((current, buffers[current]))
        buffers[current] += need
    return places, buffers


def pinned_bytes(sizes: Iterable[int], chunk: int = ARENA_CHUNK_BYTES) -> int:
    """Host bytes the pinned copies of tensors of ``sizes`` bytes take, the allocator's
    power-of-two rounding of each buffer included (what the plan counts)."""
    return sum(_pow2(b) for b in arena_layout(list(sizes), chunk)[1])


# --- Where a module's tensors are held ----------------------------------------------------


def state_slots(modules: Iterable[torch.nn.Module]) -> Iterator[Slot]:
    """Every place a tensor of these modules is held: each parameter's ``.data``, each
    buffer, and the backend's state (``core.engine.backends.state_slots``: LLM.int8's
    ``CB``/``SCB`` on the layer's state and on its weight, NF4's quant state). Read afresh
    on every move: LLM.int8 hands ``CB``/``SCB`` from its weight to its state at its first
    forward."""
    for module in modules:
        for layer in module.modules():
            for param in layer._parameters.values():
                if param is not None:
                    yield param, "data"
            for name, buffer in layer._buffers.items():
                if buffer is not None:
                    yield layer, name
            yield from backends.state_slots(layer)


def _key(tensor: torch.Tensor) -> tuple[object, ...]:
    """Tensors with the same key are the same tensor (views of one storage count apart)."""
    return (
        str(tensor.device),
        tensor.data_ptr(),
        tensor.dtype,
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )


def _tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


# --- The move log -------------------------------------------------------------------------


@dataclass
class MoveLog:
    """Bytes moved and seconds taken, per direction ("on", "off"), since the last ``take``.

    CUDA copies issued without blocking are timed with events on the copy stream and read
    at ``take`` (after a synchronize), so logging never stalls the pipeline.
    """

    _pending: list[tuple[str, int, object, object]] = field(default_factory=list)
    _done: list[tuple[str, int, float]] = field(default_factory=list)

    def add_seconds(self, direction: str, nbytes: int, seconds: float) -> None:
        self._done.append((direction, nbytes, seconds))

    def add_events(self, direction: str, nbytes: int, start: object, end: object) -> None:
        self._pending.append((direction, nbytes, start, end))

    def take(self) -> dict[str, dict[str, float]]:
        """{"on"/"off": {"bytes", "seconds", "moves"}} since the last take; then empties."""
        done = list(self._done)
        if self._pending:
            torch.cuda.synchronize()
            for direction, nbytes, start, end in self._pending:
                done.append((direction, nbytes, start.elapsed_time(end) / 1e3))  # type: ignore[attr-defined]
        self._pending.clear()
        self._done.clear()
        out: dict[str, dict[str, float]] = {}
        for direction, nbytes, seconds in done:
            entry = out.setdefault(direction, {"bytes": 0, "seconds": 0.0, "moves": 0})
            entry["bytes"] += nbytes
            entry["seconds"] += seconds
            entry["moves"] += 1
        return out


# --- Pinned copies ------------------------------------------------------------------------


class PinnedModules:
    """One pinned host copy of every tensor of ``modules``, and moves between it and a
    device. Built where the modules are (device or host); afterwards they are on the host,
    held by the pinned copies. ``allocate`` makes one pinned buffer of n bytes."""

    pinned = True

    def __init__(
        self,
        modules: Sequence[torch.nn.Module],
        *,
        allocate: Callable[[int], torch.Tensor] = allocate_pinned,
    ) -> None:
        self.modules = list(modules)
        self.log = MoveLog()
        sources: list[torch.Tensor] = []
        index: dict[tuple[object, ...], int] = {}
        for holder, attribute in state_slots(self.modules):
            tensor = getattr(holder, attribute)
            if _key(tensor) not in index:
                index[_key(tensor)] = len(sources)
                sources.append(tensor)
        sizes = [_tensor_nbytes(t) for t in sources]
        places, buffer_sizes = arena_layout(sizes)
        buffers = [allocate(size) for size in buffer_sizes]
        self._host: list[torch.Tensor] = []
        for tensor, size, (buffer, offset) in zip(sources, sizes, places, strict=True):
            view = buffers[buffer][offset : offset + size].view(tensor.dtype).view(tensor.shape)
            view.copy_(tensor)
            self._host.append(view)
        self.tensor_bytes = sum(sizes)
        self.buffer_bytes = sum(buffer_sizes)
        self.pinned_bytes = sum(_pow2(b) for b in buffer_sizes)
        self._current = index
        self._buffers = buffers
        self.device: torch.device | None = None  # None: on the pinned host copies
        self._repoint(self._host)

    def _repoint(self, tensors: list[torch.Tensor]) -> None:
        """Point every slot at ``tensors[i]``, i being the slot's current tensor's index."""
        updates = []
        for holder, attribute in state_slots(self.modules):
            key = _key(getattr(holder, attribute))
            if key not in self._current:
                raise RuntimeError(
                    f"{type(holder).__name__}.{attribute} holds a tensor the pinned copies "
                    "do not know (created after pinning): pinned modules must not be "
                    "changed, only moved"
                )
            updates.append((holder, attribute, self._current[key]))
        for holder, attribute, i in updates:
            setattr(holder, attribute, tensors[i])
        self._current = {_key(t): i for i, t in enumerate(tensors)}

    @property
    def on_host(self) -> bool:
        """True while every tensor is its pinned host copy."""
        return self.device is None

    def to_host(self) -> None:
        """Point every tensor back at its pinned copy: no copy, no host allocation."""
        if self.device is None:
            return
        started = time.perf_counter()
        self._repoint(self._host)
        self.device = None
        self.log.add_seconds("off", 0, time.perf_counter() - started)

    def to_device(self, device: torch.device) -> None:
        """Copy every pinned tensor to ``device`` (non-blocking, on a side stream on CUDA).
        A CPU ``device`` makes ordinary host copies: only the bookkeeping tests use it."""
        device = torch.device(device)
        if device == self.device:
            return
        self.to_host()
        if device.type == "cuda":
            copies = self._copy_on_side_stream(device)
        else:
            started = time.perf_counter()
            copies = [t.to(device, copy=True) for t in self._host]
            self.log.add_seconds("on", self.tensor_bytes, time.perf_counter() - started)
        self._repoint(copies)
        self.device = device

    def _copy_on_side_stream(self, device: torch.device) -> list[torch.Tensor]:
        compute = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(compute)  # what the compute stream queued before comes first
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(side):
            start.record(side)
            copies = [t.to(device, non_blocking=True) for t in self._host]
            end.record(side)
        compute.wait_stream(side)
        for copy in copies:
            copy.record_stream(compute)  # freed only after the compute stream used it
        self.log.add_events("on", self.tensor_bytes, start, end)
        return copies

    def move(self, module: torch.nn.Module, device: torch.device, apply: object) -> None:
        if device.type == "cpu":
            self.to_host()
        else:
            self.to_device(device)


class TimedModules:
    """The pageable fallback: moves go through plain ``nn.Module._apply`` (a pageable host
    copy made on every move off), timed with the device synchronized around them."""

    pinned = False

    def __init__(self, modules: Sequence[torch.nn.Module]) -> None:
        self.modules = list(modules)
        self.log = MoveLog()
        self.tensor_bytes = sum(
            _tensor_nbytes(getattr(h, a)) for h, a in _unique_slots(self.modules)
        )
        self.pinned_bytes = 0

    def move(
        self,
        module: torch.nn.Module,
        device: torch.device,
        apply: Callable[[], object],
    ) -> None:
        before = next((p.device for p in module.parameters()), device)
        if before == device:
            apply()
            return
        _synchronize(device, before)
        started = time.perf_counter()
        apply()
        _synchronize(device, before)
        direction = "off" if device.type == "cpu" else "on"
        self.log.add_seconds(direction, self.tensor_bytes, time.perf_counter() - started)


def _unique_slots(modules: Sequence[torch.nn.Module]) -> list[Slot]:
    seen: set[tuple[object, ...]] = set()
    out = []
    for holder, attribute in state_slots(modules):
        key = _key(getattr(holder, attribute))
        if key not in seen:
            seen.add(key)
            out.append((holder, attribute))
    return out


def _synchronize(*devices: torch.device) -> None:
    for device in devices:
        if device.type == "cuda":
            torch.cuda.synchronize(device)


# --- Routing a module's .to() through its copies ------------------------------------------


def move_target(fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.device | None:
    """The device a ``Module._apply`` function moves tensors to, or None when it does more
    than move (casts a dtype, changes a memory format)."""
    probes = (torch.empty(0, dtype=torch.bfloat16), torch.empty(0, 2, 2, 2, dtype=torch.int8))
    target = None
    for probe in probes:
        moved = fn(probe)
        if moved.dtype != probe.dtype or moved.stride() != probe.stride():
            return None
        target = moved.device
    return target


def install_move_hook(module: torch.nn.Module, mover: PinnedModules | TimedModules) -> None:
    """Route ``module.to(device)`` (and ``.cpu()``, ``.cuda()``) through ``mover``."""
    original = module._apply

    def _apply(
        self: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> torch.nn.Module:
        target = move_target(fn)
        if target is None:
            if mover.pinned:
                raise RuntimeError(
                    f"{type(self).__name__} is offloaded through pinned copies of its loaded "
                    "dtype: it can be moved, not cast"
                )
            return original(fn, recurse)
        mover.move(self, target, lambda: original(fn, recurse))
        return self

    module._apply = types.MethodType(_apply, module)  # type: ignore[method-assign]
