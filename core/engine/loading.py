"""Loading: shared components once, one FLUX pipeline per variant, placed as planned.

The unquantized parts (CLIP text encoder, both tokenizers, VAE, scheduler config) are
loaded once and handed to every pipeline as the *same* Python objects; each variant
loads its own transformer and T5 encoder (``text_encoder_2``) as its backend
(``core.engine.backends``) does: bf16, bitsandbytes, layerwise fp8, GGUF or torchao.
Pipelines are built with the ``FluxPipeline`` constructor rather than ``from_pipe`` so
no shared module is ever cast away from bf16, and each gets its own scheduler instance
(schedulers are stateful).

The placement (``core.engine.placement``) is planned from the configuration before any
weight is read. Model offload is re-applied for the pipeline about to run, because the
last pipeline to install hooks owns those of the shared modules. LLM.int8 modules get the
fix that makes their memory follow a move (``core.engine.int8``). A load that runs out of
accelerator memory frees what it loaded and raises LoadOutOfMemoryError naming the
placement and what to try. On a CPU-only machine everything runs on the CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from transformers import (
    AutoTokenizer,
    CLIPTextModel,
    T5EncoderModel,
)

from core.checkpoints.tiny import ensure_tiny_checkpoint
from core.config import PER_VARIANT_COMPONENTS, VARIANT_NAMES, VARIANTS, ModelSpec, check_variants
from core.engine import int8
from core.engine.backends import DTYPE, Backend, backend
from core.engine.measure import release_memory, tensor_bytes
from core.engine.pinned import PinnedModules, TimedModules, install_move_hook
from core.engine.placement import (
    PlacementPlan,
    check_fits,
    folder_configs,
    gpu_budget_bytes,
    host_budget_from,
    model_sizes,
    plan_placement,
)
from core.errors import InvalidSettingError, LoadOutOfMemoryError, ModelUnavailableError

logger = logging.getLogger(__name__)

HUB_HELP = (
    "If the model is gated (FLUX.1-dev is), accept its licence on huggingface.co and set "
    "HF_TOKEN to a token of that account; without network, run with --model micro (the "
    "project's small model, shipped in assets/, which draws coloured shapes on a CPU) or "
    "--model /path/to/a/local/diffusers/folder."
)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(device: str | None) -> torch.device:
    """``device`` (default: cuda when available, else cpu), with the CUDA index pinned."""
    torch_device = torch.device(device or ("cuda" if cuda_available() else "cpu"))
    if torch_device.type == "cuda" and torch_device.index is None:
        torch_device = torch.device("cuda", torch.cuda.current_device())
    return torch_device


def resolve_source(spec: ModelSpec) -> Path:
    """A local folder holding the pipeline: the tiny or a synthetic checkpoint, a local path
    or a hub download.

    Hub models are fetched with ``DiffusionPipeline.download`` (only the diffusers
    folders, honouring HF_TOKEN and HF_HUB_OFFLINE); any failure becomes a
    ModelUnavailableError that says what to do.
    """
    if spec.kind == "tiny":
        return ensure_tiny_checkpoint()
    if spec.kind == "local":
        return Path(spec.source)
    if spec.kind == "micro":
        folder = Path(spec.source)
        if not (folder / "model_index.json").is_file():
            raise ModelUnavailableError(
                f"the micro model is missing from {folder}: it ships with the repository; "
                f"retrain it with python -m core.checkpoints.micro.train --out {folder}"
            )
        return folder
    if spec.kind == "synthetic":
        # Built on first use into $SPOT_CACHE_DIR or data/models (GPU-sized: build it with
        # python -m core.checkpoints.synthetic on the machine that will run it).
        from core.checkpoints.synthetic import ensure_synthetic_checkpoint

        return ensure_synthetic_checkpoint(spec)
    try:
        return Path(FluxPipeline.download(spec.source))
    except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
        raise ModelUnavailableError(
            f"could not fetch {spec.source} from the Hugging Face Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
            + HUB_HELP
        ) from exc


@dataclass
class ModelSet:
    """The loaded pipelines of one model, sharing their unquantized components."""

    spec: ModelSpec
    source: Path
    device: torch.device
    plan: PlacementPlan
    pipelines: dict[str, FluxPipeline]
    shared: dict[str, Any]
    load_seconds: float
    # Offloaded modules' host copies (core.engine.pinned), by variant name or "shared".
    movers: dict[str, list[PinnedModules | TimedModules]] = field(default_factory=dict)
    # Group-offloaded transformer blocks kept on the device while their variant runs.
    resident_parts: dict[str, torch.nn.ModuleList] = field(default_factory=dict)

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.pipelines)

    @property
    def placement(self) -> str:
        """A one-word summary: cpu, resident, model offload, group offload or mixed."""
        modes = set(self.plan.per_variant.values())
        if len(modes) > 1:
            return (
                "mixed (" + ", ".join(f"{v}: {m}" for v, m in self.plan.per_variant.items()) + ")"
            )
        mode = modes.pop()
        return {"model": "model offload", "group": "group offload"}.get(mode, mode)

    def own_modules(self, variant: str) -> list[torch.nn.Module]:
        pipe = self.pipelines[variant]
        return [getattr(pipe, n) for n in PER_VARIANT_COMPONENTS]

    def weight_bytes(self, variant: str) -> int:
        """Bytes of the variant's own components (transformer + T5) wherever they are,
        bitsandbytes' quantization state included."""
        return tensor_bytes(self.own_modules(variant))

    def shared_weight_bytes(self) -> int:
        """Bytes of the shared modules (CLIP text encoder and VAE), counted once."""
        return tensor_bytes(self.shared.values())

    def device_bytes(self, variant: str | None = None) -> int:
        """Bytes on the engine's device right now: of ``variant``'s own components and the
        shared modules, or of every loaded module when ``variant`` is None."""
        names = self.variants if variant is None else (variant,)
        modules = [m for n in names for m in self.own_modules(n)]
        return tensor_bytes([*modules, *self.shared.values()], self.device)

    def take_moves(self) -> dict[str, dict[str, dict[str, float]]]:
        """Bytes and seconds of the moves between host and device since the last call, per
        variant (its own modules and resident blocks) and "shared": {name: {"on"/"off":
        {"bytes", "seconds", "moves"}}}."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name, movers in self.movers.items():
            total = out.setdefault(name, {})
            for mover in movers:
                for direction, figures in mover.log.take().items():
                    entry = total.setdefault(direction, {"bytes": 0, "seconds": 0.0, "moves": 0})
                    for key, value in figures.items():
                        entry[key] += value
        return out

    def prepare(self, variant: str) -> FluxPipeline:
        """Return the variant's pipeline, with placement hooks right for running it now."""
        pipe = self.pipelines[variant]
        mode = self.plan.per_variant[variant]
        # Another variant's blocks kept on the device while it ran go back to the host
        # (pinned copies: nothing is copied), before this variant brings anything on.
        for other, part in self.resident_parts.items():
            if other != variant:
                part.to("cpu")
        if mode == "model":
            # The last pipeline to install offload hooks owns the shared modules' hooks; a
            # stale owner would let the VAE offload another variant's transformer.
            pipe.enable_model_cpu_offload(device=self.device)
        elif mode in ("resident", "group"):
            # Take the shared modules back from another variant's model offload, if any.
            pipe.remove_all_hooks()
            for module in self.shared.values():
                if isinstance(module, torch.nn.Module):
                    module.to(self.device)
        if variant in self.resident_parts:
            self.resident_parts[variant].to(self.device)
        return pipe

    def settle(self, variant: str) -> None:
        """After a failed call, put the variant's modules back where its placement keeps
        them between calls: a model-offloaded module that was running goes back to the
        host, a group-offloaded block back to its host copy."""
        pipe = self.pipelines[variant]
        mode = self.plan.per_variant[variant]
        if mode == "model":
            pipe.maybe_free_model_hooks()  # re-applies offload: every module to the CPU
        elif mode == "group":
            from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

            if variant in self.resident_parts:
                self.resident_parts[variant].to("cpu")

            for module in self.own_modules(variant):
                for sub in module.modules():
                    registry = getattr(sub, "_diffusers_hook", None)
                    hook = registry.get_hook(_GROUP_OFFLOADING) if registry else None
                    if hook is not None:
                        hook.group.offload_()


