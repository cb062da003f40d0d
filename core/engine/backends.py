"""The quantization backends, one ``Backend`` object per quantization, in one registry.

A backend knows everything the engine does differently for its quantization:

- the library call that loads a component quantized (``load_configs``: the diffusers and
  transformers config pair ``from_pretrained`` takes; ``pipeline_config``: diffusers'
  ``PipelineQuantizationConfig``, the seed's recipe);
- any step after loading (``after_load``: LLM.int8's move fix, ``core.engine.int8``);
- whether and how it loads on the CPU (``loading``: the one commented CPU workaround,
  ``allow_cpu_quantization``);
- how to size its layers on the meta device (``quantize_on_meta``, ``storage_delta``);
- which tensors hold its state besides parameters and buffers (``state_slots``), for
  measuring (``core.engine.measure``) and for moves (``core.engine.pinned``);
- whether diffusers' group offloading can move it (``group_offload``);
- how it loads each of a variant's own components (``load_component``: ``from_pretrained``
  with its configs, or ``from_single_file`` for GGUF, or bf16 then layerwise casting);
- which devices it runs on (``check_device``: torchao's float8 needs a recent GPU).

Loading, placement and measure ask the registry (``backend``, ``quantized_backends``,
``state_slots``) and never compare backend names. Adding a backend is one class here and
one ``VARIANTS`` line in ``core.config``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import torch
from diffusers import BitsAndBytesConfig as DiffusersBnbConfig
from diffusers import FluxTransformer2DModel
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from transformers import BitsAndBytesConfig as TransformersBnbConfig
from transformers import T5EncoderModel

from core.engine import int8
from core.errors import InvalidSettingError

DTYPE = torch.bfloat16
BF16_BYTES = 2
# The unquantized backend's name: the bf16 reference every size is compared with.
REFERENCE = "none"
# The components a variant quantizes (the rest are shared and stay bf16).
QUANTIZED_COMPONENTS = ("transformer", "text_encoder_2")

Slot = tuple[object, str]  # (holder, attribute): getattr/setattr give and take the tensor
# Set on a meta-device layer by ``quantize_on_meta`` where the backend will quantize it
# without swapping its class (layerwise casting, GGUF, torchao).
MARK = "_spot_quantized"


@contextlib.contextmanager
def allow_cpu_quantization(device: torch.device) -> Iterator[None]:
    """Let diffusers' bitsandbytes quantizers load on a CPU-only machine.

    WORKAROUND (diffusers 0.42.1, upstream issue #10395): ``validate_environment`` of
    diffusers' BnB4Bit/BnB8Bit quantizers raises "No GPU found. A GPU is needed for
    quantization." although bitsandbytes >= 0.49 quantizes and computes on the CPU and
    transformers' own quantizer (used for T5) already allows it; and, when no
    ``device_map`` is given (the seed's recipe, ``FluxPipeline.from_pretrained`` with a
    ``PipelineQuantizationConfig``), their ``update_device_map`` asks CUDA for its current
    device. Only on the CPU, we skip that check and map an absent device map to the CPU;
    the rest of the loading path — replacing ``nn.Linear`` with ``Linear8bitLt`` /
    ``Linear4bit`` and quantizing each weight — is diffusers' own. Remove this once
    diffusers accepts the CPU.
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

    def on_cpu(self: object, device_map: Any) -> Any:
        return {"": "cpu"} if device_map is None else device_map

    with contextlib.ExitStack() as stack:
        for quantizer in (BnB4BitDiffusersQuantizer, BnB8BitDiffusersQuantizer):
            stack.enter_context(mock.patch.object(quantizer, "validate_environment", skip))
            stack.enter_context(mock.patch.object(quantizer, "update_device_map", on_cpu))
        yield


class Backend:
    """One quantization. This base is the unquantized one: bf16 weights, nothing to do."""

    name = REFERENCE
    quantized = False
    group_offload = True  # diffusers' group offloading moves plain parameters

    def load_configs(self) -> tuple[Any, Any]:
        """The (diffusers, transformers) quantization configs ``from_pretrained`` takes."""
        return None, None

    def pipeline_config(self) -> Any:
        """The seed's recipe: a ``PipelineQuantizationConfig`` for the whole pipeline."""
        return None

    def loading(self, device: torch.device) -> AbstractContextManager[None]:
        """Wrap the quantized ``from_pretrained`` calls: how this backend loads on ``device``."""
        return contextlib.nullcontext()

    def after_load(self, module: torch.nn.Module) -> None:
        """What a loaded component needs before it is ever moved."""

    def quantize_on_meta(self, component: str, module: torch.nn.Module) -> None:
        """Swap a meta-device component's layers as ``from_pretrained`` would."""

    def storage_delta(self, layer: torch.nn.Module) -> int | None:
        """For a layer of this backend on the meta device: its stored bytes less the bf16
        bytes of its weight (which a bf16 count of the module included); None otherwise."""
        return None

    def state_slots(self, layer: torch.nn.Module) -> list[Slot]:
        """Where a layer of this backend holds tensors besides its parameters and buffers."""
        return []

    def check_device(self, device: torch.device, variant: str) -> None:
        """Raise InvalidSettingError, naming ``variant``, if this backend cannot run there."""

    def load_component(
        self, component: str, source: Path, device: torch.device, device_map: dict[str, Any]
    ) -> torch.nn.Module:
        """One of a variant's own components (``transformer`` or ``text_encoder_2``) from
        the pipeline folder ``source``, quantized on ``device_map`` the way a user would."""
        if component == "transformer":
            with self.loading(device):
                return _from_pretrained(component, source, self.load_configs(), device_map)
        return _from_pretrained(component, source, self.load_configs(), device_map)


def _from_pretrained(
    component: str, source: Path, configs: tuple[Any, Any], device_map: dict[str, Any] | None
) -> torch.nn.Module:
    """``from_pretrained`` of the transformer (diffusers' config) or T5 (transformers')."""
    diffusers_config, transformers_config = configs
    if component == "transformer":
        return FluxTransformer2DModel.from_pretrained(
            source,
            subfolder=component,
            quantization_config=diffusers_config,
            dtype=DTYPE,
            device_map=device_map,
        )
    return T5EncoderModel.from_pretrained(
        source,
        subfolder=component,
        quantization_config=transformers_config,
        dtype=DTYPE,
        device_map=device_map,
    )


class BitsAndBytes(Backend):
    """bitsandbytes through diffusers (transformer) and transformers (T5)."""

    quantized = True
    # Group offloading moves each parameter's ``.data`` only, not bitsandbytes' state.
    group_offload = False
    pipeline_backend = ""
    kwargs: ClassVar[dict[str, Any]] = {}

    def load_configs(self) -> tuple[Any, Any]:
        return DiffusersBnbConfig(**self.kwargs), TransformersBnbConfig(**self.kwargs)

    def pipeline_config(self) -> Any:
        from diffusers import PipelineQuantizationConfig

        return PipelineQuantizationConfig(
            quant_backend=self.pipeline_backend,
            quant_kwargs=dict(self.kwargs),
            components_to_quantize=list(QUANTIZED_COMPONENTS),
        )

    def loading(self, device: torch.device) -> AbstractContextManager[None]:
        return allow_cpu_quantization(device)

    def quantize_on_meta(self, component: str, module: torch.nn.Module) -> None:
        diffusers_config, transformers_config = self.load_configs()
        if component == "transformer":
            from diffusers.quantizers.bitsandbytes.utils import replace_with_bnb_linear

            skip = list(diffusers_config.llm_int8_skip_modules or [])
            skip += list(getattr(module, "_keep_in_fp32_modules", None) or [])
            replace_with_bnb_linear(
                module, modules_to_not_convert=skip, quantization_config=diffusers_config
            )
        else:
            from transformers.integrations.bitsandbytes import replace_with_bnb_linear
            from transformers.quantizers.base import HfQuantizer

            skip = HfQuantizer.get_modules_to_not_convert(
                module, transformers_config.llm_int8_skip_modules, module._keep_in_fp32_modules
            )
            replace_with_bnb_linear(
                module, modules_to_not_convert=skip, quantization_config=transformers_config
            )


class LLMInt8(BitsAndBytes):
    """LLM.int8: int8 weights and one float32 scale per output row."""

    name = "int8"
    pipeline_backend = "bitsandbytes_8bit"
    kwargs: ClassVar[dict[str, Any]] = {"load_in_8bit": True}
    SCALE_BYTES = 4

    def after_load(self, module: torch.nn.Module) -> None:
        int8.follow_moves(module)  # before any move: see core.engine.int8

    def storage_delta(self, layer: torch.nn.Module) -> int | None:
        import bitsandbytes as bnb

        if not isinstance(layer, bnb.nn.Linear8bitLt):
            return None
        n = layer.weight.numel()
        return n - n * BF16_BYTES + layer.out_features * self.SCALE_BYTES

    def state_slots(self, layer: torch.nn.Module) -> list[Slot]:
        import bitsandbytes as bnb

        return int8.state_slots(layer) if isinstance(layer, bnb.nn.Linear8bitLt) else []


class NF4(BitsAndBytes):
    """4-bit NF4: two weights a byte, one float32 absmax per block of 64 (no double
    quantization) and the layer's own copy of the 16-entry float32 NF4 code."""

    name = "nf4"
    pipeline_backend = "bitsandbytes_4bit"
    kwargs: ClassVar[dict[str, Any]] = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": DTYPE,
    }
    BLOCKSIZE = 64
    ABSMAX_BYTES = 4
    CODE_BYTES = 16 * 4

    def storage_delta(self, layer: torch.nn.Module) -> int | None:
        import bitsandbytes as bnb

        if not isinstance(layer, bnb.nn.Linear4bit):
            return None
        n = layer.in_features * layer.out_features
        packed = math.ceil(n / 2) + math.ceil(n / self.BLOCKSIZE) * self.ABSMAX_BYTES
        return packed + self.CODE_BYTES - layer.weight.numel() * BF16_BYTES

    def state_slots(self, layer: torch.nn.Module) -> list[Slot]:
        import bitsandbytes as bnb

        if not isinstance(layer, bnb.nn.Linear4bit):
            return []
        state = getattr(layer.weight, "quant_state", None)
        holders: list[tuple[object, tuple[str, ...]]] = []
        if state is not None:
            holders.append((state, ("absmax", "code", "offset")))
            if state.state2 is not None:
                holders.append((state.state2, ("absmax", "code")))
        return [
            (holder, attribute)
            for holder, attributes in holders
            for attribute in attributes
            if isinstance(getattr(holder, attribute, None), torch.Tensor)
        ]


