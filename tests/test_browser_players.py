"""Real browsers (headless Chromium) as several players at once.

* A prompt planted with a Markdown image, a heading and a ``<script>`` reaches another
  player, in the question and in the Results table, as literal text: the browser fetches
  nothing from the planted host, draws no heading and runs no script.
* Ten new visitors arrive together and click *Play a ready round* the moment the page
  shows: every round is drawn and can be answered (the page-load handler used to replace
  the state of a round started while it ran).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.app_server import SIZE, STEPS, launched_app
from tests.browser_helpers import CHROMIUM_ARGS, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 180_000  # ten Chromium pages on two shared cores can take a while
VISITORS = 10
PLANTED_HOST = "planted.invalid"
PLANTED = (
    f"![](http://{PLANTED_HOST}/pixel.png) a red bicycle\n"
    "# Hint: the answer is A\n"
    "<script>window.planted = 1</script><img src=x onerror='window.planted = 2'>"
)
IMAGES_SHOWN = "document.querySelectorAll('img[src*=\"gradio_api/file\"]').length >= {n}"


@pytest.fixture(scope="module")
def chromium():
    return chromium_path()


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    with launched_app(tiny_engine, tmp_path_factory.mktemp("players")) as launched:
        yield launched


def store_generation(served, engine, prompt: str, seed: int) -> int:
    settings = engine.default_settings(seed=seed).with_(steps=STEPS, width=SIZE, height=SIZE)
    return served.store.save_generation(engine.generate(prompt, settings))


async def with_browser(chromium: str, play) -> object:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            return await play(browser)
        finally:
            await browser.close()


def test_a_planted_prompt_reaches_other_players_as_text(chromium, served, tiny_engine):
    generation = store_generation(served, tiny_engine, PLANTED, seed=3)
    for i in range(5):  # enough decided answers for the Results' "hardest prompts" table
        view = served.arena.game.new_round(f"earlier-{i}", "duel", generation)
        served.arena.game.guess(f"earlier-{i}", view.round_id, "A")

    async def play(browser):
        context = await browser.new_context()
        requested: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(served.url)
        await page.get_by_role("button", name="Play a ready round").click()
        await page.wait_for_function(IMAGES_SHOWN.format(n=3))
        shown = await page.get_by_label("This round's prompt").input_value()
        question = await page.get_by_text("Which one is the original (BF16)?").inner_text()
        headings = await page.locator("h1, h2, h3, h4, h5, h6").all_inner_texts()

        await page.get_by_role("tab", name="Results").click()
        await page.get_by_role("button", name="Refresh").click()
        cell = page.get_by_text(f"![](http://{PLANTED_HOST}/pixel.png)", exact=False)
        await cell.first.wait_for(state="attached")  # in the table, as text
        # Let any image the cell might have made finish loading (or failing).
        await page.wait_for_function("[...document.images].every(image => image.complete)")
        planted = await page.evaluate("window.planted")
        headings += await page.locator("h1, h2, h3, h4, h5, h6").all_inner_texts()
        await context.close()
        return shown, question, headings, planted, requested

    shown, question, headings, planted, requested = asyncio.run(with_browser(chromium, play))
    assert shown == PLANTED  # every character, as typed
    assert "Hint" not in question
    assert not any("Hint" in h for h in headings), headings
    assert planted is None  # neither the script nor an onerror handler ran
    assert not [url for url in requested if PLANTED_HOST in url]


def test_ten_visitors_play_a_ready_round_on_arrival(chromium, served, tiny_engine):
    for seed in (11, 12):
        store_generation(served, tiny_engine, f"a ready image {seed}", seed)
    guesses = served.counts()["guesses"]

    async def visitor(browser) -> str:
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            await page.goto(served.url, wait_until="commit")
            await page.get_by_role("button", name="Play a ready round").click()
            await page.wait_for_function(IMAGES_SHOWN.format(n=3))
            await page.get_by_role("button", name="A", exact=True).click()
            verdict = page.locator("text=/Right: |Not quite: |Start a round first/").first
            await verdict.wait_for()
            return await verdict.inner_text()
        finally:
            await context.close()

    async def arrive(browser):
        return await asyncio.gather(*(visitor(browser) for _ in range(VISITORS)))

    verdicts = asyncio.run(with_browser(chromium, arrive))
    assert all("Right: " in v or "Not quite: " in v for v in verdicts), verdicts
    assert served.counts()["guesses"] == guesses + VISITORS