def _load_variant_components(
    source: Path, quantized: Backend, device: torch.device, resident: bool
) -> tuple[FluxTransformer2DModel, T5EncoderModel]:
    """The variant's transformer and T5, as its backend loads them (``load_component``).
    Quantized weights are always created on ``device`` (bitsandbytes quantizes where the
    weights land); bf16 weights go straight to ``device`` when they stay there
    (``resident``), else to the CPU for offloading."""
    device_map = {"": str(device) if device.type == "cpu" else device.index or 0}
    if not quantized.quantized and not resident:
        device_map = {"": "cpu"}
    transformer = quantized.load_component("transformer", source, device, device_map)
    text_encoder_2 = quantized.load_component("text_encoder_2", source, device, device_map)
    return transformer, text_encoder_2


def _apply_group_offload(
    module: torch.nn.Module,
    device: torch.device,
    low_cpu_mem_usage: bool,
    keep: tuple[str, ...] = (),
) -> torch.nn.ModuleList | None:
    """Stream ``module`` block by block from the CPU. Block-level offloading splits only
    the ModuleLists that are direct children; T5's blocks live in ``encoder``, so T5 is
    offloaded through its encoder (whose embedding is T5's shared one).

    The blocks named in ``keep`` ("transformer_blocks.3") are left out of streaming: they
    are returned as a ModuleList for the caller to keep on the device while the variant
    runs. diffusers offers no way to skip a block, so each ModuleList is swapped for one
    without the kept blocks while the hooks are installed, then put back whole.
    """
    from diffusers.hooks import apply_group_offloading

    target = module.encoder if isinstance(module, T5EncoderModel) else module
    originals: dict[str, torch.nn.ModuleList] = {}
    kept: list[torch.nn.Module] = []
    for name, child in list(target.named_children()):
        if not isinstance(child, torch.nn.ModuleList):
            continue
        held = [b for i, b in enumerate(child) if f"{name}.{i}" in keep]
        if held:
            kept += held
            originals[name] = child
            setattr(target, name, torch.nn.ModuleList(b for b in child if b not in held))
    try:
        apply_group_offloading(
            target,
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=True,
            # True when host RAM is short (the plan decides): no pinned copy of every tensor.
            low_cpu_mem_usage=low_cpu_mem_usage,
        )
    finally:
        for name, child in originals.items():
            setattr(target, name, child)
    return torch.nn.ModuleList(kept) if kept else None


