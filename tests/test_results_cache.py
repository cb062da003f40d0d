"""core.game.results_cache: one Results summary shared by every player, at most a few
seconds old, and nobody but the recomputing caller waits for a recomputation."""

from __future__ import annotations

import threading

import pytest

from core.game.results_cache import ResultsCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_shared_while_young_and_recomputed_once_old():
    clock, calls = Clock(), []

    def compute() -> dict:
        calls.append(clock.now)
        return {"n": len(calls)}

    cache = ResultsCache(compute, max_age=2.0, clock=clock)
    first, age = cache.get()
    assert first == {"n": 1} and age == 0.0
    clock.now += 1.5
    again, age = cache.get()
    assert again is first and age == pytest.approx(1.5) and len(calls) == 1
    clock.now += 0.5  # exactly max_age: old
    fresh, age = cache.get()
    assert fresh == {"n": 2} and age == 0.0 and calls == [100.0, 102.0]


def test_callers_get_the_previous_summary_while_one_recomputes():
    clock = Clock()
    started, release = threading.Event(), threading.Event()
    values = iter([{"v": "old"}, {"v": "new"}])

    def compute() -> dict:
        value = next(values)
        if value["v"] == "new":
            started.set()
            assert release.wait(10)
        return value

    cache = ResultsCache(compute, max_age=2.0, clock=clock)
    cache.get()
    clock.now += 5
    got: list[dict] = []
    refresher = threading.Thread(target=lambda: got.append(cache.get()[0]))
    refresher.start()
    assert started.wait(10)
    # The recomputation is held: another caller is answered at once with the old summary,
    # and its age says how old it is.
    value, age = cache.get()
    assert value == {"v": "old"} and age == pytest.approx(5)
    release.set()
    refresher.join(10)
    assert got == [{"v": "new"}] and cache.get()[0] == {"v": "new"}


def test_the_first_callers_wait_for_one_computation():
    calls, gate = [], threading.Event()

    def compute() -> dict:
        calls.append(1)
        assert gate.wait(10)
        return {"n": len(calls)}

    cache = ResultsCache(compute, max_age=60.0)
    got: list[dict] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get()[0])) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert got == [{"n": 1}] * 4 and calls == [1]


def test_a_negative_age_is_refused():
    with pytest.raises(ValueError, match="max_age"):
        ResultsCache(dict, max_age=-1)
