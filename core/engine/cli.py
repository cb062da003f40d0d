"""``python -m core.engine``: generate one image per variant, or print the placement plan.

The model, placement and generation flags are shared with the benchmark's command line
through ``add_common_flags``, so both spell and check them the same way.

Command lines::

    python -m core.engine --model tiny --prompt "a red fox in snow" --seed 7 --out DIR
    python -m core.engine --plan --model synthetic-flux-dev --max-gpu-memory 24 --max-host-memory 64
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from core.config import ALL_VARIANT_NAMES, VARIANT_NAMES, byte_unit, check_variants, resolve_model
from core.engine.generation import Engine
from core.engine.loading import cuda_available, model_configs, resolve_device
from core.engine.placement import (
    PlacementPlan,
    format_plan,
    gpu_budget_bytes,
    host_budget_from,
    model_sizes,
    plan_placement,
    plan_problem,
)
from core.errors import InvalidSettingError, SpotError
from core.limits import GenerationSettings
from core.records import Generation
from core.settings import OFFLOAD_CHOICES, check_max_gpu_memory, check_offload

logger = logging.getLogger(__name__)


def add_common_flags(parser: argparse.ArgumentParser, *, prompt_default: str | None) -> None:
    """The flags both command lines take: model, variants, placement, seed and settings."""
    parser.add_argument(
        "--model",
        default="auto",
        help="auto, tiny, synthetic-flux-dev, synthetic-flux-schnell, a hub id or a local folder",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANT_NAMES),
        help=f"comma-separated, from {', '.join(ALL_VARIANT_NAMES)} "
        f"(default: {','.join(VARIANT_NAMES)})",
    )
    parser.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--offload", choices=OFFLOAD_CHOICES, default="auto")
    parser.add_argument("--max-gpu-memory", type=float, metavar="GB", help="cap on GPU memory")
    parser.add_argument(
        "--max-host-memory",
        type=float,
        metavar="GB",
        help="host RAM the plan may use (default: what is available now)",
    )
    parser.add_argument("--prompt", default=prompt_default, help="the prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="default: the model's (tiny: 4, dev: 50)")
    parser.add_argument("--guidance", type=float, help="default: the model's")
    parser.add_argument("--max-sequence-length", type=int, help="default: the model's")


def variants_from(args: argparse.Namespace) -> tuple[str, ...]:
    return check_variants([v.strip() for v in args.variants.split(",") if v.strip()])


def settings_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The generation settings given on the command line (width/height by the caller)."""
    given = {
        "steps": args.steps,
        "guidance": args.guidance,
        "max_sequence_length": args.max_sequence_length,
    }
    return {k: v for k, v in given.items() if v is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.engine",
        description="Generate one image per variant (bf16, int8, nf4) and write their stats, "
        "or print the placement plan (--plan) without loading any weight.",
    )
    add_common_flags(parser, prompt_default=None)
    parser.add_argument("--width", type=int, help="default: the model's")
    parser.add_argument("--height", type=int, help="default: the model's")
    parser.add_argument("--out", type=Path, help="folder for the PNGs and stats.json")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print device and host bytes per variant and exit (reads configurations only)",
    )
    return parser


# --- --plan --------------------------------------------------------------------------------


def plan_command(args: argparse.Namespace) -> tuple[str, bool]:
    """The plan of ``args`` as text, and whether it fits. With --max-gpu-memory the plan is
    for a CUDA card of that size, whether or not this machine has one; without it, for
    this machine."""
    cap = check_max_gpu_memory(args.max_gpu_memory)
    # Planning for a card of --max-gpu-memory: "auto" is what such a card would load.
    spec = resolve_model(args.model, cuda_available=cap is not None or cuda_available())
    offload = check_offload(args.offload)
    if cap is not None:
        device, budget = torch.device("cuda", 0), int(cap * 1e9)
    else:
        device = resolve_device(args.device)
        budget = gpu_budget_bytes(device, None)
    sizes = model_sizes(model_configs(spec))
    plan: PlacementPlan = plan_placement(
        sizes, variants_from(args), device, offload, budget, host_budget_from(args.max_host_memory)
    )
    return f"model {spec.name}\n" + format_plan(plan, sizes), plan_problem(plan) is None


