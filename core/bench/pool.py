"""Make a pool of ready rounds on any GPU:
``python -m core.bench.pool --prompts FILE --count N --model M --out TARGET``.

Generates ``N`` generations (the prompts in turn, one generation per prompt and seed: the
first pass uses seed ``--seed``, the next ``--seed + 1``, …) and writes them to TARGET (a
folder or ``hf://datasets/OWNER/NAME``) in the event format of core.game.sync, pushing
after each one, with a tqdm progress bar. It is resumable: the work database is restored
from the target first and every (prompt, seed) already there is skipped, so a run that
was stopped goes on where it was. ``app.py --pool TARGET`` serves them (core.game.pool).

It lives in the bench wing because it drives the engine (the game wing imports no engine).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from core.errors import SpotError
from core.game import sync

logger = logging.getLogger(__name__)


def read_prompts(path: Path) -> list[str]:
    """The prompts of a file, one a line (blank lines and lines starting with # skipped),
    each validated as a player's prompt is. Raises SpotError naming the line."""
    from core.limits import validate_prompt

    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            prompts.append(validate_prompt(line))
        except SpotError as e:
            raise SpotError(f"{path} line {number}: {e}") from None
    if not prompts:
        raise SpotError(f"{path} holds no prompt")
    return prompts


def plan(prompts: list[str], count: int, first_seed: int) -> list[tuple[str, int]]:
    """The (prompt, seed) of each of ``count`` generations: the prompts in turn, the seed
    going up by one at each pass."""
    return [(prompts[i % len(prompts)], first_seed + i // len(prompts)) for i in range(count)]


def make_pool(args: argparse.Namespace, work: Path) -> int:
    """Generate what the target lacks; return how many generations were made."""
    from tqdm import tqdm

    from core.engine.generation import Engine  # torch only here

    prompts = read_prompts(args.prompts)
    link = sync.connect(
        args.out,
        sync.outbox_dir_for(work / "pool.db", args.out),
        every_minutes=60.0,
        public=False,
        key=None,
    )
    store = sync.SyncedStore(work / "pool.db", work / "images")
    made = 0
    try:
        link.attach(store, work / "scratch")
        engine = Engine.load(args.model, offload=args.offload)
        done = store.made_prompts(engine.spec.name)
        todo = [(p, s) for p, s in plan(prompts, args.count, args.seed) if (p, s) not in done]
        logger.info(
            "%d of %d generations already in %s; making %d",
            args.count - len(todo),
            args.count,
            args.out,
            len(todo),
        )
        for prompt, seed in tqdm(todo, desc="generations", unit="gen"):
            settings = engine.default_settings(seed)
            if args.steps is not None:
                settings = settings.with_(steps=args.steps)
            if args.size is not None:
                settings = settings.with_(width=args.size, height=args.size)
            generation = engine.generate(prompt, settings.validate(engine.spec))
            store.save_generation(generation)
            link.push()  # each generation is in the target before the next starts
            made += 1
    finally:
        link.close()
        store.close()
    return made


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.bench.pool",
        description="Generate ready rounds in batch and write them to a sync target.",
    )
    parser.add_argument("--prompts", type=Path, required=True, metavar="FILE")
    parser.add_argument("--count", type=int, required=True, metavar="N")
    parser.add_argument("--model", required=True, metavar="M")
    parser.add_argument("--out", required=True, metavar="TARGET")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first pass")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--size", type=int, default=None, help="pixels; default: the model's")
    parser.add_argument("--offload", default="auto")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="the work database's folder (default: a temporary folder, restored from --out)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be 1 or more, got {args.count}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.work is not None:
            args.work.mkdir(parents=True, exist_ok=True)
            made = make_pool(args, args.work)
        else:
            with tempfile.TemporaryDirectory(prefix="spot-pool-") as tmp:
                made = make_pool(args, Path(tmp))
    except SpotError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    sys.stdout.write(f"made {made} generation(s); {args.out} holds the pool\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
