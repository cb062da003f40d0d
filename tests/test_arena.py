"""core.game.arena without a server: the limiter, the bounded queue, request coercion, the
images' modification times; and app.on_zero_gpu. (Flags and environment variables:
tests/test_settings.py.)"""

from __future__ import annotations

import os
import threading

import pytest

import app
from core import errors
from core.game.arena import Arena, SlidingWindowLimiter
from core.game.rounds import ReadyRounds
from core.settings import AppSettings
from tests.app_server import DEADLINE_SECONDS, SIZE, STEPS, GatedEngine
from tests.data_helpers import Clock, make_game, make_store


class TestSlidingWindowLimiter:
    def test_limit_per_key_and_window(self):
        clock = Clock(100.0)
        limiter = SlidingWindowLimiter(2, window=60, clock=clock)
        assert limiter.take("a") and limiter.take("a")
        assert not limiter.take("a")
        assert limiter.take("b")  # per key
        clock.now += 59.9
        assert not limiter.take("a")
        clock.now += 0.1  # the first events leave the window
        assert limiter.take("a") and limiter.take("a") and not limiter.take("a")

    def test_refused_take_records_nothing_and_give_back_frees_a_slot(self):
        limiter = SlidingWindowLimiter(1, clock=Clock())
        assert limiter.take("a")
        assert not limiter.take("a")
        limiter.give_back("a")
        assert limiter.take("a")
        limiter.give_back("unknown")  # harmless

    def test_zero_is_unlimited(self):
        limiter = SlidingWindowLimiter(0, clock=Clock())
        assert all(limiter.take("a") for _ in range(1000))


@pytest.fixture
def arena(tiny_engine, tmp_path):
    store = make_store(tmp_path)
    settings = AppSettings(queue_size=0, generations_per_minute=5)
    yield Arena(GatedEngine(tiny_engine), store, make_game(store), settings)
    store.close()


def small(arena, seed=1):
    return arena.engine.default_settings(seed).with_(steps=STEPS, width=SIZE, height=SIZE)


def test_busy_when_the_queue_is_full_and_the_slot_is_given_back(arena):
    arena.engine.gate.clear()
    done = []
    holder = threading.Thread(
        target=lambda: done.append(arena.generate_round("s1", "a fox", small(arena), "trio"))
    )
    holder.start()
    try:
        assert arena.engine.waiting.acquire(timeout=DEADLINE_SECONDS)
        before = arena.store.counts()
        with pytest.raises(errors.BusyError, match=r"busy \(0 prompts already waiting\)"):
            arena.generate_round("s2", "a cat", small(arena), "trio")
        assert arena.store.counts() == before
    finally:
        arena.engine.gate.set()
        holder.join(DEADLINE_SECONDS)
    assert done and done[0].slots == ("A", "B", "C")
    # The refused request did not count against its player.
    assert not arena._generation_limiter._events.get("s2")


def test_rate_limited_before_the_engine_is_touched(tiny_engine, tmp_path):
    store = make_store(tmp_path)
    arena = Arena(tiny_engine, store, make_game(store), AppSettings(generations_per_minute=1))
    arena._generation_limiter.take("s")
    with pytest.raises(errors.RateLimitedError, match="at most 1 generation a minute") as limited:
        arena.generate_round("s", "a fox", small(arena), "trio")
    assert store.counts()["generations"] == 0
    # Nothing is ready to play: the message does not offer a ready round.
    assert "next generation is allowed in" in str(limited.value)
    assert "ready round" not in str(limited.value)


def test_rate_limit_says_in_how_many_seconds_and_offers_a_ready_round(tiny_engine, tmp_path):
    store = make_store(tmp_path)
    arena = Arena(tiny_engine, store, make_game(store), AppSettings(generations_per_minute=2))
    clock = Clock(1000.0)
    arena._generation_limiter = SlidingWindowLimiter(2, window=60, clock=clock)
    arena.generate_round("s", "a fox", small(arena), "trio")  # a ready round for "other"
    arena._generation_limiter.take("other")
    clock.now += 0.5
    arena._generation_limiter.take("other")
    clock.now += 17.7
    # The first of the two leaves the window 60 s after it was taken: 41.8 s from now.
    with pytest.raises(errors.RateLimitedError) as limited:
        arena.generate_round("other", "a cat", small(arena), "trio")
    message = str(limited.value)
    assert "your next generation is allowed in 42 seconds" in message
    assert "play a ready round" in message
    assert store.counts()["generations"] == 1
    assert arena._generation_limiter.wait_seconds("other") == pytest.approx(41.8)
    clock.now += 41.8
    assert arena._generation_limiter.wait_seconds("other") == pytest.approx(0.0, abs=1e-6)