def _mark(module: torch.nn.Module, layers: Iterator[torch.nn.Module]) -> None:
    for layer in layers:
        setattr(layer, MARK, True)


def _marked(layer: torch.nn.Module) -> bool:
    return getattr(layer, MARK, False)


class FP8Layerwise(Backend):
    """diffusers' layerwise casting of the transformer: every Linear (and conv) weight and
    bias stored as float8_e4m3fn (one byte), cast to bf16 per layer as it runs; the
    layers the model names (``pos_embed``, ``norm``) stay bf16. T5 stays bf16 (the seed
    blog casts the transformer only)."""

    name = "fp8-layerwise"
    quantized = True
    STORAGE = torch.float8_e4m3fn

    def load_component(
        self, component: str, source: Path, device: torch.device, device_map: dict[str, Any]
    ) -> torch.nn.Module:
        module = super().load_component(component, source, device, device_map)
        if component == "transformer":
            module.enable_layerwise_casting(storage_dtype=self.STORAGE, compute_dtype=DTYPE)
        return module

    def quantize_on_meta(self, component: str, module: torch.nn.Module) -> None:
        if component == "transformer":
            module.enable_layerwise_casting(storage_dtype=self.STORAGE, compute_dtype=DTYPE)
            _mark(module, (m for m in module.modules() if _casts(m)))

    def storage_delta(self, layer: torch.nn.Module) -> int | None:
        if not _marked(layer):
            return None
        return -sum(p.numel() for p in layer.parameters(recurse=False))  # 2 bytes -> 1


