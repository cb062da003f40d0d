"""The image metrics in the product: the metric model's section of stats.summary (JSON and
``--metrics`` text) on a small database with known answers, the per-variant means, the
reveal showing FLIP only after the guess, and the export's per-image columns read back
from the Parquet file."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.game import metric_model, metric_view, presentation
from core.game.export import export
from core.game.metric_model import MIN_PEOPLE, fit_metric
from core.game.rounds import CANT_TELL
from core.game.stats import main as stats_main
from core.game.stats import summary
from core.records import FLIP_PPD, IMAGE_METRICS
from tests.data_helpers import make_game, make_generation, make_store

# Per generation, the FLIP mean of its int8 and NF4 images (chosen, not measured): one
# batch of the means (metric_model.MEANS_BATCH = 10 generations).
FLIP = [
    (0.01, 0.04), (0.02, 0.09), (0.03, 0.15), (0.05, 0.22), (0.02, 0.05),
    (0.04, 0.11), (0.01, 0.07), (0.03, 0.12), (0.06, 0.18), (0.02, 0.10),
]  # fmt: skip


def _stored(store, index: int) -> int:
    generation = make_generation(index)
    int8, nf4 = FLIP[index]
    generation.results["int8"].flip_mean = int8
    generation.results["nf4"].flip_mean = nf4
    return store.save_generation(generation)


def _duel(game, store, session: str, gid: int, right: bool | None) -> tuple[str, str]:
    """One duel with a forced outcome (None: can't tell); returns (compared variant, slot)."""
    view = game.new_round(session, "duel", gid)
    key = store.fetch_round(view.round_id).answer_key
    quantized = next(s for s, v in key.items() if v != "bf16")
    original = next(s for s, v in key.items() if v == "bf16")
    answer = CANT_TELL if right is None else quantized if right else original
    game.guess(session, view.round_id, answer)
    return key[quantized], answer


@pytest.fixture
def known(tmp_path):
    """Ten generations, three people answering duels on the first four with known
    outcomes, a can't-tell and a trio answer (neither enters the model). Returns (store,
    expected rows, generations)."""
    store = make_store(tmp_path)
    game = make_game(store, seed=3)
    gids = [_stored(store, i) for i in range(len(FLIP))]
    by_gid = {gid: dict(zip(("int8", "nf4"), FLIP[i], strict=True)) for i, gid in enumerate(gids)}
    outcomes = {
        "ann": [False, True, True, True],
        "bob": [False, False, True, True],
        "cat": [True, False, None, True],
    }
    expected = []  # (person, correct, flip of the compared image)
    for person, plan in outcomes.items():
        for gid, right in zip(gids[:4], plan, strict=True):
            compared, _ = _duel(game, store, person, gid, right)
            if right is not None:
                expected.append((person, int(right), by_gid[gid][compared]))
    trio = game.new_round("ann", "trio", gids[0])
    game.guess("ann", trio.round_id, CANT_TELL)
    yield store, expected, gids
    store.close()


@pytest.fixture
def every_answer(monkeypatch):
    """Fits over every answer (batches of one): the known tables are smaller than a batch."""
    monkeypatch.setattr(metric_model, "ANSWERS_BATCH", 1)


def test_the_metric_section_fits_the_known_answers(known, every_answer):
    store, expected, _ = known
    section = summary(store).to_json()["metrics"]
    fits = {f["metric"]: f for f in section["fits"]}
    assert set(fits) == set(IMAGE_METRICS)
    assert section["answers_total"] == section["answers_fitted"] == len(expected) == 11
    hand = fit_metric(
        "flip_mean", [e[2] for e in expected], [e[1] for e in expected], [e[0] for e in expected]
    )
    flip = fits["flip_mean"]
    assert (flip["answers"], flip["people"]) == (11, 3)
    assert flip["slope"] == pytest.approx(hand.slope, rel=1e-9)
    assert (flip["slope_low"], flip["slope_high"]) == pytest.approx(
        (hand.slope_low, hand.slope_high), rel=1e-9
    )
    assert flip["held_out_auc"] == hand.held_out_auc
    # Three people are too few to name a best metric: the message says so, in numbers.
    assert section["best"] is None
    assert "Too few data" in section["message"] and "3 people" in section["message"]
    assert section["viewing_conditions"]["flip_pixels_per_degree"] == pytest.approx(FLIP_PPD)
    json.dumps(section, allow_nan=False)  # NaN-free JSON


def test_means_per_variant_against_bf16_with_counts(known):
    store, _, _ = known
    means = {m["variant"]: m for m in summary(store).to_json()["metrics"]["means_against_bf16"]}
    assert set(means) == {"int8", "nf4"}
    for k, variant in enumerate(("int8", "nf4")):
        assert means[variant]["images"] == means[variant]["flip_mean_count"] == len(FLIP)
        assert means[variant]["flip_mean_mean"] == pytest.approx(np.mean([f[k] for f in FLIP]))
    section = summary(store).to_json()["metrics"]
    rows = metric_view.means_rows(section)
    assert rows[0][0] == "LLM.int8" and rows[0][-1] == f"{np.mean([f[0] for f in FLIP]):.4f} (10)"
    assert (section["means_over_generations"], section["generations_counted"]) == (10, 10)


def test_the_means_move_only_by_whole_batches_of_generations(known):
    """An eleventh generation changes nothing in the means until the twentieth: two looks
    never give one new generation's figures."""
    store, _, _ = known
    before = summary(store).to_json()["metrics"]
    for i in range(len(FLIP), len(FLIP) + 9):
        generation = make_generation(i)
        generation.results["int8"].flip_mean = 0.5  # far from every mean
        store.save_generation(generation)
        after = summary(store).to_json()["metrics"]
        assert after["means_against_bf16"] == before["means_against_bf16"]
        assert after["generations_counted"] == i + 1
    assert "first 10 of 19 generations" in metric_view.results_text(after)
    store.save_generation(make_generation(99))
    moved = summary(store).to_json()["metrics"]
    assert moved["means_over_generations"] == 20
    assert moved["means_against_bf16"][0]["flip_mean_mean"] > 0.2


def test_images_without_flip_are_not_measured_and_left_out(tmp_path):
    store = make_store(tmp_path)
    for i in range(10):
        store.save_generation(make_generation(i))  # synthetic: PSNR and SSIM, no FLIP
    section = summary(store).to_json()["metrics"]
    int8 = section["means_against_bf16"][0]
    assert int8["flip_mean_count"] == 0 and int8["flip_mean_mean"] is None
    assert int8["psnr_count"] == 10 and math.isfinite(int8["psnr_mean"])
    assert metric_view.means_rows(section)[0][-1] == metric_view.NOT_MEASURED
    assert section["best"] is None and "No decided duel answers" in section["message"]
    store.close()


def test_stats_cli_prints_the_section_as_text_and_json(known, every_answer, capsys):
    store, _, _ = known
    db = str(store.db_path)
    assert stats_main(["--db", db, "--metrics"]) == 0
    text = capsys.readouterr().out
    assert "Too few data" in text and "FLIP mean error" in text and "67.0 pixels per degree" in text
    assert stats_main(["--db", db]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {f["metric"] for f in printed["metrics"]["fits"]} == set(IMAGE_METRICS)


def test_enough_people_name_the_best_metric_and_big_data_is_sampled_by_person():
    """40 simulated people whose chance of spotting rises with FLIP and not with the
    unrelated metric: FLIP is named best; above the cap whole people are sampled."""
    rng = random.Random(0)
    rows = []
    for person in range(40):
        for _ in range(25):
            flip, noise = rng.uniform(0, 0.3), rng.uniform(20, 40)
            p = 1 / (1 + math.exp(-(-2 + 20 * flip)))
            rows.append((f"p{person}", int(rng.random() < p), (noise, None, flip)))
    section = metric_model.section(rows, ([], 0, 0))
    assert section.best == "flip_mean"
    assert section.message.startswith("FLIP mean error best predicts")
    fits = {f.metric: f for f in section.fits}
    assert fits["flip_mean"].slope_low > 0
    assert fits["ssim"].answers == 0 and fits["ssim"].note
    counts = [(f"p{person}", 25) for person in range(40)]
    assert metric_model.sample_people(counts, cap=1000) is None  # all fit
    people = metric_model.sample_people(counts, cap=300)
    assert len(people) == 12 == len(set(people))  # whole people, 12 x 25 = 300 answers
    assert people == metric_model.sample_people(counts, cap=300)  # seeded
    kept = [r for r in rows if r[0] in people]
    sampled = metric_model.section(kept, ([], 0, 0), answers_total=1003, answers_batched=1000)
    assert (sampled.answers_total, sampled.answers_fitted) == (1003, 300)
    assert MIN_PEOPLE == 10
    text = metric_view.results_text(sampled.to_json())
    assert "Fits over the first 1000 of 1003 decided duel answers" in text
    assert "seeded sample of whole people: 300 of 1000" in text


def test_reveal_shows_flip_only_after_the_guess(known):
    store, _, gids = known
    game = make_game(store, seed=9)
    view = game.new_round("dan", "duel", gids[3])
    # Before the guess the player gets the view: no field holds a figure, nor its text.
    assert set(vars(view)) == {
        "round_id", "mode", "question", "slots", "image_paths", "prompt", "settings"
    }  # fmt: skip
    before = presentation.question(view) + view.prompt + repr(view.settings)
    assert "flip" not in before.lower() and "0.05" not in before and "0.22" not in before
    key = store.fetch_round(view.round_id).answer_key
    reveal = game.guess("dan", view.round_id, next(iter(key)))
    table = presentation.reveal_table(reveal)
    assert table["headers"][-1] == metric_view.FLIP_HEADER
    cells = {row[0]: row[-1] for row in table["data"]}
    assert cells["BF16 (original)"] == "reference"
    quantized = next(v for v in key.values() if v != "bf16")
    assert cells[{"int8": "LLM.int8", "nf4": "NF4"}[quantized]] == (
        "0.0500" if quantized == "int8" else "0.2200"
    )
    assert "67.0 pixels per degree" in presentation.REVEAL_HELP


def test_private_export_has_the_per_image_columns_and_public_the_means(known, tmp_path):
    store, _, gids = known
    private = tmp_path / "private"
    export(store, private, ("parquet", "csv"), include_private=True)
    rows = pq.read_table(private / "images.parquet").to_pylist()
    stored = {(r["generation_id"], r["variant"]): r for r in rows}
    for gid, (int8, nf4) in zip(gids, FLIP, strict=True):
        assert stored[(gid, "int8")]["flip_mean"] == int8
        assert stored[(gid, "nf4")]["flip_mean"] == nf4
        assert stored[(gid, "bf16")]["flip_mean"] is None
        figures = store.image_stats(gid)
        for name in ("psnr", "ssim"):
            assert stored[(gid, "int8")][name] == figures["int8"][name]
    public = tmp_path / "public"
    export(store, public, ("parquet",))
    columns = set(pq.read_table(public / "images.parquet").column_names)
    assert not columns & set(IMAGE_METRICS)
    summary_json = json.loads((public / "summary.json").read_text())
    conditions = summary_json["metrics"]["viewing_conditions"]
    assert conditions["flip_pixels_per_degree"] == pytest.approx(67.02, abs=0.01)
    means = {m["variant"]: m for m in summary_json["metrics"]["means_against_bf16"]}
    assert means["nf4"]["flip_mean_mean"] == pytest.approx(np.mean([f[1] for f in FLIP]))


def test_simulated_players_driven_by_flip_are_traced_back_to_flip(tmp_path, capsys):
    """core.bench.metric_players on a real database: 30 generations whose FLIP is unrelated
    to their (synthetic) PSNR and SSIM; players driven by FLIP; the model names FLIP."""
    from core.bench.metric_players import main as players_main

    store = make_store(tmp_path)
    rng = random.Random(1)
    for i in range(30):
        generation = make_generation(i)
        for variant in ("int8", "nf4"):
            generation.results[variant].flip_mean = rng.uniform(0.01, 0.3)
        store.save_generation(generation)
    store.close()
    db = str(tmp_path / "arena.db")
    args = ["--db", db, "--truth", "flip_mean", "--strength", "1.5", "--json"]
    assert players_main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["simulation"]["images"] == 60
    assert printed["metrics"]["best"] == "flip_mean"
    assert printed["metrics"]["answers_total"] == 40 * 25
    with pytest.raises(SystemExit) as refused:  # more duels per person than images
        players_main(["--db", db, "--answers", "61"])
    assert refused.value.code == 2
    assert "60 images have every metric measured" in capsys.readouterr().err


def test_metrics_that_rank_answers_alike_name_no_best():
    """When two metrics order the images the same way (here PSNR = -100 x FLIP), their
    held-out AUCs are equal: the section names none and says none stands out."""
    rng = random.Random(2)
    rows = []
    for person in range(40):
        for _ in range(25):
            flip = rng.uniform(0, 0.3)
            p = 1 / (1 + math.exp(-(-2 + 20 * flip)))
            rows.append((f"p{person}", int(rng.random() < p), (-100 * flip, None, flip)))
    section = metric_model.section(rows, ([], 0, 0))
    fits = {f.metric: f for f in section.fits}
    assert fits["psnr"].held_out_auc == pytest.approx(fits["flip_mean"].held_out_auc)
    assert section.best is None
    assert section.message.startswith("No metric stands out")


def test_the_fits_move_only_by_whole_batches_of_answers(known, monkeypatch):
    """With batches of 5, the 11 known answers give fits over the first 10; a 12th to 14th
    answer changes nothing, the 15th moves them. Below one batch the section waits."""
    store, _, gids = known
    monkeypatch.setattr(metric_model, "ANSWERS_BATCH", 5)
    first = summary(store).to_json()["metrics"]
    assert (first["answers_total"], first["answers_batched"]) == (11, 10)
    assert {f["answers"] for f in first["fits"] if f["metric"] == "flip_mean"} == {10}
    game = make_game(store, seed=11)
    for k, person in enumerate(("eve", "fay", "gus")):
        _duel(game, store, person, gids[5 + k], True)
        again = summary(store).to_json()["metrics"]
        assert again["answers_total"] == 12 + k
        assert again["fits"] == first["fits"]
    _duel(game, store, "hal", gids[9], True)
    moved = summary(store).to_json()["metrics"]
    assert moved["answers_batched"] == 15 and moved["fits"] != first["fits"]
    monkeypatch.setattr(metric_model, "ANSWERS_BATCH", 100)
    waiting = summary(store).to_json()["metrics"]
    assert waiting["answers_batched"] == 0
    assert waiting["message"].startswith("15 decided duel answers so far: the model waits")
