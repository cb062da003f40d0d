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

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from core.bench.goals import compare_with_baseline, evaluate_goals
from core.bench.report import write_figure, write_results
from core.bench.roofline import compute_floor, matmul_rate, transformer_shape
from core.bench.rows import BenchmarkSettings, Row, machine_info
from core.checkpoints.synthetic import SYNTHETIC_NOTE, ensure_synthetic_checkpoint
from core.engine.generation import Engine
from core.engine.loading import load_models, resolve_source
from core.engine.measure import fresh_peak, memory_now, release_memory
from core.engine.placement import gpu_budget_bytes
from core.errors import GenerationOutOfMemoryError, LoadOutOfMemoryError, SpotError
from core.records import VariantResult

logger = logging.getLogger(__name__)


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
    fresh_peak(device)
    try:
        started = time.perf_counter()
        models = load_models(
            bench.spec,
            variants=(variant,),
            device=str(device),
            offload=_standalone_offload(bench.offload),
            max_gpu_memory_gb=bench.max_gpu_memory_gb,
            max_host_memory_gb=bench.max_host_memory_gb,
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
        _failure(row, exc)
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
        results["goals"] = evaluate_goals(rows, engine_summary, bench)
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
