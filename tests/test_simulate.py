"""core.bench.simulate: many threads through the Game API lose nothing; known truths recovered."""

from __future__ import annotations

import argparse
import json

import pytest

from core.bench import validate
from core.bench.simulate import build_parser, bulk_load, main, parse_accuracy, run_load
from core.game.stats import DISTINGUISHABLE, detection_table
from tests.data_helpers import make_store


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_32_threads_lose_and_duplicate_nothing(tmp_path):
    store = make_store(tmp_path)
    report = run_load(
        store, _args("--generations", "8", "--rounds", "1056", "--threads", "32", "--mode", "both")
    )
    assert report["failed"] == 0, report["errors"]
    assert report["lost"] == report["duplicated"] == report["unacknowledged_in_db"] == 0
    assert report["acknowledged"] == report["db_guesses"] == 1056
    counts = store.counts()
    assert counts["guesses"] == 1056 and counts["rounds"] == 1056
    assert store.integrity_check() == "ok"


def test_simulated_accuracies_are_recovered(tmp_path):
    store = make_store(tmp_path)
    truth = {"int8": 0.5, "nf4": 0.8}
    run_load(
        store,
        _args(
            "--generations",
            "10",
            "--rounds",
            "1600",
            "--threads",
            "4",
            "--mode",
            "duel",
            "--accuracy",
            "int8=0.5,nf4=0.8",
            "--seed",
            "3",
        ),
    )
    rows = {d.variant: d for d in detection_table(store) if d.mode == "duel"}
    for variant, p in truth.items():
        assert rows[variant].ci_low <= p <= rows[variant].ci_high, variant
    assert rows["int8"].verdict != DISTINGUISHABLE
    assert rows["nf4"].verdict == DISTINGUISHABLE and rows["nf4"].p_holm < 1e-6


def test_bulk_load_recovers_trio_and_cant_tell_at_scale(tmp_path):
    store = make_store(tmp_path)
    bulk_load(
        store,
        _args(
            "--bulk-guesses",
            "30000",
            "--generations",
            "5",
            "--mode",
            "both",
            "--accuracy",
            "bf16=0.6,int8=0.5,nf4=0.7",
            "--cant-tell",
            "0.1",
            "--seed",
            "4",
        ),
    )
    rows = {(d.mode, d.variant): d for d in detection_table(store)}
    # The tested rate is the accuracy on decided answers, whatever the can't-tell share.
    for key, p in {("trio", "all"): 0.6, ("duel", "int8"): 0.5, ("duel", "nf4"): 0.7}.items():
        d = rows[key]
        assert d.ci_low <= p <= d.ci_high, key
        assert d.cant_tell_ci_low <= 0.1 <= d.cant_tell_ci_high, key
        assert d.spotted_rate == pytest.approx(0.9 * p, abs=0.03)
    assert store.counts()["guesses"] == 30000


def test_cli_json_and_refusal_of_the_app_database(tmp_path, monkeypatch, capsys):
    assert main(["--generations", "3", "--rounds", "40", "--threads", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["acknowledged"] == 40 and report["lost"] == 0
    assert report["guesses_per_second"] > 0 and report["guess_latency_ms"]["p99"] > 0

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["--db", "data/arena.db", "--rounds", "5"])
    assert e.value.code == 2 and "--force" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("bad", ["int8", "fp8=0.5", "nf4=1.5", "nf4=x"])
def test_bad_accuracy(bad):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_accuracy(bad)


def test_fast_validation_of_the_verdicts(capsys):
    """The issue's five criteria on 100 studies each, bounds loosened by 3 Monte-Carlo
    standard errors (the full run, 500 studies, is in README)."""
    assert main(["--validate", "--studies", "100", "--fast"]) == 0
    out = capsys.readouterr().out
    assert out.count("| yes |") == 16 and "**NO**" not in out


@pytest.mark.parametrize("bad", ["0", "1", "-0.1", "x"])
def test_bad_clustering_level(bad, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--validate", "--studies", "1", "--clustering-level", bad])
    assert e.value.code == 2 and "--clustering-level" in capsys.readouterr().err


def test_a_missed_bound_fails_the_validation():
    row = validate.Figure("x", "y", value=0.2, bound=0.05, at_least=False, studies=100)
    assert not row.holds(fast=True) and not row.holds(fast=False)
    near = validate.Figure("x", "y", value=0.07, bound=0.05, at_least=False, studies=100)
    assert near.holds(fast=True) and not near.holds(fast=False)
    assert "**NO**" in validate.table([row], fast=False)
