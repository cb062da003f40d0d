"""The quantization backends' library calls: how each variant's components are loaded
quantized, and the one workaround that lets diffusers quantize on a CPU-only machine.

Loading (``core.engine.loading``) and placement (``core.engine.placement``, which sizes the
layers on the meta device with the same configurations) both ask this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from diffusers import BitsAndBytesConfig as DiffusersBnbConfig
from transformers import BitsAndBytesConfig as TransformersBnbConfig

DTYPE = torch.bfloat16


# Each quantization's bitsandbytes keyword arguments and diffusers' pipeline backend name.
_BITSANDBYTES: dict[str, tuple[str, dict[str, Any]]] = {
    "int8": ("bitsandbytes_8bit", {"load_in_8bit": True}),
    "nf4": (
        "bitsandbytes_4bit",
        {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": DTYPE},
    ),
}


def _bitsandbytes(quantization: str) -> tuple[str, dict[str, Any]]:
    if quantization not in _BITSANDBYTES:
        raise ValueError(f"unknown quantization {quantization!r}")
    return _BITSANDBYTES[quantization]


def quantization_configs(quantization: str) -> tuple[Any, Any]:
    """The (diffusers, transformers) BitsAndBytesConfig pair of a variant, or (None, None)."""
    if quantization == "none":
        return None, None
    _, kwargs = _bitsandbytes(quantization)
    return DiffusersBnbConfig(**kwargs), TransformersBnbConfig(**kwargs)


def pipeline_quantization_config(quantization: str) -> Any:
    """The seed's recipe: one ``PipelineQuantizationConfig`` quantizing the transformer
    and T5 with this variant's bitsandbytes settings, or None for "none"."""
    from diffusers import PipelineQuantizationConfig

    if quantization == "none":
        return None
    backend, kwargs = _bitsandbytes(quantization)
    return PipelineQuantizationConfig(
        quant_backend=backend,
        quant_kwargs=dict(kwargs),
        components_to_quantize=["transformer", "text_encoder_2"],
    )


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
