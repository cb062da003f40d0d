"""The benchmark: memory and time of every variant, standalone and inside the engine.

Two ways, in one run, with warm-up excluded and several repeats (median, min, max):

- **standalone** — the seed notebook's recipe: a fresh pipeline of one variant alone
  (transformer and T5 quantized, whole pipeline on the device), its memory after loading
  and its peak during a generation, then freed before the next variant;
- **engine** — all variants loaded together around shared components with the app's
  placement policy (``core.engine.models.load_models``), as the app runs them.

Timers are synchronized and peaks reset per call (``core.engine.measure``). On CUDA the run also
measures the bf16 matmul rate (an 8192³ matmul) and reports each BF16 generation against
the transformer's compute floor (FULLSCALE.md); on the CPU a smaller fp32 matmul gives a
labelled figure. Writes ``results.json``, ``results.csv`` (one row per variant × mode) and
``comparison.png`` into ``--out``, and prints a short table.

Command line (CPU smoke test; see README "Performance" for the full-scale GPU commands)::

    python -m core.bench.benchmark --model tiny --out data/benchmark/tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from core.bench.report import format_table, write_figure, write_results
from core.checkpoints.synthetic import SYNTHETIC_NOTE, ensure_synthetic_checkpoint
from core.config import (
    BENCHMARK_MODES,
    OFFLOAD_CHOICES,
    VARIANT_NAMES,
    GenerationSettings,
    ModelSpec,
    check_max_gpu_memory,
    check_offload,
    check_variants,
    resolve_model,
    validate_prompt,
)
from core.engine.generation import Engine, describe_device, library_versions
from core.engine.measure import release_memory, rss_bytes, synchronize
from core.engine.models import cuda_available, gpu_budget_bytes, load_models, resolve_source
from core.errors import GenerationOutOfMemoryError, InvalidSettingError, SpotError
from core.records import VariantResult

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a red fox sitting in fresh snow at sunrise, detailed fur, soft light"
# Goals of the project (README "Performance"), checked on CUDA only.
GOAL_ENGINE_VS_STANDALONE = 1.05
GOAL_FLOOR_RATIO = 1.3
GOAL_RESIDENT_TRIO_BYTES = 70 * 10**9
GOAL_CAP_GB = 24.0
# Image tokens per side: the VAE downsamples 8x and the transformer packs 2x2 patches.
PIXELS_PER_TOKEN = 16


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
            "modes": list(self.modes),
        }


# --- Results ------------------------------------------------------------------------------


@dataclass
class Row:
    """One variant in one mode. Bytes are bytes, seconds are seconds; None = not measured.

    ``seconds`` holds every measured (post-warm-up) generation; ``status`` is ``ok``,
    ``oom`` (out of accelerator memory, at load or during a generation) or ``failed``.
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
    allocated_after_free_bytes: int | None = None
    seconds: list[float] = field(default_factory=list)
    floor_ratio: float | None = None

    @property
    def seconds_median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds_median"] = self.seconds_median
        out["seconds_min"] = min(self.seconds) if self.seconds else None
        out["seconds_max"] = max(self.seconds) if self.seconds else None
        return out


def memory_now(device: torch.device) -> dict[str, int | None]:
    """Memory held right now: allocated / reserved bytes on CUDA, process RSS on the CPU."""
    synchronize(device)
    if device.type == "cuda":
        return {
            "allocated": int(torch.cuda.memory_allocated(device)),
            "reserved": int(torch.cuda.memory_reserved(device)),
            "rss": None,
        }
    return {"allocated": None, "reserved": None, "rss": rss_bytes()}


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


# --- Compute floor ------------------------------------------------------------------------


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


# --- Running ------------------------------------------------------------------------------