def _casts(layer: torch.nn.Module) -> bool:
    """Whether diffusers' layerwise casting hook is on ``layer``."""
    registry = getattr(layer, "_diffusers_hook", None)
    return registry is not None and registry.get_hook("layerwise_casting") is not None


class GGUF(Backend):
    """A GGUF transformer made from the BF16 weights by ``core.checkpoints.gguf`` and
    loaded with ``from_single_file`` + ``GGUFQuantizationConfig``: each Linear whose rows
    are whole 32-value blocks holds the packed blocks (``GGUFLinear``, dequantized to bf16
    as it runs); the rest is kept. T5 stays bf16 (the seed blog quantizes the transformer)."""

    quantized = True
    group_offload = False  # GGUFParameter's quant_type does not survive a .data move
    quant_type = ""
    BLOCK = 32

    def load_component(
        self, component: str, source: Path, device: torch.device, device_map: dict[str, Any]
    ) -> torch.nn.Module:
        if component != "transformer":
            return super().load_component(component, source, device, device_map)
        from diffusers import GGUFQuantizationConfig

        from core.checkpoints.gguf import cached_transformer_gguf

        path = cached_transformer_gguf(source, self.quant_type)
        return FluxTransformer2DModel.from_single_file(
            str(path),
            config=str(source),
            subfolder="transformer",
            quantization_config=GGUFQuantizationConfig(compute_dtype=DTYPE),
            torch_dtype=DTYPE,
            device_map=device_map,
        )

    def quantize_on_meta(self, component: str, module: torch.nn.Module) -> None:
        if component == "transformer":
            _mark(
                module,
                (
                    m
                    for m in module.modules()
                    if isinstance(m, torch.nn.Linear) and m.in_features % self.BLOCK == 0
                ),
            )

    def block_bytes(self) -> int:
        import gguf

        return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[self.quant_type.upper()]][1]

    def storage_delta(self, layer: torch.nn.Module) -> int | None:
        if not _marked(layer):
            return None
        n = layer.weight.numel()
        return n // self.BLOCK * self.block_bytes() - n * BF16_BYTES