def _offload_copies(
    modules: list[torch.nn.Module], pinned: bool
) -> list[PinnedModules | TimedModules]:
    """Host copies for modules that model offload (or a variant's turn) moves: pinned ones
    allocated once, or the pageable fallback; each module's ``.to`` goes through its copy.
    Afterwards every module is on the host."""
    movers: list[PinnedModules | TimedModules] = []
    for module in modules:
        mover = PinnedModules([module]) if pinned else TimedModules([module])
        install_move_hook(module, mover)
        module.to("cpu")  # pinned: already there; pageable: the ordinary move
        movers.append(mover)
    return movers


def model_configs(spec: ModelSpec) -> dict[str, Any]:
    """The model components' configurations of ``spec``, without reading any weight.

    Synthetic models have them in code; the tiny model and local folders on disk; a hub
    model's come from its ``config.json`` files alone (a few kB, no weights).
    """
    if spec.kind == "synthetic":
        from core.checkpoints.synthetic import component_configs

        return component_configs(spec)
    if spec.kind == "hub":
        from huggingface_hub import snapshot_download

        try:
            folder = Path(
                snapshot_download(spec.source, allow_patterns=["model_index.json", "*/config.json"])
            )
        except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
            raise ModelUnavailableError(
                f"could not fetch the configuration of {spec.source} "
                f"({type(exc).__name__}). " + HUB_HELP
            ) from exc
        return folder_configs(folder)
    return folder_configs(resolve_source(spec))


def plan_for(
    folder: Path,
    variants: tuple[str, ...],
    device: torch.device,
    offload: str,
    budget_bytes: int | None,
    max_host_memory_gb: float | None = None,
) -> PlacementPlan:
    """The placement plan of a pipeline folder, from its configuration files alone."""
    sizes = model_sizes(folder_configs(folder))
    return plan_placement(
        sizes, variants, device, offload, budget_bytes, host_budget_from(max_host_memory_gb)
    )


