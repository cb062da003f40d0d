"""Bad input through the API: every value is checked on the server, rejected with a
message that names what is wrong, and nothing is stored (no rows, no image files)."""

from __future__ import annotations

import pytest
from gradio_client import Client

from tests.app_server import GUIDANCE, SIZE, STEPS, generate_args, launched_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    with launched_app(tiny_engine, tmp_path_factory.mktemp("input")) as launched:
        yield launched


@pytest.fixture
def unchanged(served):
    """Asserts, after the test, that no row and no image file was written."""
    counts, files = served.counts(), served.image_files()
    yield
    assert served.counts() == counts
    assert served.image_files() == files


def request(**changes):
    """/generate inputs with fixed-seed good values, changed by name."""
    values = dict(
        prompt="a red fox in snow",
        mode="trio",
        seed=1,
        random_seed=False,
        steps=STEPS,
        guidance=GUIDANCE,
        width=SIZE,
        height=SIZE,
    )
    return tuple((values | changes).values())


BAD_REQUESTS = {
    "empty prompt": (request(prompt=""), "the prompt is empty"),
    "whitespace prompt": (request(prompt=" \n\t "), "the prompt is empty"),
    "100 000 characters": (request(prompt="x" * 100_000), "the prompt has 100000 characters"),
    "NUL in prompt": (request(prompt="a\x00b"), "control character U\\+0000"),
    "escape in prompt": (request(prompt="red \x1b[31m fox"), "control character U\\+001B"),
    "prompt not text": (request(prompt=5), "the prompt must be text"),
    "width 250": (request(width=250), "width must be an integer in 256…2048, got 250"),
    "width 4096": (request(width=4096), "width must be an integer in 256…2048, got 4096"),
    "width not /16": (request(width=264), "width must be a multiple of 16, got 264"),
    "height 250": (request(height=250), "height must be an integer in 256…2048, got 250"),
    "height missing": (request(height=None), "height must be a number, got None"),
    "steps 0": (request(steps=0), "steps must be an integer in 1…100, got 0"),
    "steps 1000": (request(steps=1000), "steps must be an integer in 1…100, got 1000"),
    "steps 2.5": (request(steps=2.5), "steps must be a whole number, got 2.5"),
    "steps text": (request(steps="abc"), "steps must be a number, got 'abc'"),
    "guidance -1": (request(guidance=-1), "guidance must be a number in 0.0…20.0, got -1"),
    "guidance 21": (request(guidance=21), "guidance must be a number in 0.0…20.0, got 21"),
    "seed -1": (request(seed=-1), "seed must be an integer in 0…4294967295, got -1"),
    "seed 2**33": (request(seed=2**33), "seed must be an integer in 0…4294967295, got 8589934592"),
    "seed text": (request(seed="abc"), "seed must be a number, got 'abc'"),
    "random seed text": (request(random_seed="yes"), "random_seed must be true or false"),
    "bad mode": (request(mode="quartet"), "mode must be one of trio, duel, got 'quartet'"),
    "mode not text": (request(mode=3), "mode must be one of trio, duel, got 3"),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_generate_request_is_rejected(served, name):
    inputs, message = BAD_REQUESTS[name]
    c = Client(served.url, verbose=False, download_files=False)
    with pytest.raises(Exception, match=message):
        c.predict(*inputs, api_name="/generate")


@pytest.fixture(scope="module")
def duel_client(served):
    """A client in the middle of a duel round (generated before the counts are taken)."""
    c = Client(served.url, verbose=False, download_files=False)
    c.predict(*generate_args("two pears", "duel"), api_name="/generate")
    return c


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("Z", "answer must be one of A, B or 'cant_tell', got 'Z'"),
        ("C", "answer must be one of A, B or 'cant_tell', got 'C'"),
        ("", "answer must be one of A, B or 'cant_tell', got ''"),
        ("a", "answer must be one of A, B or 'cant_tell', got 'a'"),
    ],
)
def test_bad_guess_is_rejected(duel_client, answer, message):
    with pytest.raises(Exception, match=message):
        duel_client.predict(answer, api_name="/guess")


@pytest.mark.usefixtures("unchanged")
def test_guess_with_a_bad_mode_records_nothing(duel_client):
    with pytest.raises(Exception, match="mode must be one of trio, duel"):
        duel_client.predict("A", "quartet", api_name="/guess")


@pytest.mark.usefixtures("unchanged")
def test_ready_round_with_a_bad_mode_is_rejected(served):
    c = Client(served.url, verbose=False, download_files=False)
    with pytest.raises(Exception, match="mode must be one of trio, duel, got 'solo'"):
        c.predict("solo", api_name="/ready_round")


def test_uploads_are_refused(served):
    """The app takes no files: anything but a tiny body is refused by the upload route."""
    import httpx

    response = httpx.post(
        served.url + "gradio_api/upload",
        files={"files": ("x.png", b"\x89PNG" + b"0" * 10_000, "image/png")},
    )
    assert response.status_code in (400, 413), response.text
