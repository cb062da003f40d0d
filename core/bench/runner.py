"""Running the benchmark: each variant standalone, then all of them in the engine.

Two ways, in one run, with warm-up excluded and several repeats (median, min, max):

- **standalone** — the seed notebook's recipe: a fresh pipeline of one variant alone
  (transformer and T5 quantized, whole pipeline on the device), its memory after loading
  and its peak during a generation, then freed before the next variant;
- **engine** — all variants loaded together around shared components with the app's
  placement policy (``core.engine.loading.load_models``), as the app runs them.

Timers are synchronized and peaks reset per call (``core.engine.measure``). Results are
written after every variant (``core.bench.report``), so a run cut short keeps what finished.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxPipeline
from PIL import Image

from core.bench.goals import compare_with_baseline, evaluate_goals
from core.bench.report import write_figure, write_results
from core.bench.roofline import compute_floor, copy_rates, matmul_rate, transformer_shape
from core.bench.rows import BenchmarkSettings, Row, machine_info
from core.checkpoints.synthetic import SYNTHETIC_NOTE, ensure_synthetic_checkpoint
from core.config import VARIANTS
from core.engine import int8
from core.engine.backends import (
    DTYPE,
    QUANTIZED_COMPONENTS,
    allow_cpu_quantization,
    backend,
)
from core.engine.generation import Engine, pipeline_arguments
from core.engine.loading import load_models, resolve_source
from core.engine.measure import (
    Measurement,
    fresh_peak,
    measure,
    memory_now,
    release_memory,
    synchronize,
    tensor_bytes,
)
from core.engine.placement import gpu_budget_bytes
from core.errors import GenerationOutOfMemoryError, LoadOutOfMemoryError, SpotError
from core.limits import GenerationSettings
from core.records import VariantResult

logger = logging.getLogger(__name__)


# --- Running ------------------------------------------------------------------------------


Moves = dict[str, list[tuple[int, float]]]  # variant -> (bytes on, seconds) per generation


def _generate_repeats(
    engine: Engine, bench: BenchmarkSettings
) -> tuple[dict[str, list[VariantResult]], dict[str, Image.Image], Moves]:
    """Warm up (not measured), then ``repeats`` measured generations of every variant.

    Also returns each variant's moves per measured generation: (bytes brought onto the
    device, seconds of its moves both ways), its own modules and resident blocks.
    """
    warm = bench.generation.with_(steps=bench.warmup_steps)
    for index in range(bench.warmup):
        logger.info("warm-up %d/%d (%d steps)", index + 1, bench.warmup, warm.steps)
        engine.generate(bench.prompt, warm)
    engine.models.take_moves()  # loading's and warm-up's moves are not measured
    results: dict[str, list[VariantResult]] = {v: [] for v in engine.models.variants}
    images: dict[str, Image.Image] = {}
    moves: Moves = {v: [] for v in engine.models.variants}
    for index in range(bench.repeats):
        generation = engine.generate(bench.prompt, bench.generation)
        moved = engine.models.take_moves()
        for variant, result in generation.results.items():
            results[variant].append(result)
            images[variant] = result.image
            own = moved.get(variant, {})
            moves[variant].append(
                (
                    int(own.get("on", {}).get("bytes", 0)),
                    sum(float(d.get("seconds", 0.0)) for d in own.values()),
                )
            )
        logger.info(
            "repeat %d/%d: %s",
            index + 1,
            bench.repeats,
            ", ".join(f"{v} {r.seconds:.2f} s" for v, r in generation.results.items()),
        )
    return results, images, moves


def _fill_moves(row: Row, moves: list[tuple[int, float]]) -> None:
    """The row's median moves per generation; nothing when the variant moved nothing."""
    if not moves or not any(nbytes for nbytes, _ in moves):
        return
    row.moved_bytes = int(statistics.median(nbytes for nbytes, _ in moves))
    row.move_seconds = statistics.median(seconds for _, seconds in moves)


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
    row.activation_peak_bytes = peak([r.activation_peak_bytes for r in results])
    row.standalone_peak_bytes = peak([r.standalone_peak_bytes for r in results])


