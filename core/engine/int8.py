"""LLM.int8 workarounds, in one place: its memory follows the module, and it warns once.

WORKAROUND (bitsandbytes 0.50.2, upstream issues #1332 and #1793). Offloading moves a
module through a parent's ``.to()``, that is ``nn.Module._apply``, which keeps each
Parameter object and swaps its ``.data``. For ``Linear8bitLt`` that leaves two sets of
tensors behind on the old device:

- ``Int8Params.to`` sets ``CB`` / ``SCB`` only on the *new* Parameter it builds, which
  ``_apply`` throws away after copying its ``.data``: the kept Parameter's ``CB`` / ``SCB``
  (set at load, consumed by the first forward) still point at the old tensors;
- after the first forward the tensors in use are ``layer.state.CB`` / ``state.SCB``, which
  only ``Linear8bitLt.to`` moves, and only when called on the layer itself.

So an "offloaded" int8 transformer stays on the GPU (about 15.5 GB for FLUX.1-dev) and
each onload allocates a second copy. ``follow_moves`` gives each layer an ``_apply`` that
re-points those tensors at the moved weight: ``CB`` *is* the int8 weight (the same tensor
as ``weight.data``), and ``SCB`` (float32 row scales) moves to the weight's device with its
dtype kept. Remove this once bitsandbytes moves its state in ``_apply``. NF4 needs nothing:
``Params4bit`` keeps its ``quant_state`` on the Parameter and moves it in ``.to``.

bitsandbytes also logs "inputs will be cast from torch.bfloat16 to float16" on every int8
matmul (about 25,000 lines per FLUX.1-dev image); ``warn_once`` lets one through per process.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable

import bitsandbytes as bnb
import torch

# The logger bitsandbytes' MatMul8bitLt warns through, and the message's stable start.
_MATMUL_LOGGER = "bitsandbytes.autograd._functions"
_CAST_WARNING = "MatMul8bitLt: inputs will be cast"


def _apply_following_state(
    self: bnb.nn.Linear8bitLt, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
) -> bnb.nn.Linear8bitLt:
    torch.nn.Module._apply(self, fn, recurse)
    weight = self.weight
    device = weight.data.device

    def move_scales(scb: torch.Tensor) -> torch.Tensor:
        # The scales go wherever ``fn`` sends tensors, but stay float32 even when ``fn``
        # casts floating tensors (``module.to(torch.bfloat16)``).
        moved = fn(scb)
        return moved if moved.dtype == scb.dtype else scb.to(device)

    if self.state.CB is not None:
        self.state.CB = weight.data
    if self.state.SCB is not None:
        self.state.SCB = move_scales(self.state.SCB)
    if getattr(weight, "CB", None) is not None:
        weight.CB = weight.data
    if getattr(weight, "SCB", None) is not None:
        weight.SCB = move_scales(weight.SCB)
    return self


def follow_moves(module: torch.nn.Module) -> int:
    """Make every ``Linear8bitLt`` in ``module`` move its int8 state with its weight.

    Returns the number of layers changed. Only these instances are changed (their own
    ``_apply``), not the bitsandbytes class.
    """
    count = 0
    for layer in module.modules():
        if isinstance(layer, bnb.nn.Linear8bitLt):
            layer._apply = types.MethodType(_apply_following_state, layer)
            count += 1
    return count


def int8_tensors(layer: bnb.nn.Linear8bitLt) -> dict[str, torch.Tensor]:
    """The tensors an int8 layer holds besides its bias: weight, and state/param CB, SCB."""
    named = {
        "weight": layer.weight.data,
        "state.CB": layer.state.CB,
        "state.SCB": layer.state.SCB,
        "weight.CB": getattr(layer.weight, "CB", None),
        "weight.SCB": getattr(layer.weight, "SCB", None),
    }
    return {name: t for name, t in named.items() if t is not None}


def state_slots(layer: bnb.nn.Linear8bitLt) -> list[tuple[object, str]]:
    """Where an int8 layer holds its state besides its parameters, as (holder, attribute):
    ``state.CB``/``state.SCB`` and the weight's ``CB``/``SCB``, those set now. ``CB`` is the
    int8 weight itself; at its first forward the layer hands both from its weight to its
    state. Pinned offload (``core.engine.pinned``) re-points each of them on every move,
    so the state follows the weight there without ``follow_moves``."""
    holders = (
        (layer.state, "CB"),
        (layer.state, "SCB"),
        (layer.weight, "CB"),
        (layer.weight, "SCB"),
    )
    return [(h, a) for h, a in holders if isinstance(getattr(h, a, None), torch.Tensor)]


class _OnceFilter(logging.Filter):
    """Lets the first int8 cast warning through and drops the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_CAST_WARNING):
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def warn_once() -> None:
    """Install the one-line filter on bitsandbytes' matmul logger (idempotent)."""
    logger = logging.getLogger(_MATMUL_LOGGER)
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter())
