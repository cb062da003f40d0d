"""The project's performance goals (README "Performance"), judged from benchmark rows.

Goals are judged on CUDA only: on the CPU each goal's value is reported with ``met`` None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.bench.rows import BenchmarkSettings, Row

GOAL_ENGINE_VS_STANDALONE = 1.05
GOAL_FLOOR_RATIO = 1.3
GOAL_RESIDENT_TRIO_BYTES = 70 * 10**9
GOAL_CAP_GB = 24.0


def evaluate_goals(
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


def compare_with_baseline(
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
