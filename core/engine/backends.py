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
def allow_cpu_quantization(device: torch.device) -> Iterator[None]:
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
