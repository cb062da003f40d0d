"""Placement: where each variant's modules live, planned before any weight is loaded.

Sizes come from the model's configuration alone: every component is built on the meta
device (no memory), and its ``nn.Linear`` layers are swapped for bitsandbytes layers by
the same library functions ``from_pretrained`` uses (diffusers' for the transformer,
transformers' for T5), so the layers a model keeps unquantized (T5's ``wo``) are counted
as the real loader keeps them. A plan says, per variant, the bytes it keeps on the device
and the bytes it needs in host RAM, so ``python -m core.engine --plan`` can answer "will
this run on my 24 GB card and 64 GB of RAM?" before a 30 GB download.

Placement on CUDA, per variant:
- ``resident``: every module on the GPU for the app's lifetime (fastest);
- ``model``: accelerate's model CPU offload: each module comes to the GPU when it runs
  (the largest one at a time); between runs it waits in one pinned host copy allocated
  once (``core.engine.pinned``: moved at the link's speed, nothing allocated on the way
  off). The plan counts those pinned bytes (packed in power-of-two chunks) and, when the
  host budget is short, falls back to pageable copies variant by variant, named in its
  notes;
- ``group``: an unquantized transformer and T5 stream block by block (diffusers group
  offloading). Under ``auto`` with a budget, as many transformer blocks as fit stay on the
  device while the variant runs (pinned copies, brought on once per call) and only the rest
  stream at every step: the plan gives the split. With ``use_stream=True`` diffusers pins a
  host copy of every streamed tensor, and the pinned allocator rounds each one up to a
  power of two (about 1.5x the weights); ``low_cpu_mem_usage=True`` pins on the fly
  instead (slower, no lasting pinned copy). Group offloading moves each parameter's
  ``.data`` only, not bitsandbytes' quantization state, so a quantized variant is never
  planned ``group``.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from core.config import GIB, MIB, PER_VARIANT_COMPONENTS, VARIANTS, byte_unit
from core.engine.backends import BF16_BYTES, REFERENCE, Backend, backend, quantized_backends
from core.engine.pinned import ARENA_CHUNK_BYTES
from core.errors import InvalidSettingError, ModelUnavailableError, PlacementError
from core.settings import check_offload

# Room left for activations, as a share of the bf16 transformer: FLUX.1-dev at 1024x1024
# peaks about 5 GB above its weights (seed measurements), 0.25 x 23.8 GB.
ACTIVATION_HEADROOM = 0.25
MIN_HEADROOM_BYTES = 512 * MIB
# Host RAM kept free for the Python process, the app and the page cache.
HOST_RESERVE_BYTES = 4 * GIB
MODEL_COMPONENTS = ("transformer", "text_encoder_2", "text_encoder", "vae")
SHARED_MODEL_COMPONENTS = ("text_encoder", "vae")


# --- Sizes, counted on the meta device ----------------------------------------------------


@dataclass(frozen=True)
class ComponentSizes:
    """One component's bytes as each quantization stores it (bf16 for what is kept).

    ``largest_block_bytes``: the largest block group offload streams plus what never
    streams (embeddings, norms), in bf16; ``streaming_bytes`` adds the next block, which
    CUDA streams prefetch while one runs. ``pinned_bytes``: host bytes group offload pins
    with ``use_stream=True`` (each tensor rounded up to a power of two). ``blocks``: each
    block group offload can stream, by name ("transformer_blocks.3"), as (bf16 bytes,
    pinned bytes), in the order they run.
    """

    name: str
    parameters: int
    bytes: Mapping[str, int]
    quantized_linear_layers: int
    kept_linear_layers: int
    largest_block_bytes: int
    pinned_bytes: int
    blocks: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def streaming_bytes(self) -> int:
        largest = max((size for size, _ in self.blocks.values()), default=0)
        return self.largest_block_bytes + largest

    def ratio(self, quantization: str) -> float:
        """Bytes of ``quantization`` relative to bf16 (1.0 for "none")."""
        return self.bytes[quantization] / self.bytes[REFERENCE]


@dataclass(frozen=True)
class ModelSizes:
    """Sizes of a pipeline's model components (tokenizers and scheduler weigh nothing)."""

    components: Mapping[str, ComponentSizes]

    def own_bytes(self, quantization: str) -> int:
        return sum(self.components[n].bytes[quantization] for n in PER_VARIANT_COMPONENTS)

    def shared_bytes(self) -> int:
        return sum(self.components[n].bytes[REFERENCE] for n in SHARED_MODEL_COMPONENTS)


