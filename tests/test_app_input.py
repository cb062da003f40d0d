"""Bad input through the API: every value is checked on the server, rejected with a
short message that names what is wrong, and nothing is stored (no rows, no image files).
Uploads are refused at every size, oversized bodies before they are read, and a wrong
number of values names the endpoint's inputs."""

from __future__ import annotations

import gc
import json

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.limits import REQUEST_MAX_BYTES
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
    "zero-width only": (request(prompt="\u200b\u200d\u2060"), "no visible character"),
    "byte-order mark only": (request(prompt=" \ufeff "), "no visible character"),
    "bidi override": (request(prompt="a \u202efox"), "bidirectional control U\\+202E"),
    "bidi isolate": (request(prompt="\u2067fox\u2069"), "bidirectional control U\\+2067"),
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_generate_request_is_rejected(served, name):
    inputs, message = BAD_REQUESTS[name]
    c = Client(served.url, verbose=False, download_files=False)
    with pytest.raises(AppError, match=message):
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
    with pytest.raises(AppError, match=message):
        duel_client.predict(answer, api_name="/guess")


@pytest.mark.usefixtures("unchanged")
def test_guess_with_a_bad_mode_records_nothing(duel_client):
    with pytest.raises(AppError, match="mode must be one of trio, duel"):
        duel_client.predict("A", "quartet", api_name="/guess")


@pytest.mark.usefixtures("unchanged")
def test_ready_round_with_a_bad_mode_is_rejected(served):
    c = Client(served.url, verbose=False, download_files=False)
    with pytest.raises(AppError, match="mode must be one of trio, duel, got 'solo'"):
        c.predict("solo", api_name="/ready_round")


LONG = "x" * 1_000_000


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("inputs", "api_name"),
    [
        (request(mode=LONG[:200_000]), "/generate"),
        (request(seed=LONG[:200_000]), "/generate"),
        ((LONG[:200_000],), "/ready_round"),
    ],
)
def test_a_long_bad_value_yields_a_short_error(served, inputs, api_name):
    c = Client(served.url, verbose=False, download_files=False)
    with pytest.raises(AppError) as error:
        c.predict(*inputs, api_name=api_name)
    message = str(error.value)
    assert "characters)" in message and len(message) < 300, message[:400]


@pytest.mark.usefixtures("unchanged")
def test_a_long_bad_answer_yields_a_short_error(duel_client):
    with pytest.raises(AppError) as error:
        duel_client.predict(LONG[:200_000], api_name="/guess")
    assert "answer must be one of A, B" in str(error.value) and len(str(error.value)) < 300


def raw_call(served, api_name: str, values: list) -> str:
    """POST values to /gradio_api/call/<api_name> and return the event stream's text."""
    # json.dumps escapes what UTF-8 cannot carry (a lone surrogate as "\\ud800").
    started = httpx.post(
        f"{served.url}gradio_api/call/{api_name}",
        content=json.dumps({"data": values}).encode(),
        headers={"content-type": "application/json"},
    )
    assert started.status_code == 200, started.text
    event_id = started.json()["event_id"]
    return httpx.get(f"{served.url}gradio_api/call/{api_name}/{event_id}", timeout=60).text


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("count", [0, 1, 7, 10])
def test_a_wrong_number_of_values_names_the_endpoint_and_its_inputs(served, count):
    stream = raw_call(served, "generate", [None] * count)
    assert "event: error" in stream
    assert (
        f"/generate takes 8 values (Prompt, Mode, Seed, Random seed, Steps, Guidance, Width, "
        f"Height), got {count}"
    ) in stream


@pytest.mark.usefixtures("unchanged")
def test_a_lone_surrogate_is_refused_before_the_engine(served):
    # gradio_client cannot even encode it; raw JSON can ("\\ud800").
    stream = raw_call(served, "generate", list(request(prompt="a \ud800 fox")))
    assert "the prompt is not valid text: it contains a lone surrogate U+D800" in stream


@pytest.mark.usefixtures("unchanged")
def test_a_guess_without_values_names_its_inputs(served):
    stream = raw_call(served, "guess", [])
    assert "/guess takes 2 values" in stream and "got 0" in stream


@pytest.mark.parametrize("size", [0, 1, 1024])
def test_uploads_are_refused_at_every_size(served, size):
    files_before = set(served.upload_dir_files())
    response = httpx.post(
        served.url + "gradio_api/upload",
        files={"files": ("x.png", b"\x89PNG"[:size] + b"0" * max(0, size - 4), "image/png")},
    )
    assert response.status_code == 403, response.text
    assert "accepts no uploads" in response.text
    assert set(served.upload_dir_files()) == files_before


def rss_bytes() -> int:
    """This process's resident set (the app runs in it), from /proc/self/status."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.usefixtures("unchanged")
def test_oversized_bodies_are_refused_unread_and_memory_stays_flat(served):
    body = b'{"data": ["' + b"x" * (32 * 1024 * 1024) + b'"]}'  # 32 MiB, well-formed JSON
    url = served.url + "gradio_api/call/generate"
    with httpx.Client(timeout=60) as http:
        response = http.post(url, content=body[: REQUEST_MAX_BYTES + 1])  # just over
        assert response.status_code == 413 and "over the limit" in response.text
        gc.collect()
        before = rss_bytes()
        for _ in range(20):
            try:
                response = http.post(url, content=body)
            except httpx.TransportError:
                continue  # the server may close before the client has sent everything
            assert response.status_code == 413
    gc.collect()
    # Parsed in full, each body cost Gradio 210-280 MiB that stayed (the finding).
    assert rss_bytes() - before < 64 * 1024 * 1024


@pytest.mark.usefixtures("unchanged")
def test_a_chunked_body_is_cut_off_at_the_limit(served):
    def chunks():
        for _ in range(64):
            yield b"x" * (64 * 1024)

    response = httpx.post(served.url + "gradio_api/call/generate", content=chunks(), timeout=60)
    assert response.status_code == 413
