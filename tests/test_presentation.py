"""core.game.presentation: what the UI shows, from plain values."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.config import MODELS, TINY_MODEL, GenerationSettings
from core.game import presentation
from core.game.inference import ClusterCounts
from core.game.rounds import Reveal, RoundView, Score
from core.game.verdicts import GroupCounts, assess

STATS = {
    "bf16": {"seconds": 12.0, "weight_bytes": 2**34, "standalone_peak_bytes": 2**35, "psnr": None},
    "int8": {"seconds": 27.0, "weight_bytes": 2**33, "standalone_peak_bytes": 2**34, "psnr": 31.5},
    "nf4": {"seconds": 12.5, "weight_bytes": 2**32, "standalone_peak_bytes": 2**33, "psnr": 24.25},
}


def reveal(mode="trio", slots=None, answer="A", correct=True) -> Reveal:
    slots = slots or {"A": "bf16", "B": "nf4", "C": "int8"}
    return Reveal(
        round_id="r",
        mode=mode,
        answer=answer,
        slot_variants=slots,
        designated_variant=None if answer == "cant_tell" else slots[answer],
        correct_slot="A",
        correct=correct,
        variant_stats=STATS,
        score=Score(answered=3, correct=2, cant_tell=1, streak=1, best_streak=2),
    )


def test_reveal_rows_show_each_shown_variant_with_its_slot():
    rows = presentation.reveal_rows(reveal())
    assert [(r[0], r[1]) for r in rows] == [
        ("BF16 (original)", "A"),
        ("LLM.int8", "C"),
        ("NF4", "B"),
    ]
    assert rows[0][3] == 2**34 and rows[1][8] == 31.5


def test_duel_reveal_has_a_row_per_shown_variant_only():
    duel = reveal("duel", {"A": "nf4", "B": "bf16"})
    assert [r[0] for r in presentation.reveal_rows(duel)] == ["BF16 (original)", "NF4"]
    assert presentation.compare_choices(duel) == [("NF4", "nf4")]


def test_reveal_table_drops_columns_never_filled():
    table = presentation.reveal_table(reveal())
    assert "Standalone-equivalent peak (GiB)" in table["headers"]
    assert not any("RSS" in h for h in table["headers"]) and "SSIM vs BF16" not in table["headers"]
    assert all(len(row) == len(table["headers"]) for row in table["data"])
    own = table["headers"].index("Own weights incl. quant state (GiB)")
    assert [row[own] for row in table["data"]] == [16.0, 8.0, 4.0]


def test_cpu_reveal_labels_the_process_peak_as_the_whole_process():
    cpu = {v: {"seconds": 1.0, "weight_bytes": 2**20, "peak_rss_bytes": 2**30} for v in STATS}
    table = presentation.reveal_table(replace(reveal(), variant_stats=cpu))
    assert "Whole-process peak RSS, all variants (GiB)" in table["headers"]
    assert not any("Standalone" in h or "Activation" in h for h in table["headers"])


def test_cost_table_gives_the_resident_total_its_own_row():
    costs = [
        {"variant": v, "generations": 2, "median_seconds": 3.0, "weight_bytes": 2**33,
         "shared_weight_bytes": 2**28, "median_activation_peak_bytes": 2**32,
         "median_standalone_peak_bytes": 2**34, "median_peak_rss_bytes": None,
         "resident_weight_bytes": 3 * 2**34}
        for v in ("bf16", "int8", "nf4")
    ]  # fmt: skip
    table = presentation.cost_table({"costs": costs})
    assert [row[0] for row in table["data"]][-1] == presentation.RESIDENT_ROW_LABEL
    own = table["headers"].index("Own weights incl. quant state (GiB)")
    assert table["data"][-1][own] == 48.0
    assert "Median standalone-equivalent peak (GiB)" in table["headers"]


def test_byte_tables_switch_to_mib_below_one_gib():
    rows = [["BF16", "A", 0.5, 877_696, None], ["NF4", "B", 0.4, 269_440, None]]
    table = presentation.byte_table(
        ["V", "S", "Time (s)", "Weights ({unit})", "RSS ({unit})"], rows, (3, 4)
    )
    assert table["headers"] == ["V", "S", "Time (s)", "Weights (MiB)"]
    assert table["data"] == [["BF16", "A", 0.5, 0.84], ["NF4", "B", 0.4, 0.26]]


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


def test_detection_rows_verdicts_and_chart_with_and_without_answers():
    empty = {"detection": [], "trio_picks": {"answered": 0}, "hardest_prompts": {}}
    assert presentation.detection_rows(empty) == []
    assert "no answers yet" in presentation.trio_picks(empty)
    assert presentation.detection_chart(empty) is not None
    assert presentation.verdicts_markdown(empty) == "### Can people tell?"
    [row] = [e.to_dict() for e in assess([_group(7, 10, cant_tell=1)])]
    rows = presentation.detection_rows({"detection": [row]})
    assert rows[0][:6] == ["duel", "NF4", 11, 10, 7, "70.0%"]
    assert rows[0][6].endswith("(0.95)") and rows[0][10] == "50.0%"
    assert rows[0][13].startswith("9.1% (") and rows[0][14] == "63.6%"
    assert rows[0][15] == "not enough data yet"
    assert len(rows[0]) == len(presentation.DETECTION_HEADERS)
    text = presentation.verdicts_markdown({"detection": [row]})
    assert "NF4 — people spot the quantized image in 70% of decided duels" in text
    assert "two-sided at 95%" in text
    assert presentation.detection_chart({"detection": [row]}).axes


def _group(correct, decided, cant_tell=0):
    labels = np.arange(decided)
    right = labels < correct
    counts = ClusterCounts.from_labels(labels, right)
    return GroupCounts("duel", "nf4", decided + cant_tell, correct, cant_tell, counts, counts)


def test_example_prompts_skip_comments_and_blank_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\n\n a fox \nan owl\n", encoding="utf-8")
    assert presentation.example_prompts(path) == ["a fox", "an owl"]
    assert presentation.example_prompts(tmp_path / "missing.txt") == []