def test_invalid_request_is_rejected_before_the_limit_counts(arena):
    with pytest.raises(errors.EmptyPromptError):
        arena.generate_round("s", "  ", small(arena), "trio")
    with pytest.raises(errors.InvalidModeError):
        arena.generate_round("s", "a fox", small(arena), "solo")
    assert "s" not in arena._generation_limiter._events


class FailingEngine(GatedEngine):
    """The tiny engine, failing every generation as a tokenizer or a GPU might."""

    def generate(self, prompt, settings, progress=None):
        raise errors.GenerationFailedError("the engine failed")


def test_an_engine_failure_does_not_count_against_the_limit(tiny_engine, tmp_path):
    store = make_store(tmp_path)
    arena = Arena(
        FailingEngine(tiny_engine), store, make_game(store), AppSettings(generations_per_minute=1)
    )
    for _ in range(3):
        with pytest.raises(errors.GenerationFailedError):
            arena.generate_round("s", "a fox", small(arena), "trio")
    assert not arena._generation_limiter._events.get("s")
    assert store.counts()["generations"] == 0


def test_a_lone_surrogate_never_reaches_the_engine(arena):
    arena.engine.gate.clear()  # a generation would wait here; validation must refuse first
    with pytest.raises(errors.PromptEncodingError):
        arena.generate_round("s", "a \ud800 fox", small(arena), "trio")
    arena.engine.gate.set()
    assert "s" not in arena._generation_limiter._events


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"seed": "7"}, errors.InvalidSettingError, "seed must be a number, got '7'"),
        ({"steps": 2.5}, errors.InvalidSettingError, "steps must be a whole number"),
        ({"steps": True}, errors.InvalidSettingError, "steps must be a number, got True"),
        ({"width": None}, errors.InvalidSettingError, "width must be a number, got None"),
        ({"guidance": "high"}, errors.InvalidSettingError, "guidance must be a number"),
        ({"random_seed": 1}, errors.InvalidSettingError, "random_seed must be true or false"),
        ({"seed": -1}, errors.SeedOutOfRangeError, "seed must be an integer"),
        ({"width": 250}, errors.InvalidSizeError, "width must be an integer in 256…2048"),
        ({"height": 4096}, errors.InvalidSizeError, "height must be an integer in 256…2048"),
        ({"steps": 0}, errors.StepsOutOfRangeError, "steps must be an integer in 1…100"),
        ({"guidance": float("nan")}, errors.GuidanceOutOfRangeError, "guidance must be"),
    ],
)
def test_settings_from_request_rejects(arena, changes, error, message):
    request = dict(seed=3, random_seed=False, steps=2, guidance=3.5, width=256, height=256)
    with pytest.raises(error, match=message):
        arena.settings_from_request(**(request | changes))


def test_settings_from_request_coerces_whole_floats_and_draws_a_seed(arena):
    settings = arena.settings_from_request(
        seed=7.0, random_seed=False, steps=2.0, guidance=3, width=256.0, height=512
    )
    assert (settings.seed, settings.steps, settings.width, settings.height) == (7, 2, 256, 512)
    assert isinstance(settings.guidance, float)
    drawn = arena.settings_from_request(
        seed="ignored", random_seed=True, steps=2, guidance=3.5, width=256, height=256
    )
    assert 0 <= drawn.seed < 2**32


# --- launching -------------------------------------------------------------------------


def test_zero_gpu_wrapper_is_a_no_op_without_spaces(tiny_engine):
    assert app.on_zero_gpu(tiny_engine) is tiny_engine
    assert "generate" not in vars(tiny_engine)


def test_export_zips_are_pruned_after_an_hour(arena, tmp_path):
    folder = tmp_path / "exports"
    first = arena.export_zip(folder)
    stale = folder / "spot-the-quantized-old.zip"
    stale.write_bytes(b"")
    os.utime(stale, (1_000_000, 1_000_000))
    second = arena.export_zip(folder)
    assert first.is_file() and second.is_file() and not stale.exists()


def test_the_arena_knows_its_device_and_its_pool(arena):
    assert not arena.on_gpu  # the tiny engine of the tests runs on the CPU
    assert arena.ready_rounds("s1", "trio") == ReadyRounds(playable=0, unseen=0)
    arena.generate_round("s1", "a fox", small(arena), "trio")
    assert arena.ready_rounds("s1", "trio") == ReadyRounds(playable=1, unseen=0)
    assert arena.ready_rounds("s2", "trio") == ReadyRounds(playable=1, unseen=1)