class GGUFQ8(GGUF):
    """Q8_0: blocks of 32 int8 values and one float16 scale (34 bytes)."""

    name = "gguf-q8_0"
    quant_type = "q8_0"


class GGUFQ4(GGUF):
    """Q4_1: blocks of 32 4-bit values, a float16 scale and a float16 minimum (20 bytes)."""

    name = "gguf-q4_1"
    quant_type = "q4_1"


class TorchAo(Backend):
    """torchao weight-only quantization through diffusers' and transformers'
    ``TorchAoConfig``, of the transformer and T5 (as the seed blog does). Each quantized
    Linear's weight becomes a torchao tensor subclass whose parts (``qdata``, ``scale``,
    ...) are what is stored."""

    quantized = True
    group_offload = False  # a tensor subclass's parts are not moved by .data swaps

    def ao_config(self) -> Any:
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()

    def load_configs(self) -> tuple[Any, Any]:
        from diffusers import TorchAoConfig as DiffusersTorchAoConfig
        from transformers import TorchAoConfig as TransformersTorchAoConfig

        return DiffusersTorchAoConfig(self.ao_config()), TransformersTorchAoConfig(self.ao_config())

    def pipeline_config(self) -> Any:
        from diffusers import PipelineQuantizationConfig

        diffusers_config, transformers_config = self.load_configs()
        return PipelineQuantizationConfig(
            quant_mapping={"transformer": diffusers_config, "text_encoder_2": transformers_config}
        )

    def load_component(
        self, component: str, source: Path, device: torch.device, device_map: dict[str, Any]
    ) -> torch.nn.Module:
        # diffusers' TorchAoQuantizer (0.42.1) reads a device map naming "cpu" as CPU
        # offload and leaves every weight so mapped unquantized; on the CPU the model
        # loads there anyway, so no map is passed (as the seed blog's calls pass none).
        if device.type == "cpu":
            with self.loading(device):
                return _from_pretrained(component, source, self.load_configs(), None)
        return super().load_component(component, source, device, device_map)

    def quantize_on_meta(self, component: str, module: torch.nn.Module) -> None:
        # Every Linear, T5's ``wo`` too: unlike bitsandbytes, transformers' torchao
        # quantizer does not keep ``_keep_in_fp32_modules`` out when loading in bf16.
        _mark(module, (m for m in module.modules() if isinstance(m, torch.nn.Linear)))

    # int8 weight-only: int8 values, one float32 scale and one int8 zero point per row.
    def storage_delta(self, layer: torch.nn.Module) -> int | None:
        if not _marked(layer):
            return None
        n = layer.weight.numel()
        return n - n * BF16_BYTES + layer.out_features * (4 + 1)


