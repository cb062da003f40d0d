"""Cheap real parts shared by the data-layer tests: temp-file stores, synthetic generations."""

from __future__ import annotations

import random
from pathlib import Path

from core.bench.simulate import synthetic_generation
from core.game.rounds import Game
from core.records import Generation
from core.store.storage import Store


class Clock:
    """A settable clock (seconds)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(tmp_path: Path) -> Store:
    return Store(tmp_path / "arena.db", tmp_path / "images")


def make_generation(index: int = 0, variants: tuple[str, ...] | None = None) -> Generation:
    gen = synthetic_generation(index, random.Random(index), size=16)
    if variants is not None:
        gen.results = {k: v for k, v in gen.results.items() if k in variants}
    return gen


def make_game(store: Store, seed: int = 0, clock: Clock | None = None, **kwargs) -> Game:
    kwargs.setdefault("rounds_per_minute", 0)
    return Game(store, random.Random(seed), clock=clock or Clock(), **kwargs)
