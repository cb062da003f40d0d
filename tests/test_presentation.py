"""core.game.presentation: what the UI shows, from plain values."""

from __future__ import annotations

import base64
import io
from dataclasses import replace

import numpy as np

from core.config import MODELS, TINY_MODEL
from core.game import presentation, verdicts
from core.game.inference import ClusterCounts
from core.game.rounds import ReadyRounds, Reveal, RoundView, Score
from core.game.stats import PickCount, PromptRank, Summary, TrioPicks
from core.game.verdicts import GroupCounts, assess
from core.limits import GenerationSettings

GIB = 2**30
STATS = {
    "bf16": {"seconds": 12.0, "weight_bytes": 28 * GIB, "shared_weight_bytes": GIB,
             "standalone_peak_bytes": 32 * GIB, "psnr": None, "ssim": None},
    "int8": {"seconds": 27.0, "weight_bytes": 16 * GIB, "shared_weight_bytes": GIB,
             "standalone_peak_bytes": 20 * GIB, "psnr": 31.5, "ssim": 0.98765,
             "flip_mean": 0.01234},
    "nf4": {"seconds": 12.5, "weight_bytes": 8 * GIB, "shared_weight_bytes": GIB,
            "standalone_peak_bytes": 12 * GIB, "psnr": 24.25, "ssim": 0.9},
}  # fmt: skip
# The tiny model on the CPU (README "Memory figures"): weights of about a MiB, no GPU peak,
# and a whole-process peak RSS of hundreds of MiB that belongs to no variant.
CPU_STATS = {
    variant: {"seconds": 0.5, "weight_bytes": own, "shared_weight_bytes": 753_166,
              "peak_rss_bytes": 720 * 2**20, "psnr": psnr, "ssim": ssim}
    for variant, own, psnr, ssim in (
        ("bf16", 877_696, None, None), ("int8", 492_416, 48.9, 0.9996),
        ("nf4", 285_184, float("inf"), 1.0),
    )
}  # fmt: skip


def reveal(mode="trio", slots=None, answer="A", correct=True, stats=STATS) -> Reveal:
    slots = slots or {"A": "bf16", "B": "nf4", "C": "int8"}
    return Reveal(
        round_id="r",
        mode=mode,
        answer=answer,
        slot_variants=slots,
        designated_variant=None if answer == "cant_tell" else slots[answer],
        correct_slot="A",
        correct=correct,
        variant_stats=stats,
        score=Score(answered=3, correct=2, cant_tell=1, streak=1, best_streak=2),
    )


def test_gpu_reveal_shows_each_variants_peak_alone_with_its_saving_and_quality():
    table = presentation.reveal_table(reveal())
    assert table["headers"] == [
        "Variant", "Slot", "Peak alone (GiB)", "vs BF16", "Time per image (s)",
        "PSNR vs BF16 (dB)", "SSIM vs BF16", "FLIP vs BF16 (mean error)",
    ]  # fmt: skip
    assert table["data"] == [
        ["BF16 (original)", "A", "32.0", "reference", "12.00", "reference", "reference",
         "reference"],
        ["LLM.int8", "C", "20.0", "−38%", "27.00", "31.5", "0.9877", "0.0123"],
        # Stored before FLIP was measured (no flip_mean figure): said so, not left blank.
        ["NF4", "B", "12.0", "−62%", "12.50", "24.2", "0.9000", "not measured"],
    ]  # fmt: skip


def test_duel_reveal_has_a_row_per_shown_variant_only():
    duel = reveal("duel", {"A": "nf4", "B": "bf16"})
    assert [r[:2] for r in presentation.reveal_table(duel)["data"]] == [
        ["BF16 (original)", "B"],
        ["NF4", "A"],
    ]
    assert presentation.compare_choices(duel) == [("NF4", "nf4")]


def test_cpu_reveal_shows_weights_alone_and_never_the_process_rss():
    table = presentation.reveal_table(reveal(stats=CPU_STATS))
    assert table["headers"][2:4] == ["Weights alone (GiB)", "vs BF16"]
    assert not any("RSS" in h or "peak" in h.lower() for h in table["headers"])
    # own + shared weights: 1,630,862 B = 0.00152 GiB for BF16, 1,038,350 B for NF4.
    assert [row[2:4] for row in table["data"]] == [
        ["0.00152", "reference"],
        ["0.00116", "−24%"],
        ["0.000967", "−36%"],
    ]
    rss = presentation.gib(720 * 2**20)
    assert not any(rss in str(cell) for row in table["data"] for cell in row)
    assert table["data"][2][5:7] == ["∞", "1.0000"]  # NF4 identical to BF16 here


