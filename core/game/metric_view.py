"""How the image metrics are shown: the reveal's FLIP cell and help, the Results section
(means per variant against BF16, which metric predicts what people spot), and its text
form for ``python -m core.game.stats --metrics``.

Pure formatting of ``MetricSection.to_json()`` (core.game.metric_model, not imported:
it loads statsmodels) and of one
reveal's stored figures: no gradio, no torch, no SQL. Every value from the data is
HTML-escaped. The reveal is shown only after the guess (core.game.rounds), so a per-image
figure never reaches a player before they answer.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

from core.config import REFERENCE_VARIANT, VARIANTS
from core.records import IMAGE_METRIC_LABELS as METRIC_LABELS
from core.records import IMAGE_METRICS, VIEWING_CONDITIONS

NOT_MEASURED = "not measured"
REFERENCE_CELL = "reference"
FLIP_HEADER = "FLIP vs BF16 (mean error)"
METRICS_HELP = (
    "**PSNR** (dB) and **SSIM** (0–1) measure how close each image is to the BF16 one, pixel "
    "by pixel: higher is closer, and an identical image scores ∞ dB and 1. **FLIP** (NVIDIA's "
    "perceptual difference for images flipped back and forth) is the mean of its per-pixel "
    f"error, 0–1: lower is closer, 0 is no visible difference; {VIEWING_CONDITIONS}. Images "
    f"stored before FLIP was measured show *{NOT_MEASURED}*."
)
# The Results' per-variant table and the metric model's table, columns in order.
MEANS_HEADERS = ["Variant", "Images", *(f"{METRIC_LABELS[n]} mean (n)" for n in IMAGE_METRICS)]
FIT_HEADERS = [
    "Metric", "Held-out AUC", "Slope (per unit)", "95% interval (by person)", "Answers",
    "People", "Note",
]  # fmt: skip


def flip_cell(value: Any, variant: str) -> str:
    """The reveal's FLIP cell: "reference" for BF16, "not measured" for an image stored
    before FLIP was measured, else the mean error to four decimals."""
    if variant == REFERENCE_VARIANT:
        return REFERENCE_CELL
    if value is None:
        return NOT_MEASURED
    return f"{float(value):.4f}"


def _label(variant: str) -> str:
    spec = VARIANTS.get(variant)
    return spec.label if spec is not None else variant


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):.{digits}f}"


DIGITS = {"psnr": 2, "ssim": 4, "flip_mean": 4}


def means_rows(section: Mapping[str, Any]) -> list[list[str]]:
    """Per quantized variant: its label, images, and each metric's mean against BF16 with
    the number of images that have it ("not measured" when none has)."""
    rows = []
    for entry in section.get("means_against_bf16", []):
        row = [_label(entry["variant"]), str(entry["images"])]
        for name in IMAGE_METRICS:
            count = entry.get(f"{name}_count", 0)
            mean = entry.get(f"{name}_mean")
            row.append(NOT_MEASURED if not count else f"{_number(mean, DIGITS[name])} ({count})")
        rows.append(row)
    return rows


def fits_scope(section: Mapping[str, Any]) -> str:
    """Which answers the fits read: whole batches, and a sample of people above a cap."""
    batched, total = section.get("answers_batched", 0), section["answers_total"]
    batch = section.get("answers_batch", 1)
    text = (
        f"Fits over the first {batched} of {total} decided duel answers: they take answers "
        f"{batch} at a time, so no single new answer can be read from two looks."
    )
    if section["answers_fitted"] < batched:
        text += (
            f" Fitted on a seeded sample of whole people: {section['answers_fitted']} of "
            f"{batched} answers."
        )
    return text


def means_scope(section: Mapping[str, Any]) -> str:
    """Which generations the means cover, and why not always all of them."""
    batch = section.get("means_batch", 1)
    return (
        f"Means over the first {section.get('means_over_generations', 0)} of "
        f"{section.get('generations_counted', 0)} generations: they take generations "
        f"{batch} at a time, so no single new image's figures can be read from two looks."
    )


def fit_rows(section: Mapping[str, Any]) -> list[list[str]]:
    """Per metric: held-out AUC, slope and its interval, answers, people, and why not."""
    rows = []
    for fit in section.get("fits", []):
        interval = (
            "–"
            if fit.get("slope_low") is None
            else f"{_number(fit['slope_low'], 4)} … {_number(fit['slope_high'], 4)}"
        )
        rows.append(
            [
                METRIC_LABELS.get(fit["metric"], fit["metric"]),
                _number(fit.get("held_out_auc"), 2),
                _number(fit.get("slope"), 4),
                interval,
                str(fit["answers"]),
                str(fit["people"]),
                fit.get("note") or "",
            ]
        )
    return rows


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    # In its own scrolling box (app.css .scroll-table): a phone never scrolls the page sideways.
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll-table">{table}</div>'


def results_html(section: Mapping[str, Any] | None) -> str:
    """The Results' metric section: the sentence first, then the means per variant and
    the metric model per metric, with the viewing conditions and what the model is."""
    if not section:
        return ""
    parts = [
        '<div class="metric-section">',
        "<h3>Which image metric predicts what people spot?</h3>",
        f"<p><strong>{html.escape(section['message'])}</strong> "
        f"{html.escape(fits_scope(section))}</p>",
        _table(FIT_HEADERS, fit_rows(section)),
        f"<p>{html.escape(section['definition'])}.</p>",
        "<h4>Each variant against BF16</h4>",
        f"<p>{html.escape(means_scope(section))}</p>",
        _table(MEANS_HEADERS, means_rows(section)),
        f"<p>{html.escape(section['viewing_conditions']['text'])}. PSNR's mean leaves out "
        "images identical to BF16 (∞ dB).</p>",
        "</div>",
    ]
    return "\n".join(parts)


def _text_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return [line.rstrip() for line in lines]


def results_text(section: Mapping[str, Any] | None) -> str:
    """The same section as plain text (``python -m core.game.stats --metrics``)."""
    if not section:
        return "No image metrics in these counts (pooled sync targets carry none).\n"
    lines = [section["message"], fits_scope(section)]
    lines += ["", *_text_table(FIT_HEADERS, fit_rows(section)), ""]
    lines += [section["definition"] + ".", "", "Each variant against BF16:", means_scope(section)]
    lines += [*_text_table(MEANS_HEADERS, means_rows(section)), ""]
    lines.append(section["viewing_conditions"]["text"] + ".")
    return "\n".join(lines) + "\n"
