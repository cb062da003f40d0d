"""The Results tab in headless Chromium on a 390-pixel phone: plain sentences first, and the
detection chart scaled so that its smallest text is at least 11 CSS pixels."""

from __future__ import annotations

import pytest

from core.bench.simulate import build_parser, bulk_load
from core.game import presentation
from tests.app_server import launched_app
from tests.browser_helpers import launched_chromium

PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 120_000  # generous for a loaded 2-core machine; nothing here is timed


@pytest.fixture(scope="module")
def chromium_browser():
    with launched_chromium() as browser:
        yield browser


def test_results_on_a_phone(chromium_browser, tiny_engine, tmp_path):
    with launched_app(tiny_engine, tmp_path) as served:
        args = ["--bulk-guesses", "3000", "--mode", "both", "--generations", "12",
                "--accuracy", "nf4=0.7"]  # fmt: skip
        bulk_load(served.store, build_parser().parse_args(args))
        page = chromium_browser.new_page(viewport=PHONE)
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(served.url)
            page.get_by_role("tab", name="Results").click()
            page.get_by_text("Can people tell?").wait_for()
            # One plain sentence per comparison comes first.
            page.get_by_text("People can tell NF4 from BF16: right in 7").wait_for()
            chart = page.locator(".detection-chart img")
            chart.wait_for()
            shown = chart.evaluate("img => img.clientWidth")
            alt = chart.get_attribute("alt")
        finally:
            page.close()
        figure = presentation.detection_chart(served.arena.results())
    assert alt.startswith(presentation.CHART_TITLE)
    # The figure's smallest text, scaled to the width the phone shows it at.
    assert presentation.chart_min_text_px(figure, shown) >= 11, shown