def _generate_repeats(
    engine: Engine, bench: BenchmarkSettings
) -> tuple[dict[str, list[VariantResult]], dict[str, Image.Image]]:
    """Warm up (not measured), then ``repeats`` measured generations of every variant."""
    warm = bench.generation.with_(steps=bench.warmup_steps)
    for index in range(bench.warmup):
        logger.info("warm-up %d/%d (%d steps)", index + 1, bench.warmup, warm.steps)
        engine.generate(bench.prompt, warm)
    results: dict[str, list[VariantResult]] = {v: [] for v in engine.models.variants}
    images: dict[str, Image.Image] = {}
    for index in range(bench.repeats):
        generation = engine.generate(bench.prompt, bench.generation)
        for variant, result in generation.results.items():
            results[variant].append(result)
            images[variant] = result.image
        logger.info(
            "repeat %d/%d: %s",
            index + 1,
            bench.repeats,
            ", ".join(f"{v} {r.seconds:.2f} s" for v, r in generation.results.items()),
        )
    return results, images


def _fill_from_results(row: Row, results: list[VariantResult]) -> None:
    row.seconds = [r.seconds for r in results]
    first = results[0]
    row.weight_bytes = first.weight_bytes
    row.shared_weight_bytes = first.shared_weight_bytes

    def peak(values: list[int | None]) -> int | None:
        present = [v for v in values if v is not None]
        return max(present) if present else None

    row.peak_allocated_bytes = peak([r.peak_allocated_bytes for r in results])
    row.peak_reserved_bytes = peak([r.peak_reserved_bytes for r in results])
    row.peak_rss_bytes = peak([r.peak_rss_bytes for r in results])


def _failure(row: Row, exc: BaseException, device: torch.device) -> Row:
    out_of_memory = isinstance(exc, torch.OutOfMemoryError | GenerationOutOfMemoryError)
    row.status = "oom" if out_of_memory else "failed"
    row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    logger.warning("%s %s: %s", row.mode, row.variant, row.error)
    release_memory(device)
    return row


def _standalone_offload(offload: str) -> str:
    # The seed's recipe puts the whole pipeline on the GPU; an explicit offload is honoured
    # (the seed's "with enable_model_cpu_offload" rows).
    return "none" if offload == "auto" else offload


def run_standalone(
    bench: BenchmarkSettings, folder: Path, variant: str
) -> tuple[Row, Image.Image | None]:
    """One variant alone, loaded fresh, measured, and freed before returning."""
    device = bench.device
    row = Row(variant=variant, mode="standalone")
    image = None
    release_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        started = time.perf_counter()
        models = load_models(
            bench.spec,
            variants=(variant,),
            device=str(device),
            offload=_standalone_offload(bench.offload),
            max_gpu_memory_gb=bench.max_gpu_memory_gb,
            source=folder,
        )
        row.load_seconds = time.perf_counter() - started
        row.placement = models.placement
        loaded = memory_now(device)
        row.loaded_allocated_bytes = loaded["allocated"]
        row.loaded_reserved_bytes = loaded["reserved"]
        row.loaded_rss_bytes = loaded["rss"]
        engine = Engine(models)
        results, images = _generate_repeats(engine, bench)
        _fill_from_results(row, results[variant])
        image = images[variant]
    except (torch.OutOfMemoryError, SpotError) as exc:
        _failure(row, exc, device)
    finally:
        # Drop every reference to the pipeline before the next variant loads.
        engine = models = None  # type: ignore[assignment]
        release_memory(device)
    if device.type == "cuda":
        row.allocated_after_free_bytes = int(torch.cuda.memory_allocated(device))
    return row, image


