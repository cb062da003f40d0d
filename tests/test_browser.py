"""A real browser: headless Chromium (Debian's /usr/bin/chromium) plays as a player would,
on a laptop (1280×900) and on a phone (390×844), against the app on the micro model.

Each viewport: the landing page (Generate on the first screen), a generated round (each
image at the largest whole multiple of its pixels that fits its column, scrolled into
view; an answer button under each; full screen at a whole factor too),
the detail view (the same region of every image, magnified: checked pixel for pixel), an
error (the round stays in place), the guess and its reveal, and the Results tab showing
that guess without Refresh. On the phone no table widens the page. The screenshots go to
test-artifacts/ (git-ignored); with SPOT_SCREENSHOTS=assets the README's screenshots are
written to assets/ instead:

    SPOT_SCREENSHOTS=assets python -m pytest -q tests/test_browser.py
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from core.game.detail import region_at
from tests.app_server import launched_app
from tests.browser_helpers import launched_chromium

# The laptop round is in the quick tier (`pytest -m "not slow"`): one browser round, one
# generation; the phone round and the download run in the full suite.
pytestmark = [pytest.mark.browser]

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 120_000  # generous: a loaded 2-core machine can be slow; nothing here is timed
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PROMPT = "a large red circle on the left, on a blue background"


@pytest.fixture(scope="module")
def chromium_browser():
    with launched_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def micro_engine():
    from core.engine.generation import Engine

    return Engine.load("micro", device="cpu")


@pytest.fixture(scope="module")
def served(micro_engine, tmp_path_factory):
    with launched_app(micro_engine, tmp_path_factory.mktemp("browser")) as launched:
        yield launched


@pytest.fixture(scope="module")
def shots() -> Path:
    target = os.environ.get("SPOT_SCREENSHOTS")
    folder = REPO / (target if target else "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# The screenshots README shows; the others always go to test-artifacts/.
README_SHOTS = {
    "screenshot-play", "screenshot-detail", "screenshot-reveal", "screenshot-results",
    "screenshot-phone-play", "screenshot-phone-reveal",
}  # fmt: skip


def save(page, path: Path, *, full_page: bool = False) -> None:
    """A screenshot; for the README (SPOT_SCREENSHOTS) cut to 256 colours to stay small."""
    readme = bool(os.environ.get("SPOT_SCREENSHOTS")) and path.stem in README_SHOTS
    if not readme:
        path = REPO / "test-artifacts" / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    if readme:
        with Image.open(path) as image:
            small = image.convert("RGB").quantize(colors=256)
        small.save(path, optimize=True)


def round_images(page) -> list[dict]:
    """Each shown round image: its rendered and natural width, and its column's width."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.round-images .slot')]
            .filter(col => col.offsetParent !== null)
            .map(col => {
                const img = col.querySelector('img');
                const button = col.querySelector('button.lg, button.primary');
                const r = img.getBoundingClientRect();
                return {src: img.src, width: r.width, natural: img.naturalWidth,
                        rendering: getComputedStyle(img).imageRendering,
                        column: col.clientWidth, top: r.top, bottom: r.bottom,
                        button_top: button ? button.getBoundingClientRect().top : null};
            })"""
    )


def wait_in_view(page, selector: str) -> None:
    """Wait until the top of ``selector`` is inside the window (an action's result was
    scrolled into view), then check it."""
    script = f"""() => {{
        const r = document.querySelector({selector!r}).getBoundingClientRect();
        return r.height > 0 && r.top >= -1 && r.top < window.innerHeight - 40;
    }}"""
    page.wait_for_function(script)
    assert page.evaluate(script)


def fetch_png(page, url: str) -> Image.Image:
    response = page.request.get(url)
    assert response.ok, url
    return Image.open(io.BytesIO(response.body())).convert("RGB")


def start_round(page, served) -> list[dict]:
    page.get_by_role("textbox", name="Prompt", exact=True).fill(PROMPT)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text("Which one is the original (BF16)?").wait_for()
    page.wait_for_function(
        "[...document.querySelectorAll('.round-images img')]"
        ".filter(i => i.complete && i.naturalWidth > 0 && i.dataset.spotScale).length >= 3"
    )
    return round_images(page)


def check_detail_view(page, images: list[dict]) -> None:
    """Point at a spot of image B: every slot's detail is that region, magnified."""
    first = page.locator(".round-images img").nth(1)
    box = first.bounding_box()
    first.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.6})
    page.wait_for_function(
        "[...document.querySelectorAll('.detail-image img')]"
        ".filter(i => i.complete && i.naturalWidth > 0 && i.dataset.spotScale).length >= 3"
    )
    page.get_by_text("The same region of every image").wait_for()
    caption = page.locator(".detail-note").last.inner_text()
    side, x, y, factor = map(
        int, re.search(r"(\d+)×\d+ px around \((\d+), (\d+)\), magnified (\d+)×", caption).groups()
    )
    details = page.evaluate("[...document.querySelectorAll('.detail-image img')].map(i => i.src)")
    assert len(details) == len(images) == 3
    for image, detail_url in zip(images, details, strict=True):
        full = fetch_png(page, image["src"])
        region = region_at(full.size, (x, y))
        assert (region.side, region.factor) == (side, factor)
        expected = full.crop(region.box).resize(
            (side * factor, side * factor), Image.Resampling.NEAREST
        )
        assert fetch_png(page, detail_url).tobytes() == expected.tobytes()


