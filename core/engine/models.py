"""Loading: shared components once, one FLUX pipeline per variant, and their placement.

The unquantized parts (CLIP text encoder, both tokenizers, VAE, scheduler config) are
loaded once and handed to every pipeline as the *same* Python objects; each variant
loads its own transformer and T5 encoder (``text_encoder_2``) in bf16, LLM.int8 or NF4.
Pipelines are built with the ``FluxPipeline`` constructor rather than ``from_pipe`` so
no shared module is ever cast away from bf16, and each gets its own scheduler instance
(schedulers are stateful).

Placement on CUDA, per variant:
- ``resident``: every module on the GPU for the app's lifetime (fastest);
- ``model``: accelerate's model CPU offload, re-applied for the pipeline about to run,
  because the last pipeline to install hooks owns those of the shared modules;
- ``group``: an unquantized transformer and T5 stream block by block (diffusers group
  offloading) and the small shared modules stay on the GPU — for a module larger than
  the budget. Group offloading moves each parameter's ``.data`` only, not the
  quantization state bitsandbytes keeps beside it (``quant_state``, ``SCB``), so a
  quantized module of a ``group`` variant stays resident (it is 2-4x smaller).
On a CPU-only machine everything runs on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers import BitsAndBytesConfig as DiffusersBnbConfig
from transformers import (
    AutoTokenizer,
    CLIPTextModel,
    T5EncoderModel,
)
from transformers import BitsAndBytesConfig as TransformersBnbConfig

from core.checkpoints.tiny import ensure_tiny_checkpoint
from core.config import (
    GIB,
    MIB,
    OFFLOAD_CHOICES,
    PER_VARIANT_COMPONENTS,
    VARIANT_NAMES,
    VARIANTS,
    ModelSpec,
    check_variants,
)
from core.errors import InvalidSettingError, ModelUnavailableError

logger = logging.getLogger(__name__)

DTYPE = torch.bfloat16
# Approximate size of a quantized component relative to its bf16 size, used only to plan
# placement before loading (norms, embeddings and biases stay in bf16).
SIZE_RATIO = {"none": 1.0, "int8": 0.52, "nf4": 0.30}
# Room left for activations, as a share of the largest transformer: FLUX.1-dev at
# 1024x1024 peaks about 5 GB above its weights (seed measurements), 0.25 x 23.8 GB.
ACTIVATION_HEADROOM = 0.25
MIN_HEADROOM_BYTES = 512 * MIB

HUB_HELP = (
    "If the model is gated (FLUX.1-dev is), accept its licence on huggingface.co and set "
    "HF_TOKEN to a token of that account; without network, run with --model tiny (the "
    "built-in random-weight test model) or --model /path/to/a/local/diffusers/folder."
)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def quantization_configs(quantization: str) -> tuple[Any, Any]:
    """The (diffusers, transformers) BitsAndBytesConfig pair of a variant, or (None, None)."""
    if quantization == "none":
        return None, None
    if quantization == "int8":
        kwargs: dict[str, Any] = {"load_in_8bit": True}
    elif quantization == "nf4":
        kwargs = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": DTYPE,
        }
    else:
        raise ValueError(f"unknown quantization {quantization!r}")
    return DiffusersBnbConfig(**kwargs), TransformersBnbConfig(**kwargs)


@contextlib.contextmanager
def _allow_cpu_quantization(device: torch.device) -> Iterator[None]:
    """Let diffusers' bitsandbytes quantizers load on a CPU-only machine.

    WORKAROUND (diffusers 0.42.1, upstream issue #10395): ``validate_environment`` of
    diffusers' BnB4Bit/BnB8Bit quantizers raises "No GPU found. A GPU is needed for
    quantization." although bitsandbytes >= 0.49 quantizes and computes on the CPU and
    transformers' own quantizer (used for T5) already allows it. Only on the CPU, we skip
    that check; the rest of the loading path — replacing ``nn.Linear`` with
    ``Linear8bitLt`` / ``Linear4bit`` and quantizing each weight — is diffusers' own.
    Remove this once diffusers accepts the CPU.
    """
    if device.type != "cpu":
        yield
        return
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import (
        BnB4BitDiffusersQuantizer,
        BnB8BitDiffusersQuantizer,
    )

    def skip(self: object, *args: object, **kwargs: object) -> None:
        return None

    with (
        mock.patch.object(BnB4BitDiffusersQuantizer, "validate_environment", skip),
        mock.patch.object(BnB8BitDiffusersQuantizer, "validate_environment", skip),
    ):
        yield


def resolve_source(spec: ModelSpec) -> Path:
    """A local folder holding the pipeline: the tiny checkpoint, a local path or a hub download.

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
        raise ModelUnavailableError(
            f"{spec.name} is built by the benchmark "
            f"(python -m core.bench.benchmark --model {spec.name})"
        )
    try:
        return Path(FluxPipeline.download(spec.source))
    except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
        raise ModelUnavailableError(
            f"could not fetch {spec.source} from the Hugging Face Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
            + HUB_HELP
        ) from exc


def folder_bytes(folder: Path) -> int:
    """Bytes of the weight files in one component folder (bf16 on disk)."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


@dataclass(frozen=True)
class PlacementPlan:
    """Where each variant runs and why; bytes are estimates made before loading."""

    device: str
    per_variant: dict[str, str]
    estimated_bytes: int
    budget_bytes: int | None
    reason: str


def plan_placement(
    source: Path,
    variants: tuple[str, ...],
    device: torch.device,
    offload: str,
    budget_bytes: int | None,
) -> PlacementPlan:
    """Choose ``resident`` / ``model`` / ``group`` per variant (``cpu`` on the CPU).

    ``auto`` keeps every variant resident when all of them fit in the budget with room for
    activations; otherwise model offload, except for an unquantized variant whose
    transformer or T5 alone does not fit: that one streams them by group offload. A
    quantized variant is never planned ``group`` (see the module docstring): if even its
    largest module does not fit, nothing placement can do would make it run.
    """
    if offload not in OFFLOAD_CHOICES:
        raise InvalidSettingError(f"offload must be one of {', '.join(OFFLOAD_CHOICES)}")
    if device.type == "cpu":
        return PlacementPlan("cpu", dict.fromkeys(variants, "cpu"), 0, None, "CPU-only machine")
    per_component = {name: folder_bytes(source / name) for name in PER_VARIANT_COMPONENTS}
    shared = folder_bytes(source / "text_encoder") + folder_bytes(source / "vae")
    largest: dict[str, int] = {}
    total = shared
    for name in variants:
        ratio = SIZE_RATIO[VARIANTS[name].quantization]
        sizes = [int(b * ratio) for b in per_component.values()]
        largest[name] = max(sizes)
        total += sum(sizes)
    headroom = max(MIN_HEADROOM_BYTES, int(ACTIVATION_HEADROOM * per_component["transformer"]))
    if offload != "auto":
        mode = {"none": "resident", "model": "model", "group": "group"}[offload]
        return PlacementPlan(
            str(device), dict.fromkeys(variants, mode), total, budget_bytes, f"--offload {offload}"
        )
    assert budget_bytes is not None
    if total + headroom <= budget_bytes:
        per_variant = dict.fromkeys(variants, "resident")
        reason = f"all variants fit: {total / GIB:.1f} GiB + headroom <= {budget_bytes / GIB:.1f}"
    else:
        per_variant = {
            name: "group"
            if VARIANTS[name].quantization == "none"
            and largest[name] + shared + headroom > budget_bytes
            else "model"
            for name in variants
        }
        reason = (
            f"variants need {total / GIB:.1f} GiB + headroom > {budget_bytes / GIB:.1f} GiB: "
            "offloading"
        )
    return PlacementPlan(str(device), per_variant, total, budget_bytes, reason)


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

    def weight_bytes(self, variant: str) -> int:
        """Bytes of the variant's own components (transformer + T5) as stored in memory."""
        pipe = self.pipelines[variant]
        return sum(int(getattr(pipe, n).get_memory_footprint()) for n in PER_VARIANT_COMPONENTS)

    def shared_weight_bytes(self) -> int:
        """Bytes of the shared modules (CLIP text encoder and VAE), counted once."""
        return sum(
            int(m.get_memory_footprint())
            for m in self.shared.values()
            if isinstance(m, torch.nn.Module)
        )

    def prepare(self, variant: str) -> FluxPipeline:
        """Return the variant's pipeline, with placement hooks right for running it now."""
        pipe = self.pipelines[variant]
        mode = self.plan.per_variant[variant]
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
        return pipe


def _load_variant_components(
    source: Path, quantization: str, device: torch.device, resident: bool
) -> tuple[FluxTransformer2DModel, T5EncoderModel]:
    """The variant's transformer and T5. Quantized weights are always created on
    ``device`` (bitsandbytes quantizes where the weights land); bf16 weights go straight
    to ``device`` when they stay there (``resident``), else to the CPU for offloading."""
    diffusers_config, transformers_config = quantization_configs(quantization)
    device_map = {"": str(device) if device.type == "cpu" else device.index or 0}
    if diffusers_config is None:
        bf16_map = device_map if resident else {"": "cpu"}
        transformer = FluxTransformer2DModel.from_pretrained(
            source, subfolder="transformer", dtype=DTYPE, device_map=bf16_map
        )
        text_encoder_2 = T5EncoderModel.from_pretrained(
            source, subfolder="text_encoder_2", dtype=DTYPE, device_map=bf16_map
        )
        return transformer, text_encoder_2
    with _allow_cpu_quantization(device):
        transformer = FluxTransformer2DModel.from_pretrained(
            source,
            subfolder="transformer",
            quantization_config=diffusers_config,
            dtype=DTYPE,
            device_map=device_map,
        )
    text_encoder_2 = T5EncoderModel.from_pretrained(
        source,
        subfolder="text_encoder_2",
        quantization_config=transformers_config,
        dtype=DTYPE,
        device_map=device_map,
    )
    return transformer, text_encoder_2


def _apply_group_offload(module: torch.nn.Module, device: torch.device) -> None:
    """Stream ``module`` block by block from the CPU. Block-level offloading splits only
    the ModuleLists that are direct children; T5's blocks live in ``encoder``, so T5 is
    offloaded through its encoder (whose embedding is T5's shared one)."""
    from diffusers.hooks import apply_group_offloading

    target = module.encoder if isinstance(module, T5EncoderModel) else module
    apply_group_offloading(
        target,
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=True,
    )


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


def load_models(
    spec: ModelSpec,
    *,
    variants: tuple[str, ...] | list[str] = VARIANT_NAMES,
    device: str | None = None,
    offload: str = "auto",
    max_gpu_memory_gb: float | None = None,
    source: Path | None = None,
) -> ModelSet:
    """Load the shared components once and one pipeline per variant around them.

    ``device`` defaults to ``cuda`` when available, else ``cpu``. ``source`` overrides where
    the pipeline folder is (the benchmark passes its synthetic checkpoint this way).
    """
    variants = check_variants(list(variants))
    torch_device = torch.device(device or ("cuda" if cuda_available() else "cpu"))
    if torch_device.type == "cuda" and torch_device.index is None:
        torch_device = torch.device("cuda", torch.cuda.current_device())
    folder = source or resolve_source(spec)
    if not (folder / "model_index.json").is_file():
        raise ModelUnavailableError(f"{folder} is not a diffusers pipeline folder. " + HUB_HELP)
    budget = gpu_budget_bytes(torch_device, max_gpu_memory_gb)
    plan = plan_placement(folder, variants, torch_device, offload, budget)
    logger.info(
        "placement of %s on %s: %s (%s)", spec.name, plan.device, plan.per_variant, plan.reason
    )

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
    for name in variants:
        mode = plan.per_variant[name]
        transformer, text_encoder_2 = _load_variant_components(
            folder, VARIANTS[name].quantization, torch_device, resident=mode == "resident"
        )
        quantized = VARIANTS[name].quantization != "none"
        for module in (transformer, text_encoder_2):
            if mode == "model":
                module.to("cpu")  # the offload hooks bring it to the GPU when it runs
            elif mode == "group" and not quantized:
                _apply_group_offload(module, torch_device)

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
    return ModelSet(spec, folder, torch_device, plan, pipelines, shared, load_seconds)