def test_a_gpu_reveal_missing_one_peak_falls_back_to_weights_for_every_row():
    stats = {**STATS, "nf4": {**STATS["nf4"], "standalone_peak_bytes": None}}
    table = presentation.reveal_table(reveal(stats=stats))
    assert table["headers"][2] == "Weights alone (GiB)"
    assert [row[2] for row in table["data"]] == ["29.0", "17.0", "9.00"]


def test_memory_figures_keep_three_significant_digits_without_exponents():
    assert presentation.gib(None) == "" and presentation.gib(0) == "0"
    assert presentation.gib(36.2 * GIB) == "36.2"
    assert presentation.gib(877_696) == "0.000817"
    assert presentation.gib(2**20) == "0.000977"
    assert presentation.gib(100 * 2**10) == "0.0000954"
    assert presentation.gib(1024 * GIB) == "1024"


def test_change_from_bf16_is_in_whole_percent_with_a_true_minus():
    assert presentation.vs_reference(12.6, 31.4) == "−60%"
    assert presentation.vs_reference(3, 2) == "+50%"
    assert presentation.vs_reference(2.001, 2) == "0%"
    assert presentation.vs_reference(None, 2) == "" == presentation.vs_reference(1, None)


def results(estimates=(), picks=None, hardest=None, costs=None) -> Summary:
    """A Summary holding only what a test gives (the rest empty), as the Results tab reads it."""
    summary = Summary(
        definitions={}, counts={}, estimates=list(estimates), family={}, answers_needed={},
        picks=picks or TrioPicks(0, {}, 0, "bf16"), hardest_prompts=hardest or {},
        top_players={},
    )  # fmt: skip
    return summary if costs is None else summary.with_costs(costs)


def costs(**figures):
    return [
        {"variant": v, "generations": 2, "median_seconds": seconds, "weight_bytes": own,
         "shared_weight_bytes": GIB, "median_peak_allocated_bytes": None,
         "median_peak_reserved_bytes": None, "median_activation_peak_bytes": None,
         "median_standalone_peak_bytes": None, "median_peak_rss_bytes": None,
         "resident_weight_bytes": 55 * GIB} | figures.get(v, {})
        for v, own, seconds in (("bf16", 28 * GIB, 12.0), ("int8", 16 * GIB, 27.0),
                                ("nf4", 8 * GIB, 12.25))
    ]  # fmt: skip


def test_gpu_cost_table_shows_weights_and_peak_alone_and_the_resident_total_apart():
    peaks = {v: {"median_standalone_peak_bytes": GIB * p} for v, p in STANDALONE.items()}
    table = presentation.cost_table(results(costs=costs(**peaks)))
    assert table["headers"] == [
        "Variant", "Generations", "Weights alone (GiB)", "Median peak alone (GiB)", "vs BF16",
        "Median time per image (s)",
    ]  # fmt: skip
    assert table["data"] == [
        ["BF16 (original)", 2, "29.0", "36.2", "reference", "12.00"],
        ["LLM.int8", 2, "17.0", "24.4", "−33%", "27.00"],
        ["NF4", 2, "9.00", "17.3", "−52%", "12.25"],
        [presentation.RESIDENT_ROW_LABEL, "", "55.0", "", "", ""],
    ]
    assert presentation.cost_note(results(costs=costs(**peaks))) == presentation.MEMORY_HELP


STANDALONE = {"bf16": 36.2, "int8": 24.4, "nf4": 17.3}


def test_cpu_cost_table_puts_the_process_rss_in_its_own_line_not_in_a_row():
    rss = {v: {"median_peak_rss_bytes": (700 + i) * 2**20} for i, v in enumerate(STATS)}
    summary = results(costs=costs(**rss))
    table = presentation.cost_table(summary)
    assert table["headers"] == [
        "Variant", "Generations", "Weights alone (GiB)", "vs BF16", "Median time per image (s)"
    ]  # fmt: skip
    assert [row[2:4] for row in table["data"]] == [
        ["29.0", "reference"], ["17.0", "−41%"], ["9.00", "−69%"], ["55.0", ""]
    ]  # fmt: skip
    rss_text = presentation.gib(702 * 2**20)
    assert not any(rss_text in str(cell) for row in table["data"] for cell in row)
    note = presentation.cost_note(summary)
    assert f"**Whole process** (all variants loaded, and the app): peak RSS {rss_text} GiB" in note


