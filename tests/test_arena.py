"""core.game.arena and app settings without a server: the limiter, the bounded queue, request
coercion, the images' modification times, and flags / environment variables."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import app
from core import errors
from core.config import AppSettings
from core.game.arena import Arena, SlidingWindowLimiter
from core.game.rounds import ReadyRounds
from tests.app_server import SIZE, STEPS, GatedEngine
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
        assert arena.engine.waiting.acquire(timeout=30)
        before = arena.store.counts()
        with pytest.raises(errors.BusyError, match=r"busy \(0 prompts already waiting\)"):
            arena.generate_round("s2", "a cat", small(arena), "trio")
        assert arena.store.counts() == before
    finally:
        arena.engine.gate.set()
        holder.join(60)
    assert done and done[0].slots == ("A", "B", "C")
    # The refused request did not count against its player.
    assert not arena._generation_limiter._events.get("s2")


def test_rate_limited_before_the_engine_is_touched(tiny_engine, tmp_path):
    store = make_store(tmp_path)
    arena = Arena(tiny_engine, store, make_game(store), AppSettings(generations_per_minute=1))
    arena._generation_limiter.take("s")
    with pytest.raises(errors.RateLimitedError, match="at most 1 generation a minute"):
        arena.generate_round("s", "a fox", small(arena), "trio")
    assert store.counts()["generations"] == 0


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


# --- flags and environment ------------------------------------------------------------


def test_settings_from_args_defaults(monkeypatch):
    for variable in (*app.config.ENV_VARS.values(), "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(variable, raising=False)
    assert app.settings_from_args([]) == AppSettings()


def test_settings_from_environment_and_flags(monkeypatch, tmp_path):
    env = {
        "SPOT_MODEL": "tiny",
        "SPOT_DB": str(tmp_path / "x.db"),
        "SPOT_PORT": "9000",
        "SPOT_OFFLOAD": "model",
        "SPOT_MAX_GPU_MEMORY": "24",
        "SPOT_QUEUE_SIZE": "2",
        "SPOT_GENERATIONS_PER_MINUTE": "0",
        "SPOT_ROUNDS_PER_MINUTE": "10",
        "SPOT_ROUND_TTL": "60",
        "SPOT_SHARE": "true",
        "SPOT_MARGIN": "2.5",
        "GRADIO_SERVER_NAME": "0.0.0.0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = app.settings_from_args([])
    assert settings.model == "tiny" and settings.port == 9000 and settings.offload == "model"
    assert settings.db == tmp_path / "x.db"
    assert settings.images_dir == tmp_path / "images"  # beside --db unless given
    assert settings.max_gpu_memory_gb == 24.0 and settings.queue_size == 2
    assert (settings.generations_per_minute, settings.rounds_per_minute) == (0, 10)
    assert settings.round_ttl_seconds == 60 and settings.share is True
    assert settings.host == "0.0.0.0"  # a Space sets GRADIO_SERVER_NAME
    assert settings.margin_points == 2.5
    # A flag wins over its variable.
    flagged = app.settings_from_args(["--port", "9001", "--no-share", "--host", "127.0.0.2"])
    assert (flagged.port, flagged.share, flagged.host) == (9001, False, "127.0.0.2")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--queue-size", "-1"], "--queue-size must be >= 0"),
        (["--generations-per-minute", "-2"], "--generations-per-minute must be >= 0"),
        (["--round-ttl", "0"], "--round-ttl must be positive"),
        (["--max-gpu-memory", "0"], "max GPU memory must be a positive number"),
        (["--margin", "0"], "--margin must be more than 0 and less than 50 points"),
        (["--margin", "60"], "--margin must be more than 0 and less than 50 points"),
    ],
)
def test_bad_settings_are_named(monkeypatch, argv, message):
    for variable in app.config.ENV_VARS.values():
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(errors.InvalidSettingError, match=message):
        app.settings_from_args(argv)


def test_malformed_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("SPOT_PORT", "abc")
    with pytest.raises(errors.InvalidSettingError, match="SPOT_PORT='abc' is not a valid --port"):
        app.settings_from_args([])


def test_bad_flag_value_exits_with_usage(capsys):
    with pytest.raises(SystemExit):
        app.settings_from_args(["--offload", "sometimes"])
    assert "invalid choice" in capsys.readouterr().err


def test_zero_gpu_wrapper_is_a_no_op_without_spaces(tiny_engine):
    assert app.on_zero_gpu(tiny_engine) is tiny_engine
    assert "generate" not in vars(tiny_engine)


def test_main_reports_a_bad_setting_without_a_trace(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("SPOT_MODEL", raising=False)
    assert app.main(["--model", "no-such-thing", "--db", str(Path(tmp_path) / "a.db")]) == 2
    assert "neither 'auto', 'tiny'" in caplog.text


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
