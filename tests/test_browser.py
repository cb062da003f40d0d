"""A real browser: headless Chromium (Debian's /usr/bin/chromium) plays one round.

Types a prompt, clicks Generate, waits for the images, answers, sees the reveal (verdict
and cost table), checks the guess is in the database and opens the Results tab; then
exports the data and downloads the zip. The
screenshots go to test-artifacts/ (git-ignored); with SPOT_SCREENSHOTS=assets the README's
screenshots are written to assets/ instead:

    SPOT_SCREENSHOTS=assets python -m pytest -q tests/test_browser.py
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from tests.app_server import launched_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000  # the tiny model's default 4 steps take a few seconds


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    with launched_app(tiny_engine, tmp_path_factory.mktemp("browser")) as launched:
        yield launched


@pytest.fixture(scope="module")
def shots() -> Path:
    target = os.environ.get("SPOT_SCREENSHOTS")
    folder = REPO / (target if target else "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save(page, path: Path, *, clip_top: float = 0, full_page: bool = False) -> None:
    """A screenshot; for the README (SPOT_SCREENSHOTS) cut to 256 colours to stay small."""
    if clip_top:
        size = page.viewport_size
        clip = {"x": 0, "y": clip_top, "width": size["width"], "height": size["height"] - clip_top}
        page.screenshot(path=str(path), clip=clip)
    else:
        page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("SPOT_SCREENSHOTS"):
        from PIL import Image

        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=256)
        small.save(path, optimize=True)


def test_play_a_round_in_the_browser(browser_context, served, shots):
    page = browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served.url)
    page.get_by_label("Prompt").fill("a lighthouse on a cliff at dusk")
    page.get_by_role("button", name="Generate", exact=True).click()

    page.get_by_text("Which one is the original (BF16)?").wait_for()
    page.wait_for_function("document.querySelectorAll('img[src*=\"gradio_api/file\"]').length >= 3")
    save(page, shots / "screenshot-play.png")

    page.get_by_role("button", name="A", exact=True).click()
    verdict = page.locator("text=/Right: |Not quite: /").first
    verdict.wait_for()
    page.get_by_text("Measured cost").first.wait_for()
    assert page.get_by_text("BF16 (original)").first.is_visible()
    top = page.get_by_text("Which one is the original (BF16)?").bounding_box()
    bottom = page.get_by_role("button", name="Next ready round").bounding_box()
    page.set_viewport_size({"width": 1280, "height": int(bottom["y"] + bottom["height"]) + 16})
    save(page, shots / "screenshot-reveal.png", clip_top=top["y"] - 16)
    page.set_viewport_size({"width": 1280, "height": 900})

    rounds = served.answer_keys()
    assert len(rounds) == 1
    assert served.counts()["guesses"] == 1

    page.get_by_role("tab", name="Results").click()
    page.get_by_role("button", name="Refresh").click()
    page.get_by_text("Detection rate with its interval").first.wait_for()
    page.wait_for_timeout(1500)  # the chart is drawn after the tables arrive
    save(page, shots / "screenshot-results.png", full_page=True)
    page.close()


def test_download_the_data_in_the_browser(browser_context, served, tmp_path):
    page = browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served.url)
    page.get_by_role("tab", name="Results").click()
    page.get_by_role("button", name="Export the data (zip)").click()
    offer = page.get_by_role("button", name="Download spot-the-quantized-")
    offer.wait_for()
    with page.expect_download() as info:
        offer.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    assert {"guesses.csv", "rounds.csv", "summary.json"} <= {Path(n).name for n in names}
    page.close()
