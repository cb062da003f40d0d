"""Limits of the launched app: a full generation queue answers "busy" at once while votes
and results stay prompt, and the per-player generation limit holds."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client

from tests.app_server import GatedEngine, generate_args, launched_app

pytestmark = pytest.mark.slow

PROMPT_SECONDS = 1.0  # "promptly": well under the seconds a generation takes


@pytest.fixture(scope="module")
def gated(tiny_engine):
    return GatedEngine(tiny_engine)


@pytest.fixture(scope="module")
def served(gated, tmp_path_factory):
    # One generation runs and one may wait: the third concurrent prompt finds the queue full.
    with launched_app(
        gated, tmp_path_factory.mktemp("limits"), queue_size=1, generations_per_minute=1
    ) as launched:
        yield launched


def new_client(served) -> Client:
    return Client(served.url, verbose=False, download_files=False)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def test_full_queue_answers_busy_while_votes_and_results_stay_prompt(served, gated):
    voter = new_client(served)
    voter.predict(*generate_args("a quiet harbour"), api_name="/generate")

    gated.gate.clear()
    holders = [new_client(served) for _ in range(2)]
    jobs = [
        c.submit(*generate_args(f"held {i}"), api_name="/generate") for i, c in enumerate(holders)
    ]
    try:
        for _ in jobs:  # both reached the engine: one "running", one waiting for it
            assert gated.waiting.acquire(timeout=30)
        counts = served.counts()

        late = new_client(served)
        for prompt in ("one too many", "and another"):
            start = time.perf_counter()
            with pytest.raises(Exception, match="the generator is busy") as busy:
                late.predict(*generate_args(prompt), api_name="/generate")
            assert time.perf_counter() - start < PROMPT_SECONDS, "a busy answer must come at once"
        assert "(1 prompt already waiting)" in str(busy.value)

        reveal, seconds = timed(voter.predict, "A", api_name="/guess")
        assert seconds < PROMPT_SECONDS, f"a guess took {seconds:.2f} s behind generation"
        assert "A" in reveal[0]
        results, seconds = timed(voter.predict, api_name="/results")
        assert seconds < 2 * PROMPT_SECONDS, f"/results took {seconds:.2f} s behind generation"
        detection = results[0]
        answered = detection["headers"].index("Answered")
        assert detection["data"][0][answered] == 1  # the trio: answered once
        _, seconds = timed(new_client(served).predict, "trio", api_name="/ready_round")
        assert seconds < PROMPT_SECONDS
        assert counts["guesses"] + 1 == served.counts()["guesses"]
    finally:
        gated.gate.set()
    for job in jobs:
        assert job.result(timeout=60)[0].startswith("### Which one is the original")


def test_generation_rate_limit_per_player(served):
    player, other = new_client(served), new_client(served)
    player.predict(*generate_args("limited 0"), api_name="/generate")
    counts = served.counts()
    with pytest.raises(Exception, match="at most 1 generation a minute per player"):
        player.predict(*generate_args("limited 1"), api_name="/generate")
    assert served.counts() == counts
    # The limit is per player: another session still generates, and the limited player
    # can still vote.
    other.predict(*generate_args("someone else"), api_name="/generate")
    player.predict("cant_tell", api_name="/guess")


def test_refused_prompts_do_not_count_against_the_limit(served):
    player = new_client(served)
    for bad in ("\u200b\ufeff", "a \u202efox", "\x07"):
        with pytest.raises(Exception, match="prompt"):
            player.predict(*generate_args(bad), api_name="/generate")
    # The limit is one generation a minute: it is still unused.
    player.predict(*generate_args("after three refusals"), api_name="/generate")