def _failure(row: Row, exc: BaseException) -> Row:
    """Record the failure in ``row``; the caller releases memory once the exception is gone."""
    out_of_memory = isinstance(
        exc, torch.OutOfMemoryError | GenerationOutOfMemoryError | LoadOutOfMemoryError
    )
    row.status = "oom" if out_of_memory else "failed"
    row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    logger.warning("%s %s: %s", row.mode, row.variant, row.error)
    return row


def seed_recipe(folder: Path, variant: str, device: torch.device, offload: str) -> FluxPipeline:
    """The seed notebook's pipeline of one variant, in plain diffusers: one
    ``FluxPipeline.from_pretrained`` with a ``PipelineQuantizationConfig`` quantizing the
    transformer and T5, then the whole pipeline ``.to(device)`` — or, under
    ``--offload model``, ``enable_model_cpu_offload`` (the seed's offload rows). No
    sharing, no placement plan, no pinned copies: the reference the engine is held to.

    A backend that ``PipelineQuantizationConfig`` cannot express (a GGUF single file,
    layerwise casting) loads its own components the way the seed blog does, through
    ``Backend.load_component`` (``from_single_file`` with ``GGUFQuantizationConfig``; bf16
    then ``enable_layerwise_casting``), and ``from_pretrained`` takes them as given."""
    quantized = backend(VARIANTS[variant].quantization)
    config = quantized.pipeline_config()
    own: dict[str, torch.nn.Module] = {}
    if quantized.quantized and config is None:
        device_map = {"": str(device) if device.type == "cpu" else device.index or 0}
        own = {
            name: quantized.load_component(name, folder, device, device_map)
            for name in QUANTIZED_COMPONENTS
        }
    with allow_cpu_quantization(device):  # the CPU workaround; a no-op on CUDA
        pipe = FluxPipeline.from_pretrained(folder, quantization_config=config, dtype=DTYPE, **own)
    if offload == "model" and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _recipe_generate(
    pipe: FluxPipeline, bench: BenchmarkSettings, settings: GenerationSettings
) -> tuple[Image.Image, Measurement]:
    with measure(bench.device) as measured, torch.inference_mode():
        image = pipe(
            bench.prompt,
            **pipeline_arguments(bench.spec, settings),
            generator=torch.Generator("cpu").manual_seed(settings.seed),
        ).images[0]
    return image, measured


def run_standalone(
    bench: BenchmarkSettings, folder: Path, variant: str
) -> tuple[Row, Image.Image | None]:
    """One variant alone by the seed's recipe (``seed_recipe``): loaded fresh, measured as
    the seed measured (memory after loading; ``max_memory_reserved`` during a generation),
    and freed before returning."""
    device = bench.device
    row = Row(variant=variant, mode="standalone", placement="seed recipe")
    image = None
    pipe = None
    int8.warn_once()
    fresh_peak(device)
    try:
        started = time.perf_counter()
        pipe = seed_recipe(folder, variant, device, bench.offload)
        synchronize(device)
        row.load_seconds = time.perf_counter() - started
        if bench.offload == "model" and device.type == "cuda":
            row.placement = "seed recipe, enable_model_cpu_offload"
        loaded = memory_now(device)
        row.loaded_allocated_bytes = loaded["allocated"]
        row.loaded_reserved_bytes = loaded["reserved"]
        row.loaded_rss_bytes = loaded["rss"]
        warm = bench.generation.with_(steps=bench.warmup_steps)
        for _ in range(bench.warmup):
            _recipe_generate(pipe, bench, warm)
        measured = []
        for _ in range(bench.repeats):
            image, figures = _recipe_generate(pipe, bench, bench.generation)
            measured.append(figures)
        row.seconds = [m.seconds for m in measured]
        # Weighed after the calls, as the engine weighs them: on the CPU, bitsandbytes
        # repacks NF4's quantization state at its first forward.
        row.weight_bytes = tensor_bytes([pipe.transformer, pipe.text_encoder_2])
        row.shared_weight_bytes = tensor_bytes([pipe.text_encoder, pipe.vae])
        row.peak_allocated_bytes = _largest([m.peak_allocated_bytes for m in measured])
        row.peak_reserved_bytes = _largest([m.peak_reserved_bytes for m in measured])
        row.peak_rss_bytes = _largest([m.peak_rss_bytes for m in measured])
        row.activation_peak_bytes = _largest([m.activation_peak_bytes for m in measured])
        # The seed's "peak" is max_memory_reserved itself: the figure the engine's alone
        # estimate is held to.
        row.standalone_peak_bytes = row.peak_reserved_bytes
    except (torch.OutOfMemoryError, SpotError) as exc:
        _failure(row, exc)
    finally:
        # Drop every reference to the pipeline before the next variant loads.
        pipe = None
        release_memory(device)
    if device.type == "cuda":
        row.allocated_after_free_bytes = int(torch.cuda.memory_allocated(device))
    return row, image