def run_engine(
    bench: BenchmarkSettings, folder: Path
) -> tuple[list[Row], dict[str, Any], dict[str, Image.Image]]:
    """All variants around shared components with the app's placement, as the app runs."""
    device = bench.device
    rows = [Row(variant=v, mode="engine") for v in bench.variants]
    summary: dict[str, Any] = {"status": "ok"}
    images: dict[str, Image.Image] = {}
    release_memory(device)
    before = memory_now(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        started = time.perf_counter()
        models = load_models(
            bench.spec,
            variants=bench.variants,
            device=str(device),
            offload=bench.offload,
            max_gpu_memory_gb=bench.max_gpu_memory_gb,
            source=folder,
        )
        summary["load_seconds"] = time.perf_counter() - started
        loaded = memory_now(device)
        summary["placement"] = models.placement
        summary["plan"] = {
            "per_variant": dict(models.plan.per_variant),
            "reason": models.plan.reason,
            "budget_bytes": models.plan.budget_bytes,
        }
        summary["shared_weight_bytes"] = models.shared_weight_bytes()
        summary["weight_bytes"] = models.shared_weight_bytes() + sum(
            models.weight_bytes(v) for v in bench.variants
        )
        if device.type == "cuda":
            summary["resident_bytes"] = loaded["allocated"]
            summary["resident_reserved_bytes"] = loaded["reserved"]
            summary["load_peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        else:
            summary["resident_bytes"] = loaded["rss"]
            summary["rss_increase_bytes"] = (
                None
                if loaded["rss"] is None or before["rss"] is None
                else loaded["rss"] - before["rss"]
            )
        for row in rows:
            row.placement = models.plan.per_variant[row.variant]
            row.load_seconds = summary["load_seconds"]
            row.loaded_allocated_bytes = loaded["allocated"]
            row.loaded_reserved_bytes = loaded["reserved"]
            row.loaded_rss_bytes = loaded["rss"]
        engine = Engine(models)
        results, images = _generate_repeats(engine, bench)
        for row in rows:
            _fill_from_results(row, results[row.variant])
        per_generation = [
            sum(results[v][i].seconds for v in bench.variants) for i in range(bench.repeats)
        ]
        summary["trio_seconds"] = per_generation
        summary["trio_seconds_median"] = statistics.median(per_generation)
    except (torch.OutOfMemoryError, SpotError) as exc:
        for row in rows:
            if row.status == "ok" and not row.seconds:
                _failure(row, exc, device)
        summary["status"] = rows[0].status
        summary["error"] = rows[0].error
    finally:
        engine = models = None  # type: ignore[assignment]
        release_memory(device)
    return rows, summary, images


def _goals(
    rows: list[Row], engine: dict[str, Any] | None, bench: BenchmarkSettings
) -> dict[str, Any]:
    """The project's performance goals with the measured value and pass/fail (CUDA only)."""
    on_gpu = bench.device.type == "cuda"
    goals: dict[str, Any] = {}
    standalone = {r.variant: r.seconds_median for r in rows if r.mode == "standalone"}
    if (
        engine
        and engine.get("trio_seconds_median")
        and standalone
        and all(standalone.get(v) for v in bench.variants)
    ):
        ratio = engine["trio_seconds_median"] / sum(standalone[v] for v in bench.variants)
        goals["engine_vs_standalone"] = {
            "value": ratio,
            "goal": f"<= {GOAL_ENGINE_VS_STANDALONE}",
            "met": ratio <= GOAL_ENGINE_VS_STANDALONE if on_gpu else None,
        }
    floor_ratios = [r.floor_ratio for r in rows if r.variant == "bf16" and r.floor_ratio]
    if floor_ratios:
        best = min(floor_ratios)
        goals["bf16_vs_compute_floor"] = {
            "value": best,
            "goal": f"<= {GOAL_FLOOR_RATIO}",
            "met": best <= GOAL_FLOOR_RATIO if on_gpu else None,
        }
    if engine and engine.get("resident_bytes") is not None and on_gpu:
        value = engine["resident_bytes"]
        goals["resident_trio_bytes"] = {
            "value": value,
            "goal": f"<= {GOAL_RESIDENT_TRIO_BYTES}",
            "met": value <= GOAL_RESIDENT_TRIO_BYTES
            if engine.get("placement") == "resident"
            else None,
        }
    if bench.max_gpu_memory_gb is not None and bench.max_gpu_memory_gb <= GOAL_CAP_GB:
        engine_rows = [r for r in rows if r.mode == "engine"]
        if engine_rows:
            goals["trio_runs_under_cap"] = {
                "value": bench.max_gpu_memory_gb,
                "goal": f"all variants run with --max-gpu-memory {GOAL_CAP_GB:g}",
                "met": all(r.status == "ok" for r in engine_rows) if on_gpu else None,
            }
    return goals


def _baseline_comparison(
    rows: list[Row], baseline_path: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    """Seconds of this run against an earlier results.json (e.g. capped vs uncapped)."""
    baseline = json.loads(baseline_path.read_text())
    before = {(r["mode"], r["variant"]): r for r in baseline.get("rows", [])}
    ratios = {}
    for row in rows:
        old = before.get((row.mode, row.variant))
        if old and old.get("seconds_median") and row.seconds_median:
            ratios[f"{row.mode}/{row.variant}"] = row.seconds_median / old["seconds_median"]
    old_settings = baseline.get("settings", {})
    compared = ("steps", "width", "height", "guidance", "max_sequence_length")
    return {
        "path": str(baseline_path),
        "max_gpu_memory_gb": old_settings.get("max_gpu_memory_gb"),
        "same_generation_settings": all(old_settings.get(k) == settings[k] for k in compared),
        "seconds_ratio": ratios,
    }


def resolve_folder(bench: BenchmarkSettings) -> Path:
    if bench.spec.kind == "synthetic":
        return ensure_synthetic_checkpoint(bench.spec, bench.cache_dir)
    return resolve_source(bench.spec)


def run(bench: BenchmarkSettings, out: Path, baseline: Path | None = None) -> dict[str, Any]:
    """Run every mode of the benchmark, writing results into ``out`` as they come in."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = bench.device
    # Build (or find) the checkpoint before any cap: building is not part of the budget.
    folder = resolve_folder(bench)
    budget = gpu_budget_bytes(device, bench.max_gpu_memory_gb)
    results: dict[str, Any] = {
        "schema": 1,
        "model": bench.spec.name,
        "source": str(folder),
        "synthetic": bench.spec.kind == "synthetic",
        "note": SYNTHETIC_NOTE
        if bench.spec.kind == "synthetic"
        else (
            "tiny random-weight model: a smoke test of the code paths, not meaningful figures"
            if bench.spec.is_tiny
            else "real weights"
        ),
        "machine": machine_info(device),
        "settings": bench.summary(),
        "gpu_budget_bytes": budget,
        "units": "bytes and seconds; tables print GiB (2^30 bytes), as the seed's 'GB' were",
    }
    results["matmul"] = matmul_rate(device)
    shape = transformer_shape(folder)
    results["floor"] = compute_floor(shape, bench.generation, results["matmul"]["tflops"])
    results["floor"]["matmul"] = results["matmul"]["label"]
    rows: list[Row] = []
    images: dict[str, Image.Image] = {}
    engine_summary: dict[str, Any] | None = None

    def save() -> None:
        for row in rows:
            if row.variant == "bf16" and row.seconds_median:
                row.floor_ratio = row.seconds_median / results["floor"]["seconds"]
        results["rows"] = [r.record() for r in rows]
        results["engine"] = engine_summary
        results["goals"] = _goals(rows, engine_summary, bench)
        if baseline is not None:
            results["baseline"] = _baseline_comparison(rows, baseline, results["settings"])
        results["total_seconds"] = time.perf_counter() - started
        write_results(results, out)

    if "standalone" in bench.modes:
        for variant in bench.variants:
            logger.info("standalone %s", variant)
            row, image = run_standalone(bench, folder, variant)
            rows.append(row)
            if image is not None:
                images[variant] = image
            save()
    if "engine" in bench.modes:
        logger.info("engine: %s together", ", ".join(bench.variants))
        engine_rows, engine_summary, engine_images = run_engine(bench, folder)
        rows.extend(engine_rows)
        images.update(engine_images)  # the engine's images are the app's: show those
        save()
    save()
    write_figure(results, images, out / "comparison.png")
    return results


# --- Command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.benchmark",
        description="Memory and time of each variant, standalone and in the engine.",
    )
    parser.add_argument(
        "--model",
        default="auto",
        help="auto, tiny, synthetic-flux-dev, synthetic-flux-schnell, a hub id or a local folder",
    )
    parser.add_argument("--variants", default=",".join(VARIANT_NAMES), help="comma-separated")
    parser.add_argument("--steps", type=int, help="default: the model's (tiny: 4, dev: 50)")
    parser.add_argument("--size", type=int, help="square side in pixels (default: the model's)")
    parser.add_argument("--guidance", type=float, help="default: the model's")
    parser.add_argument("--max-sequence-length", type=int, help="default: the model's")
    parser.add_argument("--repeats", type=int, default=2, help="measured generations per mode")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up generations")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        help="steps of a warm-up generation, same size and prompt (default: --steps)",
    )
    parser.add_argument("--offload", choices=OFFLOAD_CHOICES, default="auto")
    parser.add_argument("--max-gpu-memory", type=float, metavar="GB", help="cap on GPU memory")
    parser.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--modes",
        default=",".join(BENCHMARK_MODES),
        help="standalone, engine or both (comma-separated)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="where synthetic checkpoints are built (data/models)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="an earlier results.json to compare seconds with"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchmarkSettings:
    """Validated settings from parsed flags; raises a SpotError subclass on bad input."""
    device = torch.device(args.device or ("cuda" if cuda_available() else "cpu"))
    if device.type == "cuda" and not cuda_available():
        raise InvalidSettingError("--device cuda was asked for, but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # as load_models places it
    spec = resolve_model(args.model, cuda_available=cuda_available())
    if spec.kind == "synthetic" and device.type != "cuda":
        # 16.6 B parameters: ~34 GB to build, 60+ GB of RAM for the trio, hours per image.
        raise InvalidSettingError(
            f"{spec.name} is a full-scale model for a GPU; on the CPU use --model tiny"
        )
    modes = tuple(m for m in BENCHMARK_MODES if m in {x.strip() for x in args.modes.split(",")})
    unknown = {x.strip() for x in args.modes.split(",")} - set(BENCHMARK_MODES)
    if unknown or not modes:
        raise InvalidSettingError(f"--modes must name {' and/or '.join(BENCHMARK_MODES)}")
    if args.repeats < 1 or args.warmup < 0 or (args.warmup_steps or 1) < 1:
        raise InvalidSettingError("--repeats and --warmup-steps must be >= 1, --warmup >= 0")
    generation = GenerationSettings.defaults(spec, args.seed)
    overrides = {
        "steps": args.steps,
        "guidance": args.guidance,
        "width": args.size,
        "height": args.size,
        "max_sequence_length": args.max_sequence_length,
    }
    generation = generation.with_(**{k: v for k, v in overrides.items() if v is not None})
    generation = generation.validate(spec)
    if args.baseline is not None and not args.baseline.is_file():
        raise InvalidSettingError(f"--baseline {args.baseline} does not exist")
    return BenchmarkSettings(
        spec=spec,
        variants=check_variants([v.strip() for v in args.variants.split(",") if v.strip()]),
        generation=generation,
        prompt=validate_prompt(args.prompt),
        repeats=args.repeats,
        warmup=args.warmup,
        warmup_steps=min(args.warmup_steps or generation.steps, generation.steps),
        offload=check_offload(args.offload),
        max_gpu_memory_gb=check_max_gpu_memory(args.max_gpu_memory),
        device=device,
        modes=modes,
        cache_dir=args.cache_dir,
    )


def _quiet_libraries() -> None:
    # bitsandbytes warns about the bf16 -> fp16 cast on every LLM.int8 matmul, and the
    # loaders draw progress bars: noise in a benchmark log.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    try:
        bench = settings_from_args(args)
        results = run(bench, args.out, baseline=args.baseline)
    except SpotError as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(format_table(results) + "\n")
    sys.stdout.write(f"wrote results.json, results.csv and comparison.png to {args.out}\n")
    # A variant that runs out of memory (under a cap) is a result, not a failed command.
    return 0 if any(r["status"] == "ok" for r in results["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