def _pow2(size: int) -> int:
    return 1 << max(0, size - 1).bit_length()


def _tensor_bytes(module: torch.nn.Module) -> list[int]:
    """bf16 bytes of every floating tensor (other dtypes at their size), each counted once."""
    seen: set[int] = set()
    sizes = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        size = BF16_BYTES if tensor.is_floating_point() else tensor.element_size()
        sizes.append(tensor.numel() * size)
    return sizes


def _quantized_bytes(module: torch.nn.Module, quantized: Backend) -> tuple[int, int, int]:
    """(bytes, quantized Linear layers, kept Linear layers) of a module after ``quantized``
    replaced its layers; its layers at their storage, everything else bf16."""
    total = sum(_tensor_bytes(module))
    count = kept = 0
    for layer in module.modules():
        delta = quantized.storage_delta(layer)
        if delta is not None:
            total += delta
            count += 1
        elif type(layer) is torch.nn.Linear:
            kept += 1
    return total, count, kept


def _blocks(module: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """{block name: (bf16 bytes, pinned bytes)} of the blocks group offload streams."""
    owner = module.encoder if hasattr(module, "encoder") else module
    return {
        f"{name}.{index}": (sum(sizes), sum(_pow2(s) for s in sizes))
        for name, child in owner.named_children()
        if isinstance(child, torch.nn.ModuleList)
        for index, block in enumerate(child)
        for sizes in [_tensor_bytes(block)]
    }


def _largest_block_bytes(module: torch.nn.Module) -> int:
    blocks = [b for b, _ in _blocks(module).values()]
    return sum(_tensor_bytes(module)) - sum(blocks) + max(blocks, default=0)


def arena_bytes(nbytes: int, chunk: int = ARENA_CHUNK_BYTES) -> int:
    """Pinned host bytes of one module's copy of ``nbytes`` (``core.engine.pinned``): full
    chunks, and the last one rounded up to a power of two as the pinned allocator does.
    An estimate: the gap a chunk leaves when the next tensor does not fit is not counted
    (at most one tensor per 256 MiB chunk)."""
    full, rest = divmod(nbytes, chunk)
    return full * chunk + (_pow2(rest) if rest else 0)


def component_sizes(name: str, build: Callable[[], torch.nn.Module]) -> ComponentSizes:
    """Sizes of one component; ``build`` makes it (it is called under the meta device)."""
    with torch.device("meta"):
        module = build()
    sizes = _tensor_bytes(module)
    by_quantization = {REFERENCE: sum(sizes)}
    quantized_layers = kept_layers = 0
    if name in PER_VARIANT_COMPONENTS:
        for index, quantized in enumerate(quantized_backends()):
            with torch.device("meta"):
                copy = build()
            quantized.quantize_on_meta(name, copy)
            by_quantization[quantized.name], count, kept = _quantized_bytes(copy, quantized)
            if index == 0:  # the Linear counts reported are the first backend's (LLM.int8)
                quantized_layers, kept_layers = count, kept
    else:
        by_quantization |= {b.name: sum(sizes) for b in quantized_backends()}
    return ComponentSizes(
        name=name,
        parameters=sum(p.numel() for p in module.parameters()),
        bytes=by_quantization,
        quantized_linear_layers=quantized_layers,
        kept_linear_layers=kept_layers,
        largest_block_bytes=_largest_block_bytes(module),
        pinned_bytes=sum(_pow2(s) for s in sizes),
        blocks=_blocks(module) if name in PER_VARIANT_COMPONENTS else {},
    )


def _builders_from_configs(configs: Mapping[str, Any]) -> dict[str, Callable[[], torch.nn.Module]]:
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    def from_config(cls: Any, config: Any) -> Callable[[], torch.nn.Module]:
        if isinstance(config, Mapping):
            return lambda: cls.from_config(dict(config))
        return lambda: cls(config)

    classes = {
        "transformer": FluxTransformer2DModel,
        "text_encoder_2": T5EncoderModel,
        "text_encoder": CLIPTextModel,
        "vae": AutoencoderKL,
    }
    return {name: from_config(classes[name], configs[name]) for name in MODEL_COMPONENTS}


def folder_configs(folder: Path) -> dict[str, Any]:
    """Each model component's configuration from a pipeline folder (config.json files only)."""
    from transformers import CLIPTextConfig, T5Config

    configs: dict[str, Any] = {}
    for name in MODEL_COMPONENTS:
        path = folder / name / "config.json"
        if not path.is_file():
            raise ModelUnavailableError(f"{path} is missing: {folder} is not a FLUX pipeline")
        if name == "text_encoder":
            configs[name] = CLIPTextConfig.from_pretrained(folder / name)
        elif name == "text_encoder_2":
            configs[name] = T5Config.from_pretrained(folder / name)
        else:
            configs[name] = {
                k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")
            }
    return configs


def model_sizes(configs: Mapping[str, Any]) -> ModelSizes:
    """Sizes of every model component of a pipeline with these configurations."""
    builders = _builders_from_configs(configs)
    return ModelSizes({name: component_sizes(name, builders[name]) for name in MODEL_COMPONENTS})


# --- Budgets -------------------------------------------------------------------------------


def host_available_bytes() -> int | None:
    """Host RAM available to this process (``MemAvailable`` of /proc/meminfo), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gpu_budget_bytes(device: torch.device, max_gpu_memory_gb: float | None) -> int | None:
    """Free accelerator memory usable by this process, honouring ``--max-gpu-memory``.

    The cap is enforced for the whole process with ``set_per_process_memory_fraction``, so
    an over-budget allocation fails as it would on a smaller GPU.
    """
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    if max_gpu_memory_gb is None:
        return int(free)
    cap = int(max_gpu_memory_gb * 1e9)
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    return min(int(free), cap)


# --- The plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantPlan:
    """One variant's placement and its estimated bytes.

    ``device_bytes``: the most of its own weights on the device at once (resident: all of
    them; model offload: its largest module; group offload: two blocks, one running and
    one prefetched, what never streams and the blocks kept on the device while it runs).
    ``host_bytes``: host RAM its weights hold (offloaded copies, pinned or not).
    ``pinned``: its model-offload copies (or its resident blocks' copies) are pinned;
    False where the plan fell back to pageable memory. ``resident_blocks``: the transformer
    blocks kept on the device while it runs (group offload); ``streamed_bytes``: the
    transformer's bytes streamed at every step.
    """

    mode: str
    device_bytes: int
    host_bytes: int
    low_cpu_mem_usage: bool = False
    pinned: bool = False
    resident_blocks: tuple[str, ...] = ()
    resident_block_bytes: int = 0
    streamed_bytes: int = 0


@dataclass(frozen=True)
class PlacementPlan:
    """Where each variant runs and why; bytes are estimates made before loading.

    ``estimated_bytes``: device bytes of the weights at the worst moment (shared modules +
    resident variants + the largest offloaded variant's device share); ``host_bytes``: host
    RAM the offloaded weights hold, all variants together; ``shared_pinned``: the shared
    modules' model-offload copies are pinned; ``pinned_bytes``: the part of ``host_bytes``
    in pinned memory; ``notes``: the fallbacks, by name; ``residency``: when not every
    variant fits (``auto`` under a budget), which stay resident, which are offloaded and
    why, one line each.
    """

    device: str
    variants: Mapping[str, VariantPlan]
    shared_bytes: int
    estimated_bytes: int
    host_bytes: int
    budget_bytes: int | None
    host_budget_bytes: int | None
    headroom_bytes: int
    reason: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    shared_pinned: bool = False
    pinned_bytes: int = 0
    residency: tuple[str, ...] = ()

    @property
    def resident(self) -> tuple[str, ...]:
        """The variants whose modules stay on the device for the app's lifetime."""
        return tuple(n for n, v in self.variants.items() if v.mode == "resident")

    @property
    def offloaded(self) -> tuple[str, ...]:
        """The variants brought onto the device only while they run (model or group)."""
        return tuple(n for n, v in self.variants.items() if v.mode in ("model", "group"))

    @property
    def per_variant(self) -> dict[str, str]:
        return {name: v.mode for name, v in self.variants.items()}

    def summary(self) -> str:
        """ "bf16: group, int8: model, ..." """
        return ", ".join(f"{name}: {v.mode}" for name, v in self.variants.items())


def _resident_blocks(transformer: ComponentSizes, room: int | None) -> tuple[tuple[str, ...], int]:
    """The transformer blocks that fit in ``room`` bytes, largest first: (names in running
    order, their bytes). None or no room: none."""
    if room is None or room <= 0:
        return (), 0
    chosen, used = set(), 0
    for name, (size, _) in sorted(transformer.blocks.items(), key=lambda kv: -kv[1][0]):
        if used + size <= room:
            chosen.add(name)
            used += size
    return tuple(n for n in transformer.blocks if n in chosen), used


def _variant_plan(
    sizes: ModelSizes,
    quantization: str,
    mode: str,
    low_cpu: bool,
    pinned: bool,
    block_room: int | None,
) -> tuple[VariantPlan, int]:
    """The variant's plan and the pinned host bytes it holds."""
    own = [sizes.components[n] for n in PER_VARIANT_COMPONENTS]
    total = sum(c.bytes[quantization] for c in own)
    if mode in ("resident", "cpu"):
        resident = mode == "resident"
        return VariantPlan(mode, total if resident else 0, 0 if resident else total), 0
    if mode == "model":
        host = sum(arena_bytes(c.bytes[quantization]) if pinned else c.bytes[quantization]
                   for c in own)  # fmt: skip
        largest = max(c.bytes[quantization] for c in own)
        return VariantPlan(mode, largest, host, pinned=pinned), host if pinned else 0
    transformer = sizes.components["transformer"]
    names, kept = _resident_blocks(transformer, block_room)
    stream_host = sum(c.bytes[REFERENCE] if low_cpu else c.pinned_bytes for c in own)
    kept_pinned = sum(transformer.blocks[n][1] for n in names)
    stream_host -= sum(transformer.blocks[n][0] for n in names) if low_cpu else kept_pinned
    kept_host = arena_bytes(kept) if pinned else kept
    block_total = sum(b for b, _ in transformer.blocks.values())
    plan = VariantPlan(
        mode,
        max(c.streaming_bytes for c in own) + kept,
        stream_host + kept_host,
        low_cpu,
        pinned=pinned,
        resident_blocks=names,
        resident_block_bytes=kept,
        streamed_bytes=block_total - kept,
    )
    return plan, (0 if low_cpu else stream_host) + (kept_host if pinned else 0)


def _assemble(
    sizes: ModelSizes,
    modes: Mapping[str, str],
    low_cpu: bool,
    device: str,
    budget: int | None,
    host_budget: int | None,
    headroom: int,
    reason: str,
    pageable: frozenset[str] = frozenset(),
    partial: bool = False,
) -> PlacementPlan:
    """The plan of ``modes``. ``pageable``: names (variants, or "shared") whose offload
    copies fall back to pageable memory; ``partial``: keep group-offloaded transformer
    blocks on the device while their variant runs, as many as the budget leaves room for."""
    shared = sizes.shared_bytes()
    resident = sum(
        sizes.own_bytes(VARIANTS[n].quantization) for n, m in modes.items() if m == "resident"
    )
    block_room = None
    if partial and budget is not None:
        streaming = max(sizes.components[n].streaming_bytes for n in PER_VARIANT_COMPONENTS)
        block_room = budget - headroom - shared - resident - streaming
    planned = {
        name: _variant_plan(
            sizes, VARIANTS[name].quantization, mode, low_cpu, name not in pageable, block_room
        )
        for name, mode in modes.items()
    }
    variants = {name: plan for name, (plan, _) in planned.items()}
    pinned = sum(p for _, p in planned.values())
    offloaded = max((v.device_bytes for v in variants.values() if v.mode != "resident"), default=0)
    host = sum(v.host_bytes for v in variants.values())
    shared_pinned = False
    if device == "cpu":
        host += shared
    elif any(v.mode == "model" for v in variants.values()):
        # Model offload parks the shared modules on the host between calls.
        shared_pinned = "shared" not in pageable
        if shared_pinned:
            shared_host = sum(
                arena_bytes(sizes.components[n].bytes[REFERENCE]) for n in SHARED_MODEL_COMPONENTS
            )
            host += shared_host
            pinned += shared_host
        else:
            host += shared
    return PlacementPlan(
        device=device,
        variants=variants,
        shared_bytes=shared,
        estimated_bytes=0 if device == "cpu" else shared + resident + offloaded,
        host_bytes=host,
        budget_bytes=budget,
        host_budget_bytes=host_budget,
        headroom_bytes=headroom,
        reason=reason,
        shared_pinned=shared_pinned,
        pinned_bytes=pinned,
    )


def _offload_modes(
    sizes: ModelSizes, variants: tuple[str, ...], room: int
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Placement of ``variants`` when they do not all fit in ``room`` bytes (the budget less
    the shared modules and the activations' headroom), and why, one line each.

    A variant whose largest module alone does not fit streams by group offload if its
    backend allows (an unquantized transformer): the room left keeps as many of its blocks
    on the device as fit, so no other variant stays resident (a streamed block costs its
    bytes at every step, an offloaded variant once per generation). Otherwise the most
    bytes that fit stay resident: of every subset of the variants, the one with the most
    bytes (the fewest moved per generation; ties: more variants, then the order named)
    that leaves room for the largest module of an offloaded variant, which model offload
    brings on while that variant runs. The rest are model-offloaded.
    """
    own = {n: sizes.own_bytes(VARIANTS[n].quantization) for n in variants}
    largest = {
        n: max(sizes.components[c].bytes[VARIANTS[n].quantization] for c in PER_VARIANT_COMPONENTS)
        for n in variants
    }
    offload = "offloaded (model offload, each brought onto the device while it runs)"
    streams = [
        n for n in variants if largest[n] > room and backend(VARIANTS[n].quantization).group_offload
    ]
    if streams:
        others = [n for n in variants if n not in streams]
        why = (
            f"resident: none: the largest module of {', '.join(streams)} "
            f"({max(largest[n] for n in streams) / GIB:.2f} GiB) does not fit in the "
            f"{room / GIB:.2f} GiB left after the shared modules and the activations; it "
            "streams block by block, keeping on the device as many blocks as fit",
        )
        if others:
            why += (
                f"{offload}: {', '.join(others)}: resident, they would take the room of "
                "the blocks that save streaming at every step",
            )
        return {n: "group" if n in streams else "model" for n in variants}, why
    best: tuple[str, ...] = ()
    best_key = (-1, -1)
    for count in range(len(variants), -1, -1):
        for kept in itertools.combinations(variants, count):
            rest = [n for n in variants if n not in kept]
            need = sum(own[n] for n in kept) + max((largest[n] for n in rest), default=0)
            key = (sum(own[n] for n in kept), count)
            if need <= room and key > best_key:
                best, best_key = kept, key
    rest = [n for n in variants if n not in best]
    left = f"the {room / GIB:.2f} GiB left after the shared modules and the activations"
    needed = max((largest[n] for n in rest), default=0)
    keep = f"{needed / GIB:.2f} GiB for the largest module of an offloaded variant"
    why = (
        f"resident: {', '.join(best)} ({best_key[0] / GIB:.2f} GiB): the most weights that "
        f"fit in {left}, keeping {keep}"
        if best
        else f"resident: none: no variant fits in {left} beside {keep}",
        f"{offload}: {', '.join(rest)}: {sum(own[n] for n in rest) / GIB:.2f} GiB brought "
        "on per generation of all variants; one more resident would not fit",
    )
    return {n: "resident" if n in best else "model" for n in variants}, why


def plan_placement(
    sizes: ModelSizes,
    variants: Iterable[str],
    device: torch.device,
    offload: str,
    budget_bytes: int | None,
    host_budget_bytes: int | None = None,
) -> PlacementPlan:
    """Choose ``resident`` / ``model`` / ``group`` per variant (``cpu`` on the CPU).

    ``auto`` keeps every variant resident when all of them fit in the budget with room for
    activations; otherwise model offload, except for an unquantized variant whose
    transformer or T5 alone does not fit: that one streams them by group offload, keeping
    as many transformer blocks on the device while it runs as the budget leaves room for.
    A quantized variant is never planned ``group``. Host RAM: offloaded copies are pinned;
    when the plan does not fit ``host_budget_bytes``, group offload pins on the fly
    (``low_cpu_mem_usage``), and then, if that is not enough, model-offload copies fall
    back to pageable memory one name at a time (the largest first) until the plan fits.
    Whether the result fits is ``plan_problem``'s answer; ``check_fits`` refuses a plan
    that does not.
    """
    check_offload(offload)
    variants = tuple(variants)
    transformer = sizes.components["transformer"].bytes[REFERENCE]
    headroom = max(MIN_HEADROOM_BYTES, int(ACTIVATION_HEADROOM * transformer))
    residency: tuple[str, ...] = ()
    if device.type == "cpu":
        plan = _assemble(
            sizes, dict.fromkeys(variants, "cpu"), False, "cpu", None, host_budget_bytes,
            0, "CPU-only machine",
        )  # fmt: skip
        return plan
    shared = sizes.shared_bytes()
    total = shared + sum(sizes.own_bytes(VARIANTS[v].quantization) for v in variants)
    partial = False
    if offload != "auto":
        mode = {"none": "resident", "model": "model", "group": "group"}[offload]
        modes = dict.fromkeys(variants, mode)
        reason = f"--offload {offload}"
    elif budget_bytes is None or total + headroom <= budget_bytes:
        modes = dict.fromkeys(variants, "resident")
        reason = f"all variants fit: {total / GIB:.1f} GiB + headroom"
        if budget_bytes is not None:
            reason += f" <= {budget_bytes / GIB:.1f} GiB"
    else:
        modes, residency = _offload_modes(sizes, variants, budget_bytes - headroom - shared)
        kept = sum(mode == "resident" for mode in modes.values())
        reason = (
            f"variants need {total / GIB:.1f} GiB + headroom > {budget_bytes / GIB:.1f} GiB: "
            f"{kept} of {len(variants)} resident, {len(variants) - kept} offloaded"
        )
        partial = True
    # Group offloading cannot move some backends' state (bitsandbytes'): under
    # --offload group such a variant stays resident, and the plan says so.
    modes = {
        name: "resident"
        if mode == "group" and not backend(VARIANTS[name].quantization).group_offload
        else mode
        for name, mode in modes.items()
    }
    context = (str(device), budget_bytes, host_budget_bytes, headroom)

    def short(candidate: PlacementPlan) -> bool:
        return host_budget_bytes is not None and candidate.host_bytes > host_budget_bytes

    plan = _assemble(sizes, modes, False, *context, reason, partial=partial)
    plan = replace(plan, residency=residency)
    low_cpu = False
    if short(plan) and "group" in modes.values():
        low_cpu = True
        reason += "; group offload pins on the fly (low_cpu_mem_usage): host RAM is short"
        plan = _assemble(sizes, modes, True, *context, reason, partial=partial)
        plan = replace(plan, residency=residency)
    if short(plan):
        plan = _fall_back_to_pageable(sizes, modes, low_cpu, context, reason, partial, plan)
    return plan


def _fall_back_to_pageable(
    sizes: ModelSizes,
    modes: Mapping[str, str],
    low_cpu: bool,
    context: tuple[str, int | None, int | None, int],
    reason: str,
    partial: bool,
    pinned_plan: PlacementPlan,
) -> PlacementPlan:
    """Pageable copies for the offloaded variants, largest pinned copy first, until the
    plan fits the host budget; the pinned plan when no fallback makes it fit."""
    names = [n for n, v in pinned_plan.variants.items() if v.pinned and v.mode != "resident"]
    names.sort(key=lambda n: -pinned_plan.variants[n].host_bytes)
    if pinned_plan.shared_pinned:
        names.append("shared")
    pageable: list[str] = []
    for name in names:
        pageable.append(name)
        plan = _assemble(
            sizes, modes, low_cpu, *context, reason, frozenset(pageable), partial=partial
        )
        host_budget = context[2]
        if host_budget is None or plan.host_bytes <= host_budget:
            notes = tuple(
                f"{n}: pageable host copies (pinning would not fit the host budget)"
                for n in pageable
            )
            return replace(plan, notes=notes, residency=pinned_plan.residency)
    return pinned_plan


def plan_problem(plan: PlacementPlan) -> str | None:
    """Why the plan cannot run on this machine (device or host memory), or None."""
    problems = []
    if (
        plan.budget_bytes is not None
        and plan.estimated_bytes + plan.headroom_bytes > plan.budget_bytes
    ):
        problems.append(
            f"the device needs about {(plan.estimated_bytes + plan.headroom_bytes) / GIB:.1f} GiB "
            f"(weights + activations); the budget is {plan.budget_bytes / GIB:.1f} GiB"
        )
    if plan.host_budget_bytes is not None and plan.host_bytes > plan.host_budget_bytes:
        problems.append(
            f"host RAM needs about {plan.host_bytes / GIB:.1f} GiB for the offloaded weights; "
            f"{plan.host_budget_bytes / GIB:.1f} GiB is available"
        )
    if not problems:
        return None
    return f"placement {plan.summary()} does not fit: " + "; ".join(problems)


def check_fits(plan: PlacementPlan) -> None:
    """Raise PlacementError, with what to try, when the plan does not fit this machine."""
    problem = plan_problem(plan)
    if problem is not None:
        raise PlacementError(
            problem + ". Try fewer --variants, --offload model or group, a larger GPU or more "
            "RAM (python -m core.engine --plan shows the bytes per variant)."
        )


def host_budget_from(max_host_memory_gb: float | None) -> int | None:
    """Host bytes the plan may use: ``--max-host-memory`` or what is available now, less a
    reserve for the process itself; None when neither is known."""
    if max_host_memory_gb is not None:
        if not max_host_memory_gb > 0:
            raise InvalidSettingError(
                f"--max-host-memory must be a positive number of GB, got {max_host_memory_gb}"
            )
        return max(0, int(max_host_memory_gb * 1e9) - HOST_RESERVE_BYTES)
    available = host_available_bytes()
    if available is None or os.environ.get("SPOT_IGNORE_HOST_RAM"):
        return None
    return max(0, available - HOST_RESERVE_BYTES)


# --- Printing ------------------------------------------------------------------------------


def format_plan(plan: PlacementPlan, sizes: ModelSizes) -> str:
    """The plan as a table: per variant its placement, device bytes and host bytes (GiB)."""
    unit, scale = byte_unit([plan.shared_bytes, plan.host_bytes, plan.estimated_bytes])

    def size(value: int | None) -> str:
        return "unknown" if value is None else f"{value / scale:.2f} {unit}"

    lines = [f"device {plan.device}: {plan.reason}"]
    rows = [("variant", "placement", f"device {unit}", f"host {unit}", "host copies")]
    for name, v in plan.variants.items():
        copies = "-"
        if v.mode == "model":
            copies = "pinned" if v.pinned else "pageable"
        elif v.mode == "group":
            copies = "streams pinned on the fly" if v.low_cpu_mem_usage else "streams pinned"
            if v.resident_blocks:
                copies += ", resident blocks " + ("pinned" if v.pinned else "pageable")
        device, host = f"{v.device_bytes / scale:.2f}", f"{v.host_bytes / scale:.2f}"
        rows.append((name, v.mode, device, host, copies))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for name, v in plan.variants.items():
        if v.mode == "group":
            blocks = len(sizes.components["transformer"].blocks)
            lines.append(
                f"{name} transformer while it runs: {len(v.resident_blocks)} of {blocks} blocks "
                f"resident ({v.resident_block_bytes / GIB:.2f} GiB), "
                f"{v.streamed_bytes / GIB:.2f} GiB streamed per step"
            )
    lines += list(plan.residency)
    lines += [f"note: {note}" for note in plan.notes]
    lines.append(f"shared modules (CLIP + VAE): {size(plan.shared_bytes)}")
    if plan.device != "cpu":
        lines.append(
            f"device weights at the worst moment: {size(plan.estimated_bytes)} "
            f"+ {size(plan.headroom_bytes)} for activations; budget {size(plan.budget_bytes)}"
        )
    lines.append(
        f"host RAM for weights: {size(plan.host_bytes)} ({size(plan.pinned_bytes)} pinned); "
        f"budget {size(plan.host_budget_bytes)}"
    )
    # The ratios of the backends the plan's variants use (the default: LLM.int8 and NF4).
    shown = [b for b in (backend(VARIANTS[v].quantization) for v in plan.variants) if b.quantized]
    ratios = ", ".join(
        f"{name}: "
        + " / ".join(f"{b.name} {c.ratio(b.name):.2f}" for b in shown)
        + f" ({c.kept_linear_layers} Linear kept)"
        for name, c in ((n, sizes.components[n]) for n in PER_VARIANT_COMPONENTS)
    )
    lines.append(f"size vs bf16 (counted on the meta device): {ratios}")
    problem = plan_problem(plan)
    lines.append("verdict: fits" if problem is None else f"verdict: {problem}")
    return "\n".join(lines)