def _largest(values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def run_engine(
    bench: BenchmarkSettings, folder: Path
) -> tuple[list[Row], dict[str, Any], dict[str, Image.Image]]:
    """All variants around shared components with the app's placement, as the app runs."""
    device = bench.device
    rows = [Row(variant=v, mode="engine") for v in bench.variants]
    summary: dict[str, Any] = {"status": "ok"}
    images: dict[str, Image.Image] = {}
    before = fresh_peak(device)
    try:
        started = time.perf_counter()
        models = load_models(
            bench.spec,
            variants=bench.variants,
            device=str(device),
            offload=bench.offload,
            max_gpu_memory_gb=bench.max_gpu_memory_gb,
            max_host_memory_gb=bench.max_host_memory_gb,
            source=folder,
        )
        summary["load_seconds"] = time.perf_counter() - started
        loaded = memory_now(device)
        summary["placement"] = models.placement
        summary["plan"] = {
            "per_variant": dict(models.plan.per_variant),
            "reason": models.plan.reason,
            "residency": list(models.plan.residency),
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
        results, images, moves = _generate_repeats(engine, bench)
        for row in rows:
            _fill_from_results(row, results[row.variant])
            _fill_moves(row, moves[row.variant])
            placed = models.plan.variants[row.variant]
            if placed.mode == "group":
                row.streamed_bytes_per_step = placed.streamed_bytes
        per_generation = [
            sum(results[v][i].seconds for v in bench.variants) for i in range(bench.repeats)
        ]
        summary["trio_seconds"] = per_generation
        summary["trio_seconds_median"] = statistics.median(per_generation)
    except (torch.OutOfMemoryError, SpotError) as exc:
        for row in rows:
            if row.status == "ok" and not row.seconds:
                _failure(row, exc)
        summary["status"] = rows[0].status
        summary["error"] = rows[0].error
    finally:
        engine = models = None  # type: ignore[assignment]
        release_memory(device)
    return rows, summary, images


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
    results["copy_rates"] = copy_rates(device)
    shape = transformer_shape(folder)
    results["floor"] = compute_floor(shape, bench.generation, results["matmul"]["tflops"])
    results["floor"]["matmul"] = results["matmul"]["label"]
    rows: list[Row] = []
    images: dict[str, Image.Image] = {}
    engine_summary: dict[str, Any] | None = None

    pinned_rate = results["copy_rates"]["pinned_to_device"]  # GB/s, None off CUDA
    baseline_results = json.loads(baseline.read_text()) if baseline is not None else None

    def save() -> None:
        for row in rows:
            if row.variant == "bf16" and row.seconds_median:
                row.floor_ratio = row.seconds_median / results["floor"]["seconds"]
            if pinned_rate:
                if row.moved_bytes:
                    row.move_floor_seconds = row.moved_bytes / (pinned_rate * 1e9)
                if row.streamed_bytes_per_step:
                    streamed = row.streamed_bytes_per_step * bench.generation.steps
                    row.stream_floor_seconds = streamed / (pinned_rate * 1e9)
        results["rows"] = [r.record() for r in rows]
        results["engine"] = engine_summary
        results["goals"] = evaluate_goals(rows, engine_summary, bench, baseline_results)
        if baseline is not None:
            results["baseline"] = compare_with_baseline(rows, baseline, results["settings"])
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
