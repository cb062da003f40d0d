"""Ready rounds made on any GPU, served from any machine.

``python -m core.game.pool --prompts FILE --count N --model M --out TARGET`` generates
``N`` generations (the prompts in turn, one generation per prompt and seed: the first pass
uses seed ``--seed``, the next ``--seed + 1``, …) and writes them to TARGET (a folder or
``hf://datasets/OWNER/NAME``) in the event format of core.game.sync, pushing after each
one. It is resumable: the work database is restored from the target first, and every
(prompt, seed) already there is skipped, so a run that was stopped goes on where it was.

``app.py --pool TARGET`` imports the target's generations at start and every
``--sync-every`` minutes (``import_pool``): each under a new local id, its images
rewritten as clean PNGs with neutral names, its own figures (seconds, memory, the device
that made it) kept and labelled as made elsewhere; an import that runs again adds nothing.

Without a local engine (the model cannot be loaded here: a CPU Space, no weights) the app
serves the pool's rounds, and a player's prompt gets ``NoLocalEngine``'s answer.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.config import VARIANT_NAMES, GenerationSettings, ModelSpec
from core.errors import ModelUnavailableError, SpotError, SyncFormatError
from core.game import sync
from core.game.outbox import read_into
from core.records import Generation, ProgressCallback
from core.store.storage import Store

logger = logging.getLogger(__name__)


# --- in the app: import and serve ------------------------------------------------------------


def import_pool(store: Store, target: str, scratch: Path) -> int:
    """Import every generation of the pool ``target`` not imported yet; return how many
    were added. Raises SyncTargetError (unreachable) or SyncFormatError (a bad event, a
    public pool: it has no images)."""
    folder = read_into(target, scratch)
    manifest = sync.read_manifest(folder)
    if manifest is not None and manifest.public:
        raise SyncFormatError(f"{target} is a public target: a pool must be private (images)")
    added = 0
    for event in sync.read_events(folder):
        if event["kind"] != "generation":
            continue
        origin = f"{event['deployment']}:{event['id']}"
        images = []
        for figures in event.get("images", []):
            rel = figures.get("file")
            if not rel:
                raise SyncFormatError(f"generation {origin} of {target} has no image file")
            with Image.open(folder / rel) as picture:
                images.append((figures, picture.copy()))
        row = {k: v for k, v in event["row"].items() if k != "origin"}
        if store.import_generation(row, images, origin) is not None:
            added += 1
    if added:
        logger.info("imported %d generation(s) from the pool %s", added, target)
    return added


@dataclass
class PoolImporter:
    """Imports a pool at start and then every ``every_minutes`` in a thread."""

    store: Store
    target: str
    scratch: Path
    every_minutes: float

    def __post_init__(self) -> None:
        self._stopped = threading.Event()

    def start(self) -> int:
        """Import now (errors stop the start), then keep importing in the background."""
        added = import_pool(self.store, self.target, self.scratch)
        threading.Thread(target=self._run, name="pool-import", daemon=True).start()
        return added

    def _run(self) -> None:
        while not self._stopped.wait(self.every_minutes * 60):
            try:
                import_pool(self.store, self.target, self.scratch)
            except Exception:
                logger.exception("could not import the pool %s", self.target)

    def stop(self) -> None:
        self._stopped.set()


class NoLocalEngine:
    """What the app has instead of an engine when its model cannot be loaded here but a
    pool serves ready rounds: it says so to a player who asks for their own prompt."""

    def __init__(self, spec: ModelSpec, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        self.device_label = "cpu (no local engine: ready rounds from the pool)"
        self.versions: dict[str, str] = {}

    @property
    def variants(self) -> tuple[str, ...]:
        return VARIANT_NAMES

    def default_settings(self, seed: int = 0) -> GenerationSettings:
        return GenerationSettings.defaults(self.spec).with_(seed=seed)

    def generate(
        self, prompt: str, settings: GenerationSettings, progress: ProgressCallback | None = None
    ) -> Generation:
        raise ModelUnavailableError(
            f"this server has no local engine for {self.spec.name}, so it cannot make images "
            "of your prompt: play a ready round (they were made elsewhere)"
        )


# --- the command: make a pool -------------------------------------------------------------------


def read_prompts(path: Path) -> list[str]:
    """The prompts of a file, one a line (blank lines and lines starting with # skipped),
    each validated as a player's prompt is. Raises SpotError naming the line."""
    from core.config import validate_prompt

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
        prog="python -m core.game.pool",
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
