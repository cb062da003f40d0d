"""``python -m core.bench.benchmark``: memory and time of every variant, standalone and in
the engine (``core.bench.runner``), with the roofline (``core.bench.roofline``) and the
project's goals (``core.bench.goals``).

On CUDA the run also measures the bf16 matmul rate (an 8192³ matmul) and reports each BF16
generation against the transformer's compute floor (FULLSCALE.md); on the CPU a smaller fp32
matmul gives a labelled figure. Writes ``results.json``, ``results.csv`` (one row per
variant × mode) and ``comparison.png`` into ``--out``, and prints a short table. The model,
placement and generation flags are the engine's (``core.engine.cli.add_common_flags``).

``--variants`` takes any set of the registry's variants (``core.config.VARIANTS``), the
ones beyond the game's trio included; a variant this device cannot run (torchao float8
on the CPU) is refused by name before any work, with exit status 2.

Command lines (CPU; see README "Performance" for the full-scale GPU commands)::

    python -m core.bench.benchmark --model tiny --out data/benchmark/tiny
    python -m core.bench.benchmark --model micro --device cpu \
        --variants bf16,int8,nf4,fp8-layerwise,gguf-q8,gguf-q4,torchao-int8 --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from core.bench.report import format_table
from core.bench.rows import BenchmarkSettings
from core.bench.runner import run
from core.checkpoints.micro import vocabulary
from core.config import BENCHMARK_MODES, VARIANTS, ModelSpec, resolve_model
from core.engine.backends import backend
from core.engine.cli import add_common_flags, settings_overrides, variants_from
from core.engine.loading import cuda_available
from core.errors import InvalidSettingError, PromptOutOfVocabularyError, SpotError
from core.limits import GenerationSettings, validate_prompt
from core.settings import check_max_gpu_memory, check_offload

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a red fox sitting in fresh snow at sunrise, detailed fur, soft light"
# The micro model draws only the words it was trained on: its own first example.
MICRO_DEFAULT_PROMPT = vocabulary.EXAMPLE_PROMPTS[0]


# --- Command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.benchmark",
        description="Memory and time of each variant, standalone and in the engine.",
    )
    add_common_flags(parser, prompt_default=None)
    parser.add_argument("--size", type=int, help="square side in pixels (default: the model's)")
    parser.add_argument("--repeats", type=int, default=2, help="measured generations per mode")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up generations")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        help="steps of a warm-up generation, same size and prompt (default: --steps)",
    )
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


def benchmark_prompt(spec: ModelSpec, prompt: str | None, max_sequence_length: int) -> str:
    """The prompt to generate: ``prompt``, else the model's default (the micro model's own
    example, everyone else's ``DEFAULT_PROMPT``). Raises PromptOutOfVocabularyError for a
    prompt the micro model cannot draw, before anything is loaded."""
    micro = spec.kind == "micro"
    chosen = validate_prompt(
        prompt if prompt is not None else (MICRO_DEFAULT_PROMPT if micro else DEFAULT_PROMPT)
    )
    if micro:
        problem = vocabulary.refusal(chosen, max_sequence_length)
        if problem is not None:
            raise PromptOutOfVocabularyError(problem)
    return chosen


def check_devices(variants: tuple[str, ...], device: torch.device) -> None:
    """Refuse, naming it, a variant whose backend cannot run on ``device`` (torchao float8
    on the CPU): InvalidSettingError before any work, in standalone mode as in the engine."""
    for name in variants:
        backend(VARIANTS[name].quantization).check_device(device, name)


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
    overrides = settings_overrides(args)
    if args.size is not None:
        overrides |= {"width": args.size, "height": args.size}
    generation = GenerationSettings.defaults(spec, args.seed).with_(**overrides).validate(spec)
    if args.baseline is not None and not args.baseline.is_file():
        raise InvalidSettingError(f"--baseline {args.baseline} does not exist")
    variants = variants_from(args)
    check_devices(variants, device)
    return BenchmarkSettings(
        spec=spec,
        variants=variants,
        generation=generation,
        prompt=benchmark_prompt(spec, args.prompt, generation.max_sequence_length),
        repeats=args.repeats,
        warmup=args.warmup,
        warmup_steps=min(args.warmup_steps or generation.steps, generation.steps),
        offload=check_offload(args.offload),
        max_gpu_memory_gb=check_max_gpu_memory(args.max_gpu_memory),
        device=device,
        modes=modes,
        cache_dir=args.cache_dir,
        max_host_memory_gb=args.max_host_memory,
    )


def _quiet_libraries() -> None:
    # The loaders draw progress bars: noise in a benchmark log. (LLM.int8's per-matmul
    # warning is limited to one line by the engine itself: core.engine.int8.)
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