def test_no_costs_yet_is_an_empty_table():
    assert presentation.cost_table(results(costs=[]))["data"] == []


def test_reference_table_is_in_gib_with_the_saving_on_the_peak():
    table = presentation.reference_table()
    assert table["headers"] == [
        "Variant", "Placement", "After loading (GiB)", "Peak (GiB)", "Peak vs BF16",
        "Time per image (s)",
    ]  # fmt: skip
    assert table["data"][0] == ["BF16 (original)", "resident", 31.4, 36.2, "reference", 12.0]
    assert table["data"][1] == ["NF4", "resident", 12.6, 17.3, "−52%", 12.0]


def test_the_reveal_and_cost_tables_use_the_reference_tables_unit():
    unit = "(GiB)"
    assert unit in presentation.reference_table()["headers"][2]
    assert unit in presentation.reveal_table(reveal())["headers"][2]
    assert unit in presentation.reveal_table(reveal(stats=CPU_STATS))["headers"][2]
    assert "GiB like the reference table" in presentation.MEMORY_HELP
    assert "PSNR" in presentation.METRICS_HELP and "SSIM" in presentation.METRICS_HELP
    assert "\n" not in presentation.METRICS_HELP  # one short line


def test_verdicts():
    assert "✅ Right: **A**" in presentation.verdict(reveal())
    wrong = presentation.verdict(reveal(answer="B", correct=False))
    assert "you picked **B**, the answer was **A**" in wrong
    assert "couldn't tell" in presentation.verdict(reveal(answer="cant_tell", correct=None))
    assert "**A** = BF16 (original) · **B** = NF4 · **C** = LLM.int8" in wrong
    assert "2 right of 3 (1 can't tell) · streak 1 · best 2" in wrong


def test_compare_default_is_the_most_different_variant():
    assert presentation.compare_default(reveal()) == "nf4"


def test_slider_value_pairs_bf16_with_the_chosen_variant():
    paths = {"A": "/a.png", "B": "/b.png", "C": "/c.png"}
    assert presentation.slider_value(paths, reveal(), "int8") == ("/a.png", "/c.png")
    duel = reveal("duel", {"A": "nf4", "B": "bf16"})
    assert presentation.slider_value(paths, duel, "int8") is None


def test_question_names_no_variant_but_the_modes_target():
    view = RoundView(
        "r", "duel", "Which one is quantized?", ("A", "B"), (), "a fox",
        GenerationSettings(5, 2, 3.5, 256, 256, 64),
    )  # fmt: skip
    text = presentation.question(view)
    assert "seed* 5" in text
    assert "a fox" not in text  # a player's prompt is never rendered as Markdown
    assert not any(word in text.lower() for word in ("bf16", "int8", "nf4"))


def test_progress_reporter_counts_steps_over_all_variants():
    calls = []
    report = presentation.progress_reporter(
        lambda value, desc: calls.append((value, desc)), ("bf16", "int8", "nf4"), 4
    )
    report("int8", 2, 4)
    assert calls == [((6, 12), "image 2 of 3: step 2/4")]


def test_tiny_warning_only_for_the_tiny_model():
    assert "Demo mode" in presentation.tiny_model_warning(MODELS[TINY_MODEL])
    assert presentation.tiny_model_warning(MODELS["black-forest-labs/FLUX.1-dev"]) == ""


def test_detection_tables_and_chart_without_answers():
    empty = results()
    assert presentation.detection_table(empty) == {
        "headers": presentation.DETECTION_HEADERS, "data": []
    }  # fmt: skip
    assert presentation.detection_details_table(empty)["data"] == []
    assert presentation.hardest_table(empty)["data"] == []
    assert "no answers yet" in presentation.trio_picks(empty)
    assert presentation.verdicts_markdown(empty) == "### Can people tell?"
    [ax] = presentation.detection_chart(empty).axes
    assert ax.get_title() == presentation.CHART_TITLE
    assert [t.get_text() for t in ax.texts] == ["no decided answers yet"]


