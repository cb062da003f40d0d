"""The image metrics in the launched app (tiny model, gradio_client): nothing of them
before the guess, the FLIP column in the reveal after it, and the metric section in the
Results' /results output."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client

from core.game.metric_view import FLIP_HEADER
from tests.app_server import generate_args, launched_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tiny_engine, tmp_path_factory):
    with launched_app(tiny_engine, tmp_path_factory.mktemp("app")) as launched:
        yield launched


def test_flip_reaches_the_player_only_in_the_reveal_and_results(served):
    c = Client(served.url, verbose=False, download_files=False)
    before = json.dumps(
        c.predict(*generate_args("a lighthouse at dusk", "duel"), api_name="/generate")
    )
    stored = {
        r["variant"]: r["flip_mean"]
        for r in served.store._conn().execute("SELECT variant, flip_mean FROM images")
    }
    quantized = [v for v, f in stored.items() if f is not None]
    assert quantized and all(0 < stored[v] < 1 for v in quantized)
    assert "FLIP" not in before and "flip" not in before.lower()
    for v in quantized:
        assert f"{stored[v]:.4f}" not in before and repr(stored[v]) not in before

    table = c.predict("A", api_name="/guess")[1]
    assert table["headers"][-1] == FLIP_HEADER
    cells = [row[-1] for row in table["data"]]
    assert "reference" in cells
    assert {f"{stored[v]:.4f}" for v in quantized} & set(cells)

    section = c.predict(api_name="/results")[-1]
    assert "Which image metric predicts what people spot?" in section
    assert "67.0 pixels per degree" in section


def test_the_metric_section_fits_a_phone(tiny_engine, tmp_path):
    """The Results' metric section in headless Chromium at 390 px: shown, its tables in
    their own scrolling boxes, and the page never wider than the phone."""
    from core.bench.simulate import build_parser, bulk_load
    from tests.browser_helpers import launched_chromium

    with launched_app(tiny_engine, tmp_path) as served, launched_chromium() as browser:
        args = ["--bulk-guesses", "600", "--mode", "duel", "--generations", "12"]
        bulk_load(served.store, build_parser().parse_args(args))
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.set_default_timeout(120_000)  # a loaded 2-core machine; nothing here is timed
        try:
            page.goto(served.url)
            page.get_by_role("tab", name="Results").click()
            page.get_by_text("Which image metric predicts what people spot?").wait_for()
            page.get_by_text("Means over the first 10 of 12 generations").wait_for()
            boxes = page.locator(".metric-section .scroll-table").count()
            page_width = page.evaluate("document.documentElement.scrollWidth")
        finally:
            page.close()
    assert boxes == 2
    assert page_width <= 390
