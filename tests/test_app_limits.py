"""Limits of the launched app: a full generation queue answers "busy" while votes and
results are still answered, and the per-player generation limit holds."""

from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.app_server import DEADLINE_SECONDS, GatedEngine, generate_args, launched_app

pytestmark = pytest.mark.slow


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


def answer(client: Client, *args, api_name: str):
    """The endpoint's answer, within DEADLINE_SECONDS (a call that waited behind a held
    generation would never come: the gate stays closed longer)."""
    return client.submit(*args, api_name=api_name).result(timeout=DEADLINE_SECONDS)


def test_full_queue_answers_busy_while_votes_and_results_are_answered(served, gated):
    voter = new_client(served)
    voter.predict(*generate_args("a quiet harbour"), api_name="/generate")

    gated.gate.clear()
    holders = [new_client(served) for _ in range(2)]
    jobs = [
        c.submit(*generate_args(f"held {i}"), api_name="/generate") for i, c in enumerate(holders)
    ]
    try:
        for _ in jobs:  # both reached the engine: one "running", one waiting for it
            assert gated.waiting.acquire(timeout=DEADLINE_SECONDS)
        counts = served.counts()

        late = new_client(served)
        for prompt in ("one too many", "and another"):
            with pytest.raises(AppError, match="the generator is busy") as busy:
                answer(late, *generate_args(prompt), api_name="/generate")
        assert "(1 prompt already waiting)" in str(busy.value)

        reveal = answer(voter, "A", api_name="/guess")
        assert "A" in reveal[0]
        results = answer(voter, api_name="/results")
        detection = results[0]
        answered = detection["headers"].index("Answered")
        assert detection["data"][0][answered] == 1  # the trio: answered once
        ready = answer(new_client(served), "trio", api_name="/ready_round")
        assert ready[0].startswith("### Which one is the original")
        # All of it was answered while both generations were held: the queue was full.
        assert not any(job.done() for job in jobs)
        assert counts["guesses"] + 1 == served.counts()["guesses"]
    finally:
        gated.gate.set()
    for job in jobs:
        assert job.result(timeout=DEADLINE_SECONDS)[0].startswith("### Which one is the original")


def test_generation_rate_limit_per_player(served):
    player, other = new_client(served), new_client(served)
    player.predict(*generate_args("limited 0"), api_name="/generate")
    counts = served.counts()
    with pytest.raises(AppError, match="at most 1 generation a minute per player"):
        player.predict(*generate_args("limited 1"), api_name="/generate")
    assert served.counts() == counts
    # The limit is per player: another session still generates, and the limited player
    # can still vote.
    other.predict(*generate_args("someone else"), api_name="/generate")
    player.predict("cant_tell", api_name="/guess")


def test_refused_prompts_do_not_count_against_the_limit(served):
    player = new_client(served)
    for bad in ("\u200b\ufeff", "a \u202efox", "\x07"):
        with pytest.raises(AppError, match="prompt"):
            player.predict(*generate_args(bad), api_name="/generate")
    # The limit is one generation a minute: it is still unused.
    player.predict(*generate_args("after three refusals"), api_name="/generate")