def test_detection_main_table_is_short_and_says_what_each_row_means():
    rows = results(
        assess(
            [
                _group(0, 6, mode="trio", variant="all"),
                _group(7, 10, cant_tell=1, variant="int8"),
                _group(60, 80),
            ]
        )
    )
    table = presentation.detection_table(rows)
    # Rate and verdict first (a phone shows them without scrolling); the level is fixed.
    assert table["headers"] == [
        "What", "Rate (of decided)", "Verdict", "Answered", "Decided", "People",
        "Live 95% interval", "Chance",
    ]  # fmt: skip
    trio, int8, nf4 = table["data"]
    assert trio[:6] == ["trio: picked the original", "0.0%", "too few people yet", 6, 6, 6]
    assert trio[6].startswith("0.0–") and trio[7] == "33%"
    # Ten people and ten prompts: enough to say "not enough data", not "too few people".
    assert int8[:6] == ["duel: spotted LLM.int8", "70.0%", "not enough data yet", 11, 10, 10]
    assert nf4[0] == "duel: spotted NF4" and nf4[2] == "distinguishable"
    # The verdict column stays short; the full sentence is in the verdicts above.
    assert all(len(row[2]) <= 32 for row in table["data"])
    details = presentation.detection_details_table(rows)
    assert details["headers"] == presentation.DETECTION_DETAIL_HEADERS
    d_int8 = dict(zip(details["headers"], details["data"][1], strict=True))
    assert d_int8["What"] == "duel: spotted LLM.int8"
    assert d_int8["Can't tell (one look)"].startswith("9.1% (")
    assert d_int8["Of all answers"] == "63.6%"
    assert d_int8["Live test: e-value (bar)"] == "1.1 (120)"  # a family of 3: 1 / (2.5% / 3)
    assert d_int8["One look, per person"].startswith("70.0% (")
    assert all(len(row) == len(details["headers"]) for row in details["data"])
    text = presentation.verdicts_markdown(rows)
    lines = text.splitlines()
    assert lines[0] == "### Can people tell?"
    # One plain sentence per comparison, first, then the numbers elsewhere.
    assert lines[1] == (
        "- **People can't reliably pick the original (BF16) out of three images yet: "
        "6 decided answers from 6 people. Too few people to tell yet.**"
    )
    assert "- **People can tell NF4 from BF16: right in 75% of 80 decided answers" in text
    assert "To detect a rate of 60% in a duel" in text
    assert "95% confidence, however often the page is refreshed" in text


def test_group_labels_name_what_was_measured():
    assert verdicts.measured("trio", "all") == "trio: picked the original"
    assert verdicts.measured("duel", "nf4") == "duel: spotted NF4"
    assert verdicts.measured("duel", "all") == "duel: spotted LLM.int8 or NF4"
    assert verdicts.label("duel", "all", short=True) == "Either"
    assert verdicts.label("trio", "all", short=True) == "Trio"


def test_short_verdict_words():
    def word(verdict, **figures):
        [row] = assess([_group(7, 10)], margin=0.05)
        return presentation.verdict_word(replace(row, verdict=verdict, **figures))

    assert word(verdicts.INDISTINGUISHABLE) == "indistinguishable (±5 pts)"
    assert word(verdicts.DISTINGUISHABLE, within_margin=True) == "distinguishable, within ±5 pts"
    assert word(verdicts.DISTINGUISHABLE, within_margin=False) == "distinguishable"
    assert word(verdicts.NO_DATA) == "no data yet"
    assert word(verdicts.NOT_ENOUGH_DATA, too_few_people=True) == "too few people yet"
    assert word(verdicts.NOT_ENOUGH_DATA, too_few_people=False) == "not enough data yet"


