"""A player is a person, not a page load: headless Chromium reloads the page.

* The person's id (a signed token in the page's local storage, gr.BrowserState) survives a
  reload: every round and guess of the page, before and after reloading, is stored under
  one ``session_id``.
* A round left unanswered is restored by a reload (the same round, nothing new drawn),
  and a round whose answer the person has seen is never served to them again: with two
  ready generations, two rounds in all, then "No ready round left for you".
* A new browser (its own local storage) is another person.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

import app
from core.game.identity import BROWSER_ID
from tests.app_server import SIZE, STEPS, launched_app
from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 120_000  # a deadline for a hang on a loaded machine; nothing here is timed
QUESTION = "Which one is the original (BF16)?"
IMAGES_SHOWN = (
    "[...document.querySelectorAll('.round-images img')]"
    ".filter(i => i.offsetParent !== null && i.complete && i.naturalWidth > 0).length >= 3"
)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


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
        guesses = served.store.guess_check(person)["round_ids"]
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
        assert len(served.store.guess_check(person)["round_ids"]) == 2

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