def load_models(
    spec: ModelSpec,
    *,
    variants: tuple[str, ...] | list[str] = VARIANT_NAMES,
    device: str | None = None,
    offload: str = "auto",
    max_gpu_memory_gb: float | None = None,
    max_host_memory_gb: float | None = None,
    source: Path | None = None,
) -> ModelSet:
    """Load the shared components once and one pipeline per variant around them.

    ``device`` defaults to ``cuda`` when available, else ``cpu``. ``source`` overrides where
    the pipeline folder is (the benchmark passes its synthetic checkpoint this way).
    Raises PlacementError when the plan does not fit host RAM and LoadOutOfMemoryError
    when the device runs out of memory while loading (everything loaded is freed first).
    """
    variants = check_variants(list(variants))
    torch_device = resolve_device(device)
    for name in variants:  # torchao's float8 is refused off a recent GPU, by name
        backend(VARIANTS[name].quantization).check_device(torch_device, name)
    if spec.kind == "synthetic" and source is None and torch_device.type != "cuda":
        raise InvalidSettingError(
            f"{spec.name} is a full-scale model for a GPU (gigabytes to build, hours per image "
            "on a CPU); on the CPU use --model tiny"
        )
    folder = source or resolve_source(spec)
    if not (folder / "model_index.json").is_file():
        raise ModelUnavailableError(f"{folder} is not a diffusers pipeline folder. " + HUB_HELP)
    budget = gpu_budget_bytes(torch_device, max_gpu_memory_gb)
    plan = plan_for(folder, variants, torch_device, offload, budget, max_host_memory_gb)
    check_fits(plan)
    logger.info(
        "placement of %s on %s: %s (%s)", spec.name, plan.device, plan.summary(), plan.reason
    )
    int8.warn_once()
    try:
        return _load(spec, folder, variants, torch_device, plan)
    except torch.OutOfMemoryError as exc:
        message = _load_oom_message(plan, exc)
    # Out of the except block: the exception, its traceback and the frames holding the
    # half-loaded modules are gone before the memory is released.
    release_memory(torch_device)
    raise LoadOutOfMemoryError(message)


def _load_oom_message(plan: PlacementPlan, exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else "out of memory"
    advice = (
        "try --offload model or --offload group, or --max-gpu-memory with this card's "
        "size in GB so the planner offloads what does not fit"
        if all(v.mode == "resident" for v in plan.variants.values())
        else "try --offload group, a lower --max-gpu-memory to leave activations more "
        "room, or fewer --variants"
    )
    return (
        f"loading ran out of GPU memory with placement {plan.summary()} "
        f"({first[:120]}); {advice} (see python -m core.engine --plan)"
    )


def _load(
    spec: ModelSpec,
    folder: Path,
    variants: tuple[str, ...],
    torch_device: torch.device,
    plan: PlacementPlan,
) -> ModelSet:
    started = time.perf_counter()
    try:
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=DTYPE)
        tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
        tokenizer_2 = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer_2")
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", dtype=DTYPE)
        scheduler_config = FlowMatchEulerDiscreteScheduler.load_config(
            folder, subfolder="scheduler"
        )
    except OSError as exc:
        raise ModelUnavailableError(
            f"could not load the shared components from {folder}: {exc}"
        ) from exc
    if torch_device.type == "cpu":
        # bf16 convolutions take PyTorch's slow reference kernel on the CPU unless the
        # tensors are channels-last (about 25x faster for the VAE decoder here).
        vae.to(memory_format=torch.channels_last)
    else:
        text_encoder.to(torch_device)
        vae.to(torch_device)
    shared: dict[str, Any] = {
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "vae": vae,
    }

    pipelines: dict[str, FluxPipeline] = {}
    movers: dict[str, list[PinnedModules | TimedModules]] = {}
    resident_parts: dict[str, torch.nn.ModuleList] = {}
    if any(v.mode == "model" for v in plan.variants.values()):
        # Model offload parks the shared modules on the host between calls too.
        movers["shared"] = _offload_copies([text_encoder, vae], plan.shared_pinned)
    for name in variants:
        placed = plan.variants[name]
        variant_backend = backend(VARIANTS[name].quantization)
        transformer, text_encoder_2 = _load_variant_components(
            folder, variant_backend, torch_device, resident=placed.mode == "resident"
        )
        for module in (transformer, text_encoder_2):
            variant_backend.after_load(module)  # LLM.int8: its state follows moves
        if placed.mode == "model":
            # The offload hooks bring each module to the GPU when it runs.
            movers[name] = _offload_copies([transformer, text_encoder_2], placed.pinned)
        elif placed.mode == "group" and variant_backend.group_offload:
            kept = _apply_group_offload(
                transformer, torch_device, placed.low_cpu_mem_usage, placed.resident_blocks
            )
            _apply_group_offload(text_encoder_2, torch_device, placed.low_cpu_mem_usage)
            if kept is not None:
                movers[name] = _offload_copies([kept], placed.pinned)
                resident_parts[name] = kept

        pipelines[name] = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(scheduler_config),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            vae=vae,
            transformer=transformer,
        )
        pipelines[name].set_progress_bar_config(disable=True)
    if torch_device.type == "cuda":
        torch.cuda.synchronize(torch_device)
    load_seconds = time.perf_counter() - started
    logger.info("loaded %s variants in %.1f s", ", ".join(variants), load_seconds)
    return ModelSet(
        spec, folder, torch_device, plan, pipelines, shared, load_seconds, movers, resident_parts
    )
