"""What the micro model's two training commands (train.py, decoder.py) share on their
command lines: the resume folder and thread flags, the lower bounds of numeric flags, and
the start of a run (logging, torch threads, the resume folder's default)."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import torch


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """--state (the resume folder) and --threads (torch CPU threads)."""
    parser.add_argument("--state", type=Path, help="resume folder (default: <out>.state)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def check_minimums(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    minimums: Iterable[tuple[str, float]],
) -> None:
    """Exits through ``parser.error`` (status 2) when a flag given is below its minimum or
    not finite: "--vae-steps must be at least 1, not -3". Flags left unset (None) pass."""
    for name, least in minimums:
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= least):
            parser.error(f"--{name.replace('_', '-')} must be at least {least}, not {value}")


def start_run(args: argparse.Namespace) -> Path:
    """Logs at INFO with times, sets torch's CPU threads to --threads, and returns the
    resume folder: --state, or <out>.state beside --out."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(args.threads)
    return args.state or args.out.with_name(args.out.name + ".state")
