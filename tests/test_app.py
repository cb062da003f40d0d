"""The launched app through gradio_client on the tiny model: full trio and duel rounds,
ready rounds across sessions, replayed guesses, and bad input rejected with a specific
message and nothing stored."""

from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.config import VARIANTS
from core.game.presentation import NO_READY_ROUND
from tests.app_server import generate_args, launched_app

pytestmark = pytest.mark.slow

SLOTS = ("A", "B", "C")


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    with launched_app(tiny_engine, tmp_path_factory.mktemp("app")) as launched:
        yield launched


def client(served) -> Client:
    return Client(served.url, verbose=False, download_files=False)


def image_updates(output: tuple) -> list[dict]:
    """The image updates of a round or reveal output, in slot order."""
    return [
        o
        for o in output
        if isinstance(o, dict)
        and str(o.get("label", "")).startswith(SLOTS)
        and not str(o.get("label")).endswith("(detail)")
    ]


def reveal_parts(output: tuple) -> tuple[str, dict, list[dict]]:
    verdict, table = output[0], output[1]
    return verdict, table, image_updates(output)


@pytest.mark.parametrize(("mode", "shown"), [("trio", 3), ("duel", 2)])
def test_full_round(served, mode, shown):
    c = client(served)
    before = served.counts()
    out = c.predict(*generate_args(f"a lighthouse at dusk ({mode})", mode), api_name="/generate")
    question, images = out[0], image_updates(out)
    assert ("original" if mode == "trio" else "quantized") in question
    visible = [u for u in images if u["visible"]]
    assert [u["label"] for u in visible] == list(SLOTS[:shown])
    assert all(u["value"]["url"].endswith(".png") for u in visible)
    assert served.counts()["generations"] == before["generations"] + 1

    verdict, table, labels = reveal_parts(c.predict("A", api_name="/guess"))
    # The reveal names every shown slot's variant, in the verdict and on the images.
    for slot in SLOTS[:shown]:
        assert f"**{slot}** = " in verdict
    named = {u["label"].split(": ", 1)[1] for u in labels}
    assert len(labels) == shown and named <= {v.label for v in VARIANTS.values()}
    assert "BF16 (original)" in named
    # The stats table has one row per shown variant, each with its slot.
    assert len(table["data"]) == shown
    assert {row[0] for row in table["data"]} == named
    assert sorted(row[1] for row in table["data"]) == list(SLOTS[:shown])
    assert served.counts()["guesses"] == before["guesses"] + 1


def test_replayed_guess_is_rejected_and_writes_nothing(served):
    c = client(served)
    c.predict(*generate_args("a teapot on a table"), api_name="/generate")
    c.predict("cant_tell", api_name="/guess")
    guesses = served.counts()["guesses"]
    with pytest.raises(AppError, match="this round was already answered"):
        c.predict("B", api_name="/guess")
    assert served.counts()["guesses"] == guesses


def test_guess_before_any_round_explains(served):
    with pytest.raises(AppError, match="Start a round first"):
        client(served).predict("A", api_name="/guess")


def test_ready_round_plays_another_sessions_generation(served):
    maker, player = client(served), client(served)
    maker.predict(*generate_args("a paper boat on a pond", "duel"), api_name="/generate")
    prompts, last_note = [], None
    # The player gets ready rounds of every stored generation (this one among them) until
    # none is left; then the reveal's note under the button and the endpoint explain it.
    for _ in range(served.counts()["generations"]):
        prompts.append(player.predict("duel", api_name="/ready_round")[1]["value"])
        last_note = player.predict("cant_tell", api_name="/guess")[-1]
    assert any("a paper boat on a pond" in p for p in prompts)
    assert len(set(prompts)) == len(prompts)  # never the same generation twice
    assert last_note == NO_READY_ROUND
    with pytest.raises(AppError, match="no new duel round is ready"):
        player.predict("duel", api_name="/ready_round")
