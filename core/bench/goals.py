"""The project's performance goals (README "Performance"), judged from benchmark rows.

Goals are judged on CUDA only: on the CPU each goal's value is reported with ``met`` None,
and a goal that has no value there (copy rates, reserved memory) says why in ``skipped``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import VARIANT_NAMES

if TYPE_CHECKING:
    from core.bench.rows import BenchmarkSettings, Row

GOAL_ENGINE_VS_STANDALONE = 1.05
GOAL_FLOOR_RATIO = 1.3
GOAL_RESIDENT_TRIO_BYTES = 70 * 10**9
GOAL_CAP_GB = 24.0
# Each offloaded variant's moves take at most this many times bytes ÷ the pinned copy rate.
GOAL_MOVE_VS_LINK = 1.5
# The capped trio at this many steps takes at most this many times the resident trio.
GOAL_CAPPED_STEPS = 50
GOAL_CAPPED_VS_RESIDENT = 2.0
# The engine's alone-peak is within this share of the seed recipe's reserved peak.
GOAL_ALONE_VS_SEED = 0.03


def _skipped(goal: str, why: str) -> dict[str, Any]:
    return {"value": None, "goal": goal, "met": None, "skipped": why}


def evaluate_goals(
    rows: list[Row],
    engine: dict[str, Any] | None,
    bench: BenchmarkSettings,
    baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The project's performance goals with the measured value and pass/fail (CUDA only).

    ``baseline``: an earlier results.json (``--baseline``), for the capped trio's goal.
    """
    on_gpu = bench.device.type == "cuda"
    # The memory goal is the game's trio's (70 GB for BF16 + LLM.int8 + NF4 resident);
    # another set of variants is measured, not judged against it.
    trio = tuple(bench.variants) == VARIANT_NAMES
    goals: dict[str, Any] = {}
    goals |= _move_goals(rows, on_gpu)
    goals |= _alone_goals(rows, on_gpu)
    capped = _capped_goal(engine, bench, baseline, on_gpu)
    if capped is not None:
        goals["capped_trio_vs_resident"] = capped
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
    if engine and engine.get("resident_bytes") is not None and on_gpu and trio:
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


def _move_goals(rows: list[Row], on_gpu: bool) -> dict[str, Any]:
    """Per offloaded variant: its move seconds ÷ (bytes moved ÷ the pinned copy rate)."""
    goal = f"<= {GOAL_MOVE_VS_LINK} x bytes / pinned rate"
    goals: dict[str, Any] = {}
    for row in rows:
        if row.mode != "engine" or row.placement not in ("model", "group"):
            continue
        name = f"move_vs_link/{row.variant}"
        if not row.moved_bytes or row.move_seconds is None:
            continue
        if not row.move_floor_seconds:
            goals[name] = _skipped(goal, "no pinned copy rate measured (GPU only)")
            continue
        ratio = row.move_seconds / row.move_floor_seconds
        goals[name] = {
            "value": ratio,
            "goal": goal,
            "met": ratio <= GOAL_MOVE_VS_LINK if on_gpu else None,
            "moved_bytes": row.moved_bytes,
            "move_seconds": row.move_seconds,
            "floor_seconds": row.move_floor_seconds,
        }
    return goals


def _alone_goals(rows: list[Row], on_gpu: bool) -> dict[str, Any]:
    """Per variant: the engine's alone-peak against the seed recipe's reserved peak."""
    goal = f"within {GOAL_ALONE_VS_SEED:.0%} of the seed recipe's max_memory_reserved"
    recipe = {r.variant: r for r in rows if r.mode == "standalone" and r.status == "ok"}
    goals: dict[str, Any] = {}
    for row in rows:
        if row.mode != "engine" or row.variant not in recipe or row.status != "ok":
            continue
        name = f"alone_peak_vs_seed_recipe/{row.variant}"
        seed = recipe[row.variant].peak_reserved_bytes
        if not on_gpu or seed is None or row.standalone_peak_bytes is None:
            goals[name] = _skipped(
                goal, "reserved memory is CUDA's: on the CPU there is no per-variant peak"
            )
            continue
        share = row.standalone_peak_bytes / seed - 1
        goals[name] = {
            "value": share,
            "goal": goal,
            "met": abs(share) <= GOAL_ALONE_VS_SEED,
            "engine_bytes": row.standalone_peak_bytes,
            "seed_recipe_bytes": seed,
        }
    return goals


def _capped_goal(
    engine: dict[str, Any] | None,
    bench: BenchmarkSettings,
    baseline: dict[str, Any] | None,
    on_gpu: bool,
) -> dict[str, Any] | None:
    """The capped trio against the resident trio of ``baseline`` at the same settings;
    None when this run is not capped."""
    if bench.max_gpu_memory_gb is None or not engine or not engine.get("trio_seconds_median"):
        return None
    goal = (
        f"<= {GOAL_CAPPED_VS_RESIDENT} x the resident trio at {GOAL_CAPPED_STEPS} steps "
        "(--baseline)"
    )
    resident = (baseline or {}).get("engine") or {}
    if resident.get("placement") != "resident" or not resident.get("trio_seconds_median"):
        return _skipped(goal, "needs --baseline: a results.json of the resident trio")
    old = (baseline or {}).get("settings", {})
    compared = ("steps", "width", "height", "guidance", "max_sequence_length")
    if any(old.get(k) != getattr(bench.generation, k) for k in compared):
        return _skipped(goal, "the baseline's generation settings differ from this run's")
    if list(old.get("variants", bench.variants)) != list(bench.variants):
        return _skipped(goal, "the baseline measured other variants than this run")
    ratio = engine["trio_seconds_median"] / resident["trio_seconds_median"]
    judged = on_gpu and bench.generation.steps == GOAL_CAPPED_STEPS
    return {
        "value": ratio,
        "goal": goal,
        "met": ratio <= GOAL_CAPPED_VS_RESIDENT if judged else None,
        "steps": bench.generation.steps,
    }


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
