"""A launched app on the tiny engine, for the gradio_client and browser tests.

The app is built in-process (as ``app.main`` would build it) over a temp-dir Store, a
seeded Game and the session's tiny engine, and served on a free loopback port with
``prevent_thread_lock``; each test module launches one and closes it at the end.
"""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

import app
from core.game.arena import Arena
from core.game.rounds import Game
from core.limits import GenerationSettings
from core.records import Generation
from core.settings import AppSettings
from core.store.storage import Store

# Small settings keep a tiny-model generation at a second or two on a CPU.
STEPS = 2
SIZE = 256
GUIDANCE = 3.5
# How long a test waits for something that must happen: a deadline for a hang on a loaded
# machine, never a measure of speed.
DEADLINE_SECONDS = 120


def generate_args(prompt: str = "a red fox in snow", mode: str = "trio", seed: int = 1) -> tuple:
    """The positional inputs of the /generate endpoint, with a fixed seed."""
    return (prompt, mode, seed, False, STEPS, GUIDANCE, SIZE, SIZE)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatedEngine:
    """The real tiny engine behind a gate: ``generate`` waits until the gate opens.

    The one test double of the suite: it lets a test hold generations "on the GPU" for
    as long as it needs to show that votes and results do not wait behind them.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Semaphore(0)  # released by each generate() held at the gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, prompt: str, settings: GenerationSettings, progress=None) -> Generation:
        if not self.gate.is_set():
            self.waiting.release()
        # Longer than any test's deadline: a held generation outlives what waits beside it.
        if not self.gate.wait(timeout=3 * DEADLINE_SECONDS):
            raise TimeoutError("the test never opened the gate")
        return self._engine.generate(prompt, settings, progress)


@dataclass
class LaunchedApp:
    url: str
    arena: Arena
    store: Store
    images_dir: Path
    db_path: Path
    demo: gr.Blocks

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def image_files(self) -> set[str]:
        return {p.name for p in self.images_dir.glob("*")} if self.images_dir.exists() else set()

    def upload_dir_files(self) -> list[str]:
        """Every file under Gradio's upload folder (where accepted uploads would land)."""
        from gradio.utils import get_upload_folder

        return [str(p) for p in Path(get_upload_folder()).rglob("*") if p.is_file()]

    def answer_keys(self) -> list[dict[str, Any]]:
        """Every stored round, read straight from the database after the fact."""
        with closing(sqlite3.connect(self.db_path)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM rounds ORDER BY created_at")]


@contextmanager
def launched_app(
    engine: Any,
    tmp_dir: Path,
    *,
    rng_seed: int = 0,
    max_pages: int | None = None,
    oauth: bool = False,
    **settings: Any,
) -> Iterator[LaunchedApp]:
    settings.setdefault("generations_per_minute", 0)
    settings.setdefault("rounds_per_minute", 0)
    app_settings = AppSettings(
        model="tiny",
        db=tmp_dir / "arena.db",
        images_dir=tmp_dir / "images",
        host="127.0.0.1",
        port=free_port(),
        **settings,
    )
    store = Store(app_settings.db, app_settings.images_dir, max_pages=max_pages)
    game = Game(
        store,
        random.Random(rng_seed),
        rounds_per_minute=app_settings.rounds_per_minute,
        round_ttl_seconds=app_settings.round_ttl_seconds,
        round_images=app.round_images(app_settings),
        answers_per_day=app_settings.answers_per_day,
        variants=engine.variants,  # as app.load_arena: rounds draw from what it generates
    )
    arena = Arena(engine, store, game, app_settings)
    demo = app.launch(arena, oauth=oauth, prevent_thread_lock=True, quiet=True)
    try:
        yield LaunchedApp(
            url=f"http://127.0.0.1:{app_settings.port}/",
            arena=arena,
            store=store,
            images_dir=app_settings.images_dir,
            db_path=app_settings.db,
            demo=demo,
        )
    finally:
        demo.close()
        store.close()
