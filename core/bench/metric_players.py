"""Simulated players whose chance of spotting depends on one image metric: does the metric
model (core.game.metric_model) find the metric that drives them, on a database's images?

    python -m core.bench.metric_players --db work/pool.db --truth flip_mean \\
        [--people 40] [--answers 25] [--strength 1.0] [--spread 0.5] [--seed 0] [--json]

The database's quantized images (with their stored PSNR, SSIM and FLIP mean against BF16)
are the duels. Each simulated person answers ``--answers`` duels on distinct images drawn
at random, and spots the quantized image with probability

    1 / (1 + exp(-(ability + strength * direction * z)))

where ``z`` is the ``--truth`` metric of that image standardised over the images (mean 0,
SD 1), ``direction`` is +1 for FLIP (a larger error is easier to see) and -1 for PSNR and
SSIM (a larger value is closer to BF16), and ``ability`` is the person's own log-odds, drawn
once from N(0, ``--spread``²), so a person's answers are clustered as real ones are. Every
metric is then fitted exactly as the Results fit votes (``metric_model.section``), and the
section is printed (text, or JSON with ``--json``).

This shows what the model can tell apart on these images when the truth is known. It says
nothing about real players: only real votes do.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from core.config import REFERENCE_VARIANT
from core.errors import DatabaseError
from core.game import metric_model, metric_view
from core.records import IMAGE_METRICS
from core.store.storage import Store, default_images_dir

logger = logging.getLogger(__name__)

DIRECTION = {"psnr": -1.0, "ssim": -1.0, "flip_mean": 1.0}


def simulate_answers(
    images: list[tuple[int, str, tuple[float | None, ...]]],
    truth: str,
    *,
    people: int,
    answers: int,
    strength: float,
    spread: float,
    seed: int,
) -> list[metric_model.Row]:
    """Rows for ``metric_model.section``: (person, spotted 1/0, IMAGE_METRICS values), each
    person answering ``answers`` distinct images drawn from those with every metric
    finite. Raises ValueError when fewer images than ``answers`` have them."""
    usable = [
        values for _, _, values in images if all(v is not None and math.isfinite(v) for v in values)
    ]
    if len(usable) < answers:
        raise ValueError(
            f"{len(usable)} images have every metric measured and finite; "
            f"--answers {answers} needs at least that many"
        )
    column = IMAGE_METRICS.index(truth)
    x = np.array([v[column] for v in usable], dtype=float)
    sd = float(x.std())
    z = (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
    rng = np.random.default_rng(seed)
    rows: list[metric_model.Row] = []
    for person in range(people):
        ability = rng.normal(0.0, spread)
        for i in rng.choice(len(usable), size=answers, replace=False):
            p = 1.0 / (1.0 + math.exp(-(ability + strength * DIRECTION[truth] * z[i])))
            rows.append((f"sim{person:04d}", int(rng.random() < p), usable[i]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.metric_players",
        description="Simulated players driven by one image metric, fitted by the metric model.",
    )
    parser.add_argument("--db", type=Path, required=True, help="a game or pool database")
    parser.add_argument("--truth", choices=IMAGE_METRICS, default="flip_mean")
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--answers", type=int, default=25, help="duels per person")
    parser.add_argument(
        "--strength", type=float, default=1.0, help="log-odds per SD of the truth metric"
    )
    parser.add_argument("--spread", type=float, default=0.5, help="SD of the people's own log-odds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the section as JSON")
    args = parser.parse_args(argv)
    if args.people < 1 or args.answers < 1:
        parser.error("--people and --answers must be 1 or more")
    logging.basicConfig(level=logging.WARNING)
    try:
        with Store(args.db, default_images_dir(args.db), must_exist=True) as store:
            images = store.measured_images(REFERENCE_VARIANT)
            means = store.image_metric_means(REFERENCE_VARIANT, metric_model.MEANS_BATCH)
    except DatabaseError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    try:
        rows = simulate_answers(
            images,
            args.truth,
            people=args.people,
            answers=args.answers,
            strength=args.strength,
            spread=args.spread,
            seed=args.seed,
        )
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    section = metric_model.section(rows, means).to_json()
    setup: dict[str, Any] = {
        k: getattr(args, k) for k in ("truth", "people", "answers", "strength", "spread", "seed")
    }
    setup["images"] = len({(g, v) for g, v, _ in images})
    if args.json:
        json.dump({"simulation": setup, "metrics": section}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(
        "Simulated players (not people): "
        + ", ".join(f"{k} {v}" for k, v in setup.items())
        + "\n\n"
    )
    sys.stdout.write(metric_view.results_text(section))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
