"""The benchmark's vocabulary: the settings of one run and one result row per variant × mode.

Shared by the runner (which fills rows) and the goals (which judge them), so neither
imports the other.
"""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.config import ModelSpec
from core.engine.generation import describe_device, library_versions
from core.limits import GenerationSettings

# --- Settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSettings:
    """One benchmark run: what to load, how to place it and how to generate."""

    spec: ModelSpec
    variants: tuple[str, ...]
    generation: GenerationSettings
    prompt: str
    repeats: int
    warmup: int
    warmup_steps: int
    offload: str
    max_gpu_memory_gb: float | None
    device: torch.device
    modes: tuple[str, ...]
    cache_dir: Path | None = None
    max_host_memory_gb: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "variants": list(self.variants),
            "prompt": self.prompt,
            **asdict(self.generation),
            "repeats": self.repeats,
            "warmup": self.warmup,
            "warmup_steps": self.warmup_steps,
            "offload": self.offload,
            "max_gpu_memory_gb": self.max_gpu_memory_gb,
            "max_host_memory_gb": self.max_host_memory_gb,
            "modes": list(self.modes),
        }


# --- Results ------------------------------------------------------------------------------


@dataclass
class Row:
    """One variant in one mode. Bytes are bytes, seconds are seconds; None = not measured.

    ``seconds`` holds every measured (post-warm-up) generation; ``status`` is ``ok``,
    ``oom`` (out of accelerator memory, at load or during a generation) or ``failed``.
    Memory: ``standalone_peak_bytes`` is in the seed's terms (``max_memory_reserved``):
    the seed recipe's own reserved peak in standalone mode, the engine's estimate of it in
    engine mode; ``activation_peak_bytes`` is allocated-based. Moves (offloaded variants,
    per generation, median): ``moved_bytes`` host → device and ``move_seconds`` both ways
    beside ``move_floor_seconds`` = moved bytes ÷ the pinned copy rate measured in the run;
    a group-offloaded variant also streams ``streamed_bytes_per_step`` inside its steps
    (overlapped with compute), whose floor is ``stream_floor_seconds`` per generation.
    """

    variant: str
    mode: str
    placement: str = ""
    status: str = "ok"
    error: str | None = None
    load_seconds: float | None = None
    weight_bytes: int | None = None
    shared_weight_bytes: int | None = None
    loaded_allocated_bytes: int | None = None
    loaded_reserved_bytes: int | None = None
    loaded_rss_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None
    activation_peak_bytes: int | None = None
    standalone_peak_bytes: int | None = None
    allocated_after_free_bytes: int | None = None
    seconds: list[float] = field(default_factory=list)
    floor_ratio: float | None = None
    moved_bytes: int | None = None
    move_seconds: float | None = None
    move_floor_seconds: float | None = None
    streamed_bytes_per_step: int | None = None
    stream_floor_seconds: float | None = None

    @property
    def seconds_median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds_median"] = self.seconds_median
        out["seconds_min"] = min(self.seconds) if self.seconds else None
        out["seconds_max"] = max(self.seconds) if self.seconds else None
        return out


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": describe_device(device),
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **library_versions(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["device_total_bytes"] = int(props.total_memory)
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["device_total_bytes"] = None
    return info