# --- generation ----------------------------------------------------------------------------


def format_table(generation: Generation) -> str:
    """A short per-variant table of the generation's figures (MiB or GiB, seconds, dB)."""
    results = generation.results.values()
    unit, scale = byte_unit(
        v
        for r in results
        for v in (r.weight_bytes, r.standalone_peak_bytes, r.peak_rss_bytes)
        if v is not None
    )

    def size(value: int | None) -> str:
        return "-" if value is None else f"{value / scale:,.2f}"

    rows = [
        (
            "variant",
            "seconds",
            f"own weights {unit}",
            f"activation peak {unit}",
            f"standalone peak {unit}",
            f"process peak RSS {unit}",
            "PSNR dB",
            "SSIM",
        )
    ]
    for name, r in generation.results.items():
        rows.append(
            (
                name,
                f"{r.seconds:.2f}",
                size(r.weight_bytes),
                size(r.activation_peak_bytes),
                size(r.standalone_peak_bytes),
                size(r.peak_rss_bytes),
                "-" if r.psnr is None else f"{r.psnr:.2f}",
                "-" if r.ssim is None else f"{r.ssim:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    shared = next(iter(results)).shared_weight_bytes
    lines.append(
        f"shared components (CLIP + VAE): {size(shared)} {unit}; all loaded weights on "
        f"{generation.device}: {size(generation.resident_weight_bytes)} {unit}; model "
        f"{generation.model}; placement {generation.placement}"
    )
    if any(r.peak_rss_bytes is not None for r in results):
        lines.append("process peak RSS: the whole process during each call, not one variant's")
    return "\n".join(lines)


def generate_command(args: argparse.Namespace) -> tuple[Engine, Generation]:
    if not args.prompt or args.out is None:
        raise InvalidSettingError("--prompt and --out are needed to generate (or use --plan)")
    engine = Engine.load(
        args.model,
        variants=variants_from(args),
        device=args.device,
        offload=args.offload,
        max_gpu_memory_gb=args.max_gpu_memory,
        max_host_memory_gb=args.max_host_memory,
    )
    overrides = settings_overrides(args)
    overrides |= {k: v for k, v in (("width", args.width), ("height", args.height)) if v}
    settings: GenerationSettings = engine.default_settings(args.seed).with_(**overrides)
    return engine, engine.generate(args.prompt, settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.plan:
            text, fits = plan_command(args)
            sys.stdout.write(text + "\n")
            return 0 if fits else 1
        engine, generation = generate_command(args)
    except SpotError as exc:
        logger.error("%s", exc)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name, result in generation.results.items():
        result.image.save(args.out / f"{name}.png")
    stats = generation.stats()
    stats["load_seconds"] = engine.models.load_seconds
    stats["plan"] = {
        "reason": engine.models.plan.reason,
        "variants": {
            name: {
                "mode": v.mode,
                "device_bytes": v.device_bytes,
                "host_bytes": v.host_bytes,
                "pinned": v.pinned,
                "resident_block_bytes": v.resident_block_bytes,
                "streamed_bytes_per_step": v.streamed_bytes,
            }
            for name, v in engine.models.plan.variants.items()
        },
        "pinned_bytes": engine.models.plan.pinned_bytes,
        "notes": list(engine.models.plan.notes),
    }
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2, allow_nan=False, default=str))
    sys.stdout.write(format_table(generation) + "\n")
    sys.stdout.write(
        f"wrote {', '.join(f'{n}.png' for n in generation.results)} and stats.json to {args.out}\n"
    )
    return 0