def play(page, served, shots: Path, name: str) -> None:
    page.goto(served.url)
    generate = page.get_by_role("button", name="Generate", exact=True)
    generate.wait_for()
    # Generate is on the first screen, phone included.
    assert (
        generate.bounding_box()["y"] + generate.bounding_box()["height"]
        <= page.viewport_size["height"]
    )
    save(page, shots / f"{name}-landing.png")

    images = start_round(page, served)
    # Generate brought the round's images into view.
    wait_in_view(page, "#round-images")
    images = round_images(page)
    for image in images:
        # The largest whole multiple (at least 2) of the micro model's 128 px that fits the
        # column: each source pixel a crisp square (384 px on a laptop, 256 on a phone).
        assert image["natural"] == 128, image
        factor = image["width"] / image["natural"]
        assert factor == int(factor) and factor >= 2, image
        assert image["width"] <= image["column"] < image["width"] + image["natural"] + 8, image
        assert image["rendering"] == "pixelated", image
        # The answer button is right under its own image (a phone need not scroll past
        # every image to answer).
        assert 0 <= image["button_top"] - image["bottom"] < 80, image
    save(page, shots / f"{name}-play.png", full_page=True)

    # Full screen: the image's box fills the window, the image at a whole factor.
    first = page.locator(".round-images .round-image").first
    toggle = first.locator("button[aria-label*='creen' i]")
    toggle.click()
    page.wait_for_function(
        "(w) => document.querySelector('.round-images .round-image')"
        ".getBoundingClientRect().width >= w - 2",
        arg=page.viewport_size["width"],
    )
    # Full screen: the largest whole factor that fits the window (7 × 128 = 896 px of a
    # 900 px-high laptop window, 3 × 128 on the phone's 390 px width).
    side = min(page.viewport_size["width"], page.viewport_size["height"]) - 2
    expected = 128 * (side // 128)
    page.wait_for_function(
        "(w) => Math.round(document.querySelector('.round-images .round-image img')"
        ".getBoundingClientRect().width) === w",
        arg=expected,
    )
    shown, tall, natural = first.locator("img").evaluate(
        "img => [img.getBoundingClientRect().width, img.getBoundingClientRect().height, "
        "img.naturalWidth]"
    )
    assert shown == tall == expected and shown % natural == 0 and shown // natural >= 2
    toggle.click()
    page.wait_for_function(
        "(w) => document.querySelector('.round-images .round-image')"
        ".getBoundingClientRect().width < w - 30",
        arg=page.viewport_size["width"],
    )

    check_detail_view(page, images)
    # The tap brought the detail view into view.
    wait_in_view(page, "#detail-view")
    save(page, shots / f"{name}-detail.png", full_page=True)

    # An error is a notice; the round's images and detail stay as they were.
    srcs = [image["src"] for image in images]
    page.get_by_role("textbox", name="Prompt", exact=True).fill("")
    generate.click()
    page.get_by_text("the prompt is empty").first.wait_for()
    expect(generate).to_be_enabled()
    assert [image["src"] for image in round_images(page)] == srcs
    # Notices stand at the bottom of the window, newest only: never over Generate.
    toast = page.locator(".toast-body:visible")
    expect(toast).to_have_count(1)
    generate.scroll_into_view_if_needed()
    box, button = toast.bounding_box(), generate.bounding_box()
    assert box["y"] >= button["y"] + button["height"] or box["y"] + box["height"] <= button["y"]
    # Dismiss them all, hidden older ones included (a click on each close button).
    page.evaluate("document.querySelectorAll('.toast-close').forEach(b => b.click())")
    expect(page.locator(".toast-close")).to_have_count(0)

    guesses = served.counts()["guesses"]
    page.get_by_role("button", name="A", exact=True).click()
    page.locator("text=/Right: |Not quite: /").first.wait_for()
    page.get_by_text("Measured cost").first.wait_for()
    assert page.get_by_text("BF16 (original)").first.is_visible()
    assert served.counts()["guesses"] == guesses + 1
    # The answer brought the reveal into view.
    wait_in_view(page, "#reveal")
    save(page, shots / f"{name}-reveal.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]

    # The Results tab shows the guess just made, without Refresh.
    page.get_by_role("tab", name="Results").click()
    answered = str(guesses + 1)
    page.wait_for_function(
        """(answered) => [...document.querySelectorAll('.scroll-table')].some(t => {
            const lines = t.innerText.split('\\n').map(s => s.trim()).filter(Boolean);
            const row = lines.findIndex(line => line.startsWith('trio'));
            return row >= 0 && lines.slice(row, row + 4).includes(answered);
        })""",
        arg=answered,
    )
    page.wait_for_function("document.querySelector('.js-plotly-plot, img[src*=\"data:\"], svg')")
    # Gradio greys out (class "pending") what an update is still filling, and the guess and
    # the tab each start one: wait until none has been pending for a second.
    for _ in range(20):
        page.wait_for_function("!document.querySelector('.pending, .generating')")
        page.wait_for_timeout(1000)
        if not page.evaluate("!!document.querySelector('.pending, .generating')"):
            break
    save(page, shots / f"{name}-results.png", full_page=True)
    # No table widens the page: they scroll inside their own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    if page.viewport_size["width"] <= 640:
        check_tables_fit(page)


def check_tables_fit(page) -> None:
    """On a phone every column of every shown table, the rate and the verdict included, lies
    inside the table's box (nothing to scroll sideways to), with each column's cells under
    its header."""
    tables = page.evaluate(
        """() => [...document.querySelectorAll('.fit-table')]
            .filter(t => t.offsetParent !== null)
            .map(t => {
                const box = t.querySelector('.table-wrap').getBoundingClientRect();
                const span = e => { const r = e.getBoundingClientRect();
                                    return [r.left, r.right]; };
                return {
                    label: t.querySelector('.label')?.innerText ?? '',
                    box: [box.left, box.right],
                    heads: [...t.querySelectorAll('th.header-cell')].map(
                        th => [th.innerText.trim(), ...span(th)]),
                    cells: [...t.querySelectorAll('.virtual-row')].map(row =>
                        [...row.querySelectorAll('.body-cell')].map(span)),
                };
            })"""
    )
    labels = [table["label"] for table in tables]
    assert "Detection" in labels, labels
    for table in tables:
        left, right = table["box"]
        assert table["heads"], table["label"]
        for name, head_left, head_right in table["heads"]:
            assert left - 1 <= head_left < head_right <= right + 1, (table["label"], name)
        for row in table["cells"]:
            for (_, head_left, head_right), (cell_left, cell_right) in zip(
                table["heads"], row, strict=True
            ):
                assert abs(cell_left - head_left) <= 1 and abs(cell_right - head_right) <= 1
    detection = table_named(tables, "Detection")
    names = [head[0] for head in detection["heads"]]
    assert any(name.startswith("Rate") for name in names) and "Verdict" in names, names


def table_named(tables: list[dict], label: str) -> dict:
    return next(table for table in tables if table["label"] == label)


@pytest.mark.parametrize(
    "viewport",
    [LAPTOP, pytest.param(PHONE, marks=pytest.mark.slow)],
    ids=["laptop", "phone"],
)
def test_play_a_round_in_the_browser(chromium_browser, served, shots, viewport):
    name = "screenshot" if viewport is LAPTOP else "screenshot-phone"
    page = chromium_browser.new_page(viewport=viewport)
    page.set_default_timeout(TIMEOUT_MS)
    try:
        play(page, served, shots, name)
    finally:
        page.close()


@pytest.mark.slow
def test_download_the_data_in_the_browser(chromium_browser, served, tmp_path):
    page = chromium_browser.new_page(viewport=LAPTOP, accept_downloads=True)
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