def test_chart_has_a_visible_zero_bar_chance_and_text_readable_on_a_phone():
    rows = assess([_group(0, 6, mode="trio", variant="all"), _group(7, 10)])
    fig = presentation.detection_chart(results(rows))
    [ax] = fig.axes
    assert ax.get_title() == presentation.CHART_TITLE
    fig.savefig(io.BytesIO(), format="png")  # as Gradio renders a gr.Plot
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0%", "70%"]
    # The 0% bar has a visible mark, drawn above the x axis (the axis starts below 0).
    assert ax.get_ylim()[0] < 0
    marks = [c for c in ax.collections if c.get_linewidth()[0] >= 3]
    assert any(seg[0][1] == 0 for c in marks for seg in c.get_segments())
    dashed = [c for c in ax.collections if c.get_linestyle()[0][1]]  # (offset, dash pattern)
    assert sorted(round(c.get_segments()[0][0][1], 3) for c in dashed) == [0.333, 0.5]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["Trio\nn=6", "NF4\nn=10"]
    assert fig.legends[0].get_texts()[0].get_text() == "live 95% interval"
    # Shown 326 px wide (a 390-px phone less the page's margins), no text is below 11 px;
    # every text of the figure counts, tick labels and legend included.
    assert presentation.chart_min_text_px(fig) >= 11
    empty = presentation.detection_chart(results([replace(rows[0], rate=None)]))
    assert presentation.chart_min_text_px(empty) >= 11


def test_the_chart_is_an_svg_image_with_a_text_alternative():
    rows = assess([_group(0, 6, mode="trio", variant="all"), _group(7, 10)])
    tag = presentation.detection_chart_html(results(rows))
    assert tag.startswith('<img src="data:image/svg+xml;base64,')
    data = tag.split("base64,", 1)[1].split('"', 1)[0]
    assert base64.b64decode(data).lstrip().startswith(b"<?xml")
    assert 'alt="How often people were right: trio: picked the original: 0% of 6; ' in tag


def test_wording_true_to_the_device_and_the_pool():
    assert presentation.waiting_text(on_gpu=True) == "waiting for the GPU"
    assert presentation.waiting_text(on_gpu=False) == "generating on the CPU"
    note = presentation.ready_round_note
    assert note(ReadyRounds(playable=0, unseen=0)) == presentation.NO_READY_ROUND_YET
    assert note(ReadyRounds(playable=0, unseen=0)).startswith("No ready rounds yet")
    assert note(ReadyRounds(playable=3, unseen=0)) == presentation.NO_READY_ROUND
    assert note(ReadyRounds(playable=3, unseen=1)) == ""


def _group(correct, decided, cant_tell=0, mode="duel", variant="nf4"):
    """One answer per person and per prompt; the can't-tell answers come last."""
    labels = np.arange(decided)
    counts = ClusterCounts.from_labels(labels, labels < correct)
    answered = np.arange(decided + cant_tell)
    cant = ClusterCounts.from_labels(answered, answered >= decided)
    return GroupCounts(
        mode, variant, decided + cant_tell, correct, cant_tell, counts, counts, cant, cant
    )


def test_example_prompts_skip_comments_and_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\n\n a fox \nan owl\n", encoding="utf-8")
    assert presentation.example_prompts(path) == ["a fox", "an owl"]
    assert presentation.example_prompts(tmp_path / "missing.txt") == []


def test_hardest_prompts_table_keeps_the_prompt_as_plain_text():
    entry = PromptRank(1, "**a fox**", 5, 5, 2, chance=0.5, rate=0.4, ci_low=0.05, ci_high=0.85)
    table = presentation.hardest_table(results(hardest={"duel": [entry]}))
    assert table["headers"] == presentation.HARDEST_HEADERS
    assert table["data"] == [["duel", "**a fox**", 5, "40.0%", "5.0–85.0%", "50%"]]


def test_verdicts_markdown_shows_the_one_level_only_once_there_are_answers():
    [row] = assess([_group(7, 10)])
    answered = replace(row, verdict_text="x", rate=0.5, needed_text="")
    none = replace(row, verdict_text="No decided answers yet for NF4.", rate=None)
    assert "95% confidence" in presentation.verdicts_markdown(results([answered, none]))
    assert "95%" not in presentation.verdicts_markdown(results([none]))


def test_trio_picks_says_answer_for_one_and_answers_for_more():
    def picked(answered: int) -> Summary:
        picks = {"bf16": PickCount(answered, 1.0), "int8": PickCount(0, 0.0)}
        return results(picks=TrioPicks(answered, picks, 0, "bf16"))

    assert "(of 1 answer):" in presentation.trio_picks(picked(1))
    assert "(of 2 answers):" in presentation.trio_picks(picked(2))
