"""core.game.export: every table in every format, no answer key of an unanswered round."""

from __future__ import annotations

import csv
import json
import zipfile

import pyarrow.parquet as pq
import pytest

from core.errors import DatabaseMissingError
from core.game.export import FORMATS, export, export_zip, main
from core.store.storage import TABLES
from tests.data_helpers import make_game, make_generation, make_store


@pytest.fixture
def played(tmp_path):
    """A store with two answered rounds and one unanswered round; returns (store, ids)."""
    store = make_store(tmp_path)
    game = make_game(store)
    gid = store.save_generation(make_generation())
    answered = []
    for mode in ("duel", "trio"):
        view = game.new_round("alice", mode, gid)
        game.guess("alice", view.round_id, "A")
        answered.append(view.round_id)
    pending = game.new_round("alice", "duel", gid).round_id
    return store, answered, pending


def _rounds_by_id(out, fmt):
    if fmt == "csv":
        with open(out / "rounds.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:  # CSV has no null: an empty field
            for k, v in row.items():
                row[k] = v or None
    elif fmt == "json":
        rows = json.loads((out / "rounds.json").read_text())
    else:
        rows = pq.read_table(out / "rounds.parquet").to_pylist()
    return {r["id"]: r for r in rows}


def test_export_every_format_without_pending_answer_keys(played, tmp_path):
    store, answered, pending = played
    out = tmp_path / "out"
    paths = export(store, out)
    assert sorted(p.name for p in paths) == sorted(
        [f"{t}.{f}" for t in TABLES for f in FORMATS] + ["summary.json"]
    )
    for fmt in FORMATS:
        rounds = _rounds_by_id(out, fmt)
        assert set(rounds) == {*answered, pending}
        assert rounds[pending]["answer_key"] is None
        assert rounds[pending]["compared_variant"] is None
        for round_id in answered:
            assert json.loads(rounds[round_id]["answer_key"]) == (
                store.fetch_round(round_id).answer_key
            )
    guesses = json.loads((out / "guesses.json").read_text())
    assert [g["round_id"] for g in guesses] == answered
    assert pq.read_table(out / "guesses.parquet").num_rows == 2
    images = pq.read_table(out / "images.parquet").to_pylist()
    assert {i["variant"] for i in images} == {"bf16", "int8", "nf4"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["guesses"] == 2


def test_export_of_empty_tables(tmp_path):
    store = make_store(tmp_path)
    export(store, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "guesses.json").read_text()) == []
    assert pq.read_table(tmp_path / "out" / "guesses.parquet").num_rows == 0
    assert (tmp_path / "out" / "guesses.csv").read_text().startswith('"id","round_id"')


def test_export_zip(played, tmp_path):
    store, _, _ = played
    path = export_zip(store, tmp_path / "dl" / "arena.zip")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted([f"{t}.csv" for t in TABLES] + ["summary.json"])
    store.close()
    again = export_zip(tmp_path / "arena.db", tmp_path / "again.zip", formats=("parquet",))
    assert zipfile.ZipFile(again).testzip() is None
    with pytest.raises(DatabaseMissingError):
        export_zip(tmp_path / "missing.db", tmp_path / "x.zip")
    assert not (tmp_path / "missing.db").exists()


def test_cli(played, tmp_path, capsys):
    store, _, _ = played
    store.close()
    assert (
        main(
            [
                "--db",
                str(tmp_path / "arena.db"),
                "--out",
                str(tmp_path / "cli"),
                "--format",
                "csv,parquet",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(
        [f"{t}.{f}" for t in TABLES for f in ("csv", "parquet")] + ["summary.json"]
    )
    with pytest.raises(SystemExit) as e:
        main(["--db", str(tmp_path / "arena.db"), "--out", str(tmp_path / "x"), "--format", "xls"])
    assert e.value.code == 2 and "unknown format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "no database" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(SystemExit):
        main(["--db", str(tmp_path / "arena.db")])  # --out is required


def test_public_export_ties_no_image_to_its_variant_and_private_adds_it(played, tmp_path):
    store, _, _ = played
    public = tmp_path / "public"
    export(store, public)
    stored = [dict(r) for r in store._conn().execute("SELECT path, sha256 FROM images")]
    for fmt in FORMATS:
        text = (public / f"images.{fmt}").read_bytes()
        for row in stored:
            assert row["path"].encode() not in text and row["sha256"].encode() not in text
    columns = set(pq.read_table(public / "images.parquet").column_names)
    assert not columns & {"path", "sha256", "psnr", "ssim"}
    assert {"variant", "seconds", "weight_bytes"} <= columns
    assert set(json.loads((public / "images.json").read_text())[0]) == columns
    with open(public / "images.csv", newline="") as f:
        assert set(next(csv.reader(f))) == columns

    private = tmp_path / "private"
    export(store, private, private=True)
    for fmt in FORMATS:
        text = (private / f"images.{fmt}").read_bytes()
        assert all(row["sha256"].encode() in text for row in stored)
    rows = pq.read_table(private / "images.parquet").to_pylist()
    assert {r["path"] for r in rows} == {r["path"] for r in stored}


def test_cli_private_flag(played, tmp_path):
    store, _, _ = played
    store.close()
    db = str(tmp_path / "arena.db")
    assert main(["--db", db, "--out", str(tmp_path / "pub"), "--format", "csv"]) == 0
    assert (
        main(["--db", db, "--out", str(tmp_path / "all"), "--format", "csv", "--include-private"])
        == 0
    )
    assert "sha256" not in (tmp_path / "pub" / "images.csv").read_text().splitlines()[0]
    assert "sha256" in (tmp_path / "all" / "images.csv").read_text().splitlines()[0]