class TorchAoInt8(TorchAo):
    name = "torchao-int8"


class TorchAoFP8(TorchAo):
    """float8 weight-only: needs a CUDA GPU of compute capability 8.9 or newer."""

    name = "torchao-fp8"

    def ao_config(self) -> Any:
        from torchao.quantization import Float8WeightOnlyConfig

        return Float8WeightOnlyConfig()

    def check_device(self, device: torch.device, variant: str) -> None:
        if device.type != "cuda":
            raise InvalidSettingError(
                f"variant {variant!r} (torchao float8 weight-only) runs on a CUDA GPU of "
                f"compute capability 8.9 or newer (Ada, Hopper), not on {device.type}; "
                "leave it out of --variants here"
            )
        if torch.cuda.get_device_capability(device) < (8, 9):
            raise InvalidSettingError(
                f"variant {variant!r} (torchao float8 weight-only) needs compute capability "
                f"8.9 or newer; this GPU has {torch.cuda.get_device_capability(device)}"
            )

    # float8 weight-only: one byte a value and one float32 scale per row.
    def storage_delta(self, layer: torch.nn.Module) -> int | None:
        if not _marked(layer):
            return None
        n = layer.weight.numel()
        return n - n * BF16_BYTES + layer.out_features * 4


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(),
        LLMInt8(),
        NF4(),
        FP8Layerwise(),
        GGUFQ8(),
        GGUFQ4(),
        TorchAoInt8(),
        TorchAoFP8(),
    )
}


def backend(quantization: str) -> Backend:
    """The backend of a quantization name (``VARIANTS[name].quantization``)."""
    if quantization not in BACKENDS:
        raise ValueError(f"unknown quantization {quantization!r}")
    return BACKENDS[quantization]


def quantized_backends() -> tuple[Backend, ...]:
    """Every backend that quantizes, in registry order."""
    return tuple(b for b in BACKENDS.values() if b.quantized)


def state_slots(layer: torch.nn.Module) -> Iterator[Slot]:
    """Where ``layer`` holds tensors besides its parameters and buffers, whichever backend
    it belongs to."""
    for candidate in BACKENDS.values():
        yield from candidate.state_slots(layer)


def stored_tensors(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """The tensors that hold ``tensor``'s bytes: itself, or, for a tensor subclass that
    wraps others (torchao's quantized weights), its parts, recursively. A wrapper's own
    ``untyped_storage`` reports its logical (bf16) size, not what is stored."""
    if not is_traceable_wrapper_subclass(tensor):
        yield tensor
        return
    names, _ = tensor.__tensor_flatten__()
    for name in names:
        yield from stored_tensors(getattr(tensor, name))


def quantization_configs(quantization: str) -> tuple[Any, Any]:
    """The (diffusers, transformers) config pair of a variant, or (None, None)."""
    return backend(quantization).load_configs()
