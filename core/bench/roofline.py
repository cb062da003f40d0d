"""The roofline: the device's dense matmul rate and the transformer's compute floor.

The floor is the time the transformer's FLOPs alone would take at the measured matmul
rate (FULLSCALE.md): a lower bound on a BF16 generation, which the benchmark reports each
BF16 generation against.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from core.engine.measure import release_memory, synchronize
from core.limits import GenerationSettings

# Image tokens per side: the VAE downsamples 8x and the transformer packs 2x2 patches.
PIXELS_PER_TOKEN = 16


def matmul_rate(device: torch.device) -> dict[str, Any]:
    """The dense matmul rate of ``device`` in TFLOP/s, measured with synchronized timers.

    CUDA: an 8192³ bf16 matmul (the figure the compute floor is divided by). CPU: a 1024³
    fp32 matmul, labelled as such — bf16 matmuls have no fast kernel on most CPUs.
    """
    if device.type == "cuda":
        n, dtype, iterations = 8192, torch.bfloat16, 50
    else:
        n, dtype, iterations = 1024, torch.float32, 5
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    for _ in range(2):
        torch.matmul(a, b)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        torch.matmul(a, b)
    synchronize(device)
    seconds = time.perf_counter() - started
    del a, b
    release_memory(device)
    tflops = 2 * n**3 * iterations / seconds / 1e12
    label = f"{str(dtype).removeprefix('torch.')} {n}x{n}x{n} matmul on {device.type}"
    return {"label": label, "n": n, "dtype": str(dtype), "tflops": tflops, "seconds": seconds}


def transformer_shape(folder: Path) -> dict[str, int]:
    """Parameters, width and depth of the folder's transformer, counted on the meta device."""
    from diffusers import FluxTransformer2DModel

    config = FluxTransformer2DModel.load_config(folder, subfolder="transformer")
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "inner_dim": int(config["num_attention_heads"] * config["attention_head_dim"]),
        "layers": int(config["num_layers"] + config["num_single_layers"]),
    }


def compute_floor(
    shape: dict[str, int], generation: GenerationSettings, tflops: float
) -> dict[str, Any]:
    """The transformer's FLOP per step and the floor in seconds at ``tflops`` (FULLSCALE.md).

    Linear layers: 2 x parameters x tokens; attention: 4 x tokens² x width per layer
    (QKᵀ and AV). Tokens = image tokens (side/16)² + text tokens (max_sequence_length).
    Text encoders and the VAE are not counted: the floor is a lower bound.
    """
    image_tokens = (generation.width // PIXELS_PER_TOKEN) * (generation.height // PIXELS_PER_TOKEN)
    tokens = image_tokens + generation.max_sequence_length
    linear = 2 * shape["parameters"] * tokens
    attention = 4 * tokens**2 * shape["inner_dim"] * shape["layers"]
    per_step = linear + attention
    return {
        "transformer_parameters": shape["parameters"],
        "image_tokens": image_tokens,
        "text_tokens": generation.max_sequence_length,
        "flop_per_step": float(per_step),
        "flop_per_image": float(per_step * generation.steps),
        "seconds": per_step * generation.steps / (tflops * 1e12),
    }


# Bytes of one timed copy: large enough that the link, not the call, is timed.
COPY_BYTES = 2**30


def copy_rates(device: torch.device, nbytes: int = COPY_BYTES) -> dict[str, Any]:
    """Host↔device copy rates in GB/s (10^9 bytes a second), measured in this run.

    Four figures, each the best of two synchronized copies of ``nbytes``: host pageable →
    device, device → pageable host (a fresh host tensor, as ``module.to("cpu")`` makes),
    and the same both ways with a pinned host buffer. Off CUDA there is no link to
    measure: every rate is None and ``skipped`` says why.
    """
    names = ("pageable_to_device", "device_to_pageable", "pinned_to_device", "device_to_pinned")
    if device.type != "cuda":
        return {
            "bytes": nbytes,
            **dict.fromkeys(names),
            "skipped": f"no accelerator link on {device.type}: copy rates are GPU-only",
        }
    rates = _measure_copies(device, nbytes)
    release_memory(device)  # the buffers went with the helper's frame
    return {"bytes": nbytes, **rates, "skipped": None}


def _measure_copies(device: torch.device, nbytes: int) -> dict[str, float]:
    pageable = torch.empty(nbytes, dtype=torch.uint8)
    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    on_device = torch.empty(nbytes, dtype=torch.uint8, device=device)

    def best(copy: Any) -> float:
        times = []
        for _ in range(2):
            synchronize(device)
            started = time.perf_counter()
            copy()
            synchronize(device)
            times.append(time.perf_counter() - started)
        return nbytes / min(times) / 1e9

    return {
        "pageable_to_device": best(lambda: on_device.copy_(pageable)),
        "device_to_pageable": best(lambda: on_device.to("cpu")),
        "pinned_to_device": best(lambda: on_device.copy_(pinned, non_blocking=True)),
        "device_to_pinned": best(lambda: pinned.copy_(on_device, non_blocking=True)),
    }
