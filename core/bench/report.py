"""The benchmark's outputs: results.json, results.csv, the printed table and the figure.

Pure formatting of the results dictionary that ``core.bench.benchmark.run`` returns (no torch):
byte figures, medians and spreads in, files and text out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from PIL import Image

from core.config import BENCHMARK_MODES, VARIANTS, byte_unit

CSV_ROW_FIELDS = (
    "variant",
    "mode",
    "placement",
    "status",
    "seconds_median",
    "seconds_min",
    "seconds_max",
    "load_seconds",
    "weight_bytes",
    "shared_weight_bytes",
    "loaded_allocated_bytes",
    "loaded_reserved_bytes",
    "loaded_rss_bytes",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "peak_rss_bytes",
    "activation_peak_bytes",
    "standalone_peak_bytes",
    "floor_ratio",
    "moved_bytes",
    "move_seconds",
    "move_floor_seconds",
    "streamed_bytes_per_step",
    "stream_floor_seconds",
    "error",
)
CSV_CONTEXT_FIELDS = (
    "model",
    "synthetic",
    "device",
    "device_name",
    "torch",
    "diffusers",
    "transformers",
    "bitsandbytes",
    "accelerate",
    "steps",
    "width",
    "height",
    "guidance",
    "max_sequence_length",
    "repeats",
    "warmup",
    "offload",
    "max_gpu_memory_gb",
    "matmul_tflops",
    "floor_seconds",
)


def write_results(results: dict[str, Any], out: Path) -> None:
    """Write results.json and results.csv (one row per variant × mode) into ``out``."""
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, allow_nan=False, default=str))
    tmp.replace(out / "results.json")
    machine, settings = results["machine"], results["settings"]
    context = {
        "model": results["model"],
        "synthetic": results["synthetic"],
        "device": machine["device"],
        "device_name": machine["device_name"],
        **{k: machine[k] for k in ("torch", "diffusers", "transformers")},
        **{k: machine[k] for k in ("bitsandbytes", "accelerate")},
        **{k: settings[k] for k in CSV_CONTEXT_FIELDS if k in settings},
        "matmul_tflops": results["matmul"]["tflops"],
        "floor_seconds": results["floor"]["seconds"],
    }
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*CSV_ROW_FIELDS, *CSV_CONTEXT_FIELDS])
        writer.writeheader()
        for row in results.get("rows", []):
            writer.writerow({**{k: row.get(k) for k in CSV_ROW_FIELDS}, **context})


def _unit(results: dict[str, Any]) -> tuple[str, int]:
    """GiB for full-scale figures, MiB when every figure is below one GiB (the tiny model)."""
    return byte_unit(
        value
        for row in results.get("rows", [])
        for key, value in row.items()
        if key.endswith("_bytes") and isinstance(value, int)
    )


def _amount(value: int | None, unit: tuple[str, int]) -> str:
    if value is None:
        return "-"
    scaled = value / unit[1]
    return f"{scaled:.1f}" if scaled >= 10 else f"{scaled:.2f}"


def _memory_pair(row: dict[str, Any]) -> tuple[int | None, int | None]:
    """(after loading, peak) as the seed measured them: reserved on CUDA, RSS on the CPU."""
    if row.get("peak_reserved_bytes") is not None or row.get("loaded_reserved_bytes") is not None:
        return row.get("loaded_reserved_bytes"), row.get("peak_reserved_bytes")
    return row.get("loaded_rss_bytes"), row.get("peak_rss_bytes")


def format_table(results: dict[str, Any]) -> str:
    """A short table of every row plus the engine, floor and goal lines."""
    unit = _unit(results)
    header = (
        "variant",
        "mode",
        "placement",
        "status",
        "s median",
        "s min-max",
        f"weights {unit[0]}",
        f"loaded {unit[0]}",
        f"peak {unit[0]}",
        f"alone-eq {unit[0]}",
        "x floor",
    )
    table = [header]
    for row in results.get("rows", []):
        loaded, peak = _memory_pair(row)
        median = row.get("seconds_median")
        table.append(
            (
                row["variant"],
                row["mode"],
                row.get("placement") or "-",
                row["status"],
                "-" if median is None else f"{median:.2f}",
                "-" if median is None else f"{row['seconds_min']:.2f}-{row['seconds_max']:.2f}",
                _amount(row.get("weight_bytes"), unit),
                _amount(loaded, unit),
                _amount(peak, unit),
                _amount(row.get("standalone_peak_bytes"), unit),
                "-" if row.get("floor_ratio") is None else f"{row['floor_ratio']:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    machine, floor, matmul = results["machine"], results["floor"], results["matmul"]
    memory_kind = (
        "reserved (the process: in engine mode every loaded variant)"
        if machine["device_type"] == "cuda"
        else "the whole process's RSS (in engine mode every loaded variant)"
    )
    lines.append(
        f"loaded / peak: {memory_kind}; alone-eq = the variant's peak alone in the seed's terms "
        "(max_memory_reserved; standalone rows: the seed recipe's own, engine rows: its own + "
        "shared modules on the device + how far the reserved peak rose in its call; GPU only); "
        "weights = the variant's transformer + T5, quantization state included"
    )
    engine = results.get("engine")
    if engine and engine.get("status") == "ok":
        # ``trio_seconds``: one generation of every variant of the run (three by default).
        count = len(results["settings"]["variants"])
        lines.append(
            f"engine: {count} variants loaded in {engine['load_seconds']:.1f} s, "
            f"resident {_amount(engine.get('resident_bytes'), unit)} {unit[0]} "
            f"({'memory_allocated' if machine['device_type'] == 'cuda' else 'RSS'}), "
            f"one generation of all {count} {engine['trio_seconds_median']:.2f} s (median), "
            f"placement {engine['placement']}"
        )
    lines.append(
        f"matmul: {matmul['tflops']:.3g} TFLOP/s ({matmul['label']}); floor of one BF16 image: "
        f"{floor['flop_per_image']:.3g} FLOP = {floor['seconds']:.3g} s"
    )
    rates = results.get("copy_rates") or {}
    if rates.get("skipped"):
        lines.append(f"copy rates: {rates['skipped']}")
    elif rates:
        lines.append(
            "copy rates (GB/s): host pageable -> device {pageable_to_device:.1f}, device -> "
            "pageable host {device_to_pageable:.1f}, pinned -> device {pinned_to_device:.1f}, "
            "device -> pinned {device_to_pinned:.1f}".format(**rates)
        )
    for row in results.get("rows", []):
        if row.get("moved_bytes"):
            floor = row.get("move_floor_seconds")
            lines.append(
                f"moves {row['mode']} {row['variant']}: {row['moved_bytes'] / 2**30:.2f} GiB on "
                f"per generation in {row['move_seconds']:.2f} s"
                + ("" if floor is None else f" (bytes / pinned rate: {floor:.2f} s)")
            )
        if row.get("streamed_bytes_per_step"):
            floor = row.get("stream_floor_seconds")
            lines.append(
                f"streams {row['mode']} {row['variant']}: "
                f"{row['streamed_bytes_per_step'] / 2**30:.2f} GiB per step"
                + ("" if floor is None else f" (bytes / pinned rate: {floor:.2f} s a generation)")
            )
    for name, goal in results.get("goals", {}).items():
        if goal.get("skipped"):
            lines.append(f"goal {name} (goal {goal['goal']}): skipped: {goal['skipped']}")
            continue
        met = {True: "met", False: "NOT met", None: "n/a on this device"}[goal["met"]]
        value = goal["value"]
        shown = f"{value / 1e9:.1f} GB" if name == "resident_trio_bytes" else f"{value:.3g}"
        if name.startswith("alone_peak_vs_seed_recipe"):
            shown = f"{value:+.1%}"
        lines.append(f"goal {name}: {shown} (goal {goal['goal']}): {met}")
    for name, ratio in (results.get("baseline") or {}).get("seconds_ratio", {}).items():
        lines.append(f"vs baseline {name}: {ratio:.2f}x the seconds")
    lines.append(f"model {results['model']} on {machine['device']}: {results['note']}")
    return "\n".join(lines)


def write_figure(results: dict[str, Any], images: dict[str, Image.Image], path: Path) -> None:
    """The seed notebook's figure: images in a row with their memory, bar charts beneath."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = results.get("rows", [])
    variants = [v for v in results["settings"]["variants"] if any(r["variant"] == v for r in rows)]
    on_gpu = results["machine"]["device_type"] == "cuda"
    unit = _unit(results)
    n = max(1, len(variants))
    fig = plt.figure(figsize=(4.2 * n, 8.6), dpi=80)
    grid = fig.add_gridspec(2, 1, height_ratios=[1.25, 1.0], hspace=0.35)
    top = grid[0].subgridspec(1, n)
    by_key = {(r["mode"], r["variant"]): r for r in rows}
    for index, variant in enumerate(variants):
        ax = fig.add_subplot(top[0, index])
        ax.axis("off")
        if variant in images:
            ax.imshow(images[variant])
        ax.set_title(VARIANTS[variant].label, fontsize=12)
        row = by_key.get(("engine", variant)) or by_key.get(("standalone", variant)) or {}
        loaded, peak = _memory_pair(by_key.get(("standalone", variant)) or row)
        median = row.get("seconds_median")
        caption = [
            f"weights {_amount(row.get('weight_bytes'), unit)} {unit[0]}",
            # Two lines: seven variants' captions side by side would overlap on one.
            f"standalone: {_amount(loaded, unit)} {unit[0]} loaded,",
            f"{_amount(peak, unit)} {unit[0]} peak",
            "-" if median is None else f"{median:.2f} s ({row['mode']})",
        ]
        ax.text(0.5, -0.04, "\n".join(caption), transform=ax.transAxes, ha="center", va="top")
    bottom = grid[1].subgridspec(1, 2, wspace=0.3)
    ax_memory = fig.add_subplot(bottom[0, 0])
    ax_time = fig.add_subplot(bottom[0, 1])
    series = [
        ("weights", lambda r: r.get("weight_bytes")),
        ("standalone loaded", lambda r: _memory_pair(r)[0]),
        ("standalone peak", lambda r: _memory_pair(r)[1]),
    ]
    if on_gpu:
        series.append(("engine peak", lambda r: r.get("peak_reserved_bytes")))
    width = 0.8 / len(series)
    for offset, (label, getter) in enumerate(series):
        mode = "engine" if label.startswith("engine") else "standalone"
        if label == "weights":
            mode = "engine" if any(("engine", v) in by_key for v in variants) else "standalone"
        values = [
            (getter(by_key[(mode, v)]) or 0) / unit[1] if (mode, v) in by_key else 0.0
            for v in variants
        ]
        xs = [i + (offset - (len(series) - 1) / 2) * width for i in range(len(variants))]
        ax_memory.bar(xs, values, width, label=label)
    ax_memory.set_xticks(range(len(variants)), variants)
    ax_memory.set_ylabel(unit[0] + ("" if on_gpu else " (loaded, peak = process RSS)"))
    ax_memory.set_title("memory")
    ax_memory.legend(fontsize=8)
    modes = [m for m in BENCHMARK_MODES if any(r["mode"] == m for r in rows)]
    width = 0.8 / max(1, len(modes))
    for offset, mode in enumerate(modes):
        medians, low, high = [], [], []
        for v in variants:
            row = by_key.get((mode, v)) or {}
            median = row.get("seconds_median") or 0.0
            medians.append(median)
            low.append(median - (row.get("seconds_min") or median))
            high.append((row.get("seconds_max") or median) - median)
        xs = [i + (offset - (len(modes) - 1) / 2) * width for i in range(len(variants))]
        ax_time.bar(xs, medians, width, yerr=[low, high], capsize=3, label=mode)
    ax_time.set_xticks(range(len(variants)), variants)
    ax_time.set_ylabel("seconds per image (median, min-max)")
    ax_time.set_title("time")
    ax_time.legend(fontsize=8)
    settings = results["settings"]
    fig.suptitle(
        f"{results['model']} on {results['machine']['device']}: {settings['width']}x"
        f"{settings['height']}, {settings['steps']} steps, guidance {settings['guidance']:g}"
        + (" — synthetic random weights" if results["synthetic"] else "")
        + (" — tiny test model" if results["model"] == "tiny" else ""),
        fontsize=12,
    )
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
