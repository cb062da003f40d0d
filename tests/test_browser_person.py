"""A player is a person, not a page load: headless Chromium reloads the page.

* The person's id (a signed token in the page's local storage, gr.BrowserState) survives a
  reload: every round and guess of the page, before and after reloading, is stored under
  one ``session_id``.
* A round left unanswered is restored by a reload (the same round, nothing new drawn),
  and a round whose answer the person has seen is never served to them again: with two
  ready generations, two rounds in all, then "No ready round left for you".
* A new browser (its own local storage) is another person.
* Signed in (on a Space with OAuth), two browsers of one account are one person, stored
  under the account's keyed hash; the page says who is signed in.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

import app
from core.game.identity import ACCOUNT_ID, BROWSER_ID
from core.store import bench_queries
from tests.app_server import SIZE, STEPS, launched_app
from tests.browser_helpers import launched_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 120_000  # a deadline for a hang on a loaded machine; nothing here is timed
QUESTION = "Which one is the original (BF16)?"
IMAGES_SHOWN = (
    "[...document.querySelectorAll('.round-images img')]"
    ".filter(i => i.offsetParent !== null && i.complete && i.naturalWidth > 0).length >= 3"
)


@pytest.fixture(scope="module")
def browser():
    with launched_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    with launched_app(tiny_engine, tmp_path_factory.mktemp("person")) as launched:
        for seed in (21, 22):
            settings = tiny_engine.default_settings(seed=seed).with_(
                steps=STEPS, width=SIZE, height=SIZE
            )
            launched.store.save_generation(tiny_engine.generate(f"ready {seed}", settings))
        yield launched


def open_page(page, url: str) -> None:
    """Load (or reload) the page and wait until it knows its player: Generate enabled."""
    page.goto(url)
    expect(page.get_by_role("button", name="Generate", exact=True)).to_be_enabled()


def answer_a(page) -> None:
    page.get_by_role("button", name="A", exact=True).click()
    page.locator("text=/Right: |Not quite: /").first.wait_for()


def stored_token(page) -> str | None:
    """The person token as local storage holds it (encrypted by gr.BrowserState with a
    fresh IV at each write, so its text changes on every load; the person does not)."""
    return page.evaluate("(key) => localStorage.getItem(key)", app.PERSON_STORAGE_KEY)


def test_a_reload_keeps_the_person_and_never_serves_an_answered_round(browser, served):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        open_page(page, served.url)
        assert stored_token(page), "the page keeps a person token in local storage"

        page.get_by_role("button", name="Play a ready round").click()
        page.get_by_text(QUESTION).wait_for()
        page.wait_for_function(IMAGES_SHOWN)
        (first,) = served.answer_keys()
        person = first["session_id"]
        assert BROWSER_ID.fullmatch(person), person  # a person id, signed in the token

        # Reload with the round unanswered: the same round comes back, nothing new drawn.
        open_page(page, served.url)
        page.get_by_text(QUESTION).wait_for()
        page.wait_for_function(IMAGES_SHOWN)
        assert len(served.answer_keys()) == 1
        answer_a(page)
        guesses = bench_queries.guess_check(served.store, person)["round_ids"]
        assert guesses == [first["id"]]  # the restored round was the one answered

        # Reload: the answered generation is not served again; the other one is.
        open_page(page, served.url)
        expect(page.get_by_text(QUESTION)).to_be_hidden()
        page.get_by_role("button", name="Play a ready round").click()
        page.get_by_text(QUESTION).wait_for()
        page.wait_for_function(IMAGES_SHOWN)
        rounds = served.answer_keys()
        assert len(rounds) == 2
        assert rounds[1]["generation_id"] != first["generation_id"]
        answer_a(page)

        # Reload once more: both generations answered, nothing left for this person.
        open_page(page, served.url)
        page.get_by_text("No ready round left for you").wait_for()
        expect(page.get_by_role("button", name="Play a ready round")).to_be_disabled()
        assert {r["session_id"] for r in served.answer_keys()} == {person}
        assert len(bench_queries.guess_check(served.store, person)["round_ids"]) == 2

        # Another browser is another person: both generations are ready for them.
        other = browser.new_context()
        try:
            stranger = other.new_page()
            stranger.set_default_timeout(TIMEOUT_MS)
            open_page(stranger, served.url)
            stranger.get_by_role("button", name="Play a ready round").click()
            stranger.get_by_text(QUESTION).wait_for()
            newcomer = served.answer_keys()[-1]["session_id"]
            assert BROWSER_ID.fullmatch(newcomer) and newcomer != person
        finally:
            other.close()
    finally:
        context.close()


def session_cookie(client_secret: str, userinfo: dict) -> str:
    """The cookie Gradio's OAuth callback would leave after a sign-in: Starlette's signed
    session (itsdangerous, keyed as gradio.oauth.attach_oauth keys it) holding the
    profile. No Hub is reachable here, so the test signs in by holding it."""
    import base64
    import hashlib
    import json
    import time

    import itsdangerous

    session = {"oauth_info": {"userinfo": userinfo, "expires_at": int(time.time()) + 3600}}
    signer = itsdangerous.TimestampSigner(
        hashlib.sha256(f"{client_secret}-v4".encode()).hexdigest()
    )
    return signer.sign(base64.b64encode(json.dumps(session).encode())).decode()


def test_a_signed_in_player_is_their_account(browser, tiny_engine, tmp_path, monkeypatch):
    import gradio.oauth as gradio_oauth

    space = {
        "OAUTH_CLIENT_ID": "client", "OAUTH_CLIENT_SECRET": "secret-of-the-space",
        "OAUTH_SCOPES": "openid profile", "OPENID_PROVIDER_URL": "https://huggingface.co",
    }  # fmt: skip
    # As on a Space with `hf_oauth: true` (Gradio reads these when it is imported).
    # Only Gradio's OAuth is told it runs on a Space (the real routes, not the local mock,
    # which would ask the Hub who is logged in here).
    monkeypatch.setattr(gradio_oauth, "get_space", lambda: "someone/spot-the-quantized")
    for name, value in space.items():
        monkeypatch.setattr(gradio_oauth, name, value)
    userinfo = {
        "sub": "65f0c0ffee00000000000042", "name": "Alice Example",
        "preferred_username": "alice-the-tester",
        "profile": "https://huggingface.co/alice-the-tester", "picture": "",
    }  # fmt: skip
    with launched_app(tiny_engine, tmp_path, oauth=True) as served:
        settings = tiny_engine.default_settings(seed=31).with_(steps=STEPS, width=SIZE, height=SIZE)
        served.store.save_generation(tiny_engine.generate("ready 31", settings))
        account = served.arena.persons.account_person(app.account_subject(userinfo))
        cookie = session_cookie(space["OAUTH_CLIENT_SECRET"], userinfo)
        for _ in range(2):  # two browsers, one account
            context = browser.new_context()
            context.add_cookies([{"name": "session", "value": cookie, "url": served.url}])
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            try:
                open_page(page, served.url)
                page.get_by_role("button", name="Logout (alice-the-tester)").wait_for()
                if not served.answer_keys():
                    page.get_by_role("button", name="Play a ready round").click()
                    page.get_by_text(QUESTION).wait_for()
                    answer_a(page)
                else:  # the second browser: the account has answered the only round
                    page.get_by_text("No ready round left for you").wait_for()
            finally:
                context.close()
        (played,) = served.answer_keys()
        assert played["session_id"] == account and ACCOUNT_ID.fullmatch(account)
        # A browser that is not signed in is someone else.
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            open_page(page, served.url)
            page.get_by_role("button", name="Sign in with Hugging Face").wait_for()
            expect(page.get_by_role("button", name="Play a ready round")).to_be_enabled()
        finally:
            context.close()
