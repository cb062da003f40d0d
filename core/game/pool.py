"""Ready rounds made on any GPU, served from any machine: the serving side.

A pool is a sync target (core.game.sync) holding generations only, made by
``python -m core.bench.pool`` (which needs the engine, so it lives in the bench wing).

``app.py --pool TARGET`` imports the target's generations at start and every
``--sync-every`` minutes (``import_pool``): each under a new local id, its images
rewritten as clean PNGs with neutral names, its own figures (seconds, memory, the device
that made it) kept and labelled as made elsewhere; an import that runs again adds nothing.

Without a local engine (the model cannot be loaded here: a CPU Space, no weights) the app
serves the pool's rounds, and a player's prompt gets ``NoLocalEngine``'s answer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from core.config import VARIANT_NAMES, ModelSpec
from core.errors import ModelUnavailableError, SyncFormatError
from core.game import sync
from core.game.outbox import read_into
from core.limits import GenerationSettings
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

    def covers(self, prompt: str, max_sequence_length: int) -> bool:
        """Every pool round counts as drawable: its prompt was checked where it was made."""
        return True

    def check_prompt(self, prompt: str, settings: GenerationSettings) -> str:
        """A player's own prompt needs a local engine: ModelUnavailableError, at once."""
        return self.generate(prompt, settings)  # type: ignore[return-value]

    def generate(
        self, prompt: str, settings: GenerationSettings, progress: ProgressCallback | None = None
    ) -> Generation:
        raise ModelUnavailableError(
            f"this server has no local engine for {self.spec.name}, so it cannot make images "
            "of your prompt: play a ready round (they were made elsewhere)"
        )
