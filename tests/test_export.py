"""core.game.export: every table in every format, no answer key of an unanswered round."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.errors import DatabaseMissingError
from core.game.export import FORMATS, export, export_zip, main
from core.game.stats import main as stats_main
from core.store.storage import TABLES
from tests.data_helpers import make_game, make_generation, make_store

REPO = Path(__file__).resolve().parent.parent


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


def _rows(out: Path, table: str, fmt: str) -> list[dict]:
    """The exported ``table`` in ``fmt``, decoded: one dict per row."""
    if fmt == "csv":
        with open(out / f"{table}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:  # CSV has no null: an empty field
            for k, v in row.items():
                row[k] = v or None
        return rows
    if fmt == "json":
        return json.loads((out / f"{table}.json").read_text())
    return pq.read_table(out / f"{table}.parquet").to_pylist()


def _rounds_by_id(out, fmt):
    return {r["id"]: r for r in _rows(out, "rounds", fmt)}


def _holds_any(rows: list[dict], secrets: set[str]) -> bool:
    """Whether any decoded value of ``rows`` (as text) contains one of ``secrets``."""
    texts = [str(v) for row in rows for v in row.values() if v is not None]
    return any(secret in text for text in texts for secret in secrets)


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


def test_export_command_as_its_own_process(played, tmp_path):
    """``python -m core.game.export`` runs code of its own (the collector off, then
    frozen): as a child process it writes every format, and the same as export()."""
    store, _, pending = played
    subprocess.run(
        [sys.executable, "-m", "core.game.export", "--db", str(store.db_path), "--out",
         str(tmp_path / "cmd")],
        cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    export(store, tmp_path / "api")
    for fmt in FORMATS:
        assert _rounds_by_id(tmp_path / "cmd", fmt) == _rounds_by_id(tmp_path / "api", fmt)
        assert _rounds_by_id(tmp_path / "cmd", fmt)[pending]["answer_key"] is None


def test_public_export_leaves_out_what_ties_a_file_to_its_variant(played, tmp_path):
    store, _, pending = played
    export(store, tmp_path / "public")
    paths = store.image_paths(1).values()
    secrets = {p.name for p in paths} | {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    for fmt in FORMATS:
        rows = _rows(tmp_path / "public", "images", fmt)
        assert len(rows) == len(paths) and not _holds_any(rows, secrets), fmt
    columns = pq.read_table(tmp_path / "public" / "images.parquet").column_names
    assert "path" not in columns and "sha256" not in columns and "variant" in columns
    export(store, tmp_path / "private", include_private=True)
    images = pq.read_table(tmp_path / "private" / "images.parquet").to_pylist()
    assert {i["path"] for i in images} == {p.name for p in store.image_paths(1).values()}
    rounds = _rounds_by_id(tmp_path / "private", "json")
    assert json.loads(rounds[pending]["answer_key"]) == store.fetch_round(pending).answer_key


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_floats_and_awkward_text_are_exported_exactly(tmp_path):
    store = make_store(tmp_path)
    gen = make_generation()
    gen.prompt = 'a "quoted" prompt, with a back\\slash, a tab\there, ünïcode and a\nnewline'
    gen.results["int8"].seconds = 0.1 + 0.2  # 0.30000000000000004
    gen.results["nf4"].seconds = 5e-324
    gen.results["int8"].psnr = float("inf")  # identical images: JSON has no infinity
    store.save_generation(gen)
    out = tmp_path / "out"
    export(store, out, include_private=True)  # with PSNR, which the public export leaves out
    seconds = {"bf16": gen.results["bf16"].seconds, "int8": 0.1 + 0.2, "nf4": 5e-324}
    by_format = {
        "json": json.loads((out / "images.json").read_text()),
        "parquet": pq.read_table(out / "images.parquet").to_pylist(),
        "csv": _csv_rows(out / "images.csv"),
    }
    for fmt, rows in by_format.items():
        assert {r["variant"]: float(r["seconds"]) for r in rows} == seconds, fmt
    assert next(r for r in by_format["json"] if r["variant"] == "int8")["psnr"] is None
    for fmt, rows in {
        "json": json.loads((out / "generations.json").read_text()),
        "parquet": pq.read_table(out / "generations.parquet").to_pylist(),
        "csv": _csv_rows(out / "generations.csv"),
    }.items():
        assert rows[0]["prompt"] == gen.prompt, fmt


def test_cli_refuses_a_damaged_database_in_one_line(tmp_path, capsys):
    path = tmp_path / "arena.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    for cli in (main, stats_main):
        with pytest.raises(SystemExit) as e:
            cli(
                ["--db", str(path), "--out", str(tmp_path / "x")]
                if cli is main
                else ["--db", str(path)]
            )
        err = capsys.readouterr().err
        assert e.value.code == 2
        assert err.count("\n") == 1 and "Traceback" not in err and "left untouched" in err
    assert path.read_bytes() == b"SQLite format 3\x00" + b"\xff" * 4000


WRITER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from core.game.rounds import Game
    from core.store.storage import Store

    store = Store(Path(sys.argv[1]), Path(sys.argv[2]))
    game = Game(store, random.Random(0), rounds_per_minute=0)
    k = 0
    while True:
        k += 1
        view = game.new_round(f"w{k}", "duel", 1)
        game.guess(f"w{k}", view.round_id, "A")
        game.new_round(f"w{k}", "trio", 1)  # and one left open
        if k == 1:
            sys.stdout.write("writing\\n")
            sys.stdout.flush()
    """
)


def _count(out: Path, table: str) -> dict[str, int]:
    with open(out / f"{table}.csv", newline="") as f:
        csv_rows = sum(1 for _ in csv.DictReader(f))
    return {
        "csv": csv_rows,
        "json": len(json.loads((out / f"{table}.json").read_text())),
        "parquet": pq.read_metadata(out / f"{table}.parquet").num_rows,
    }


def test_export_under_load_is_one_consistent_state(tmp_path):
    store = make_store(tmp_path)
    store.save_generation(make_generation())
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "arena.db"), str(tmp_path / "images")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout.readline() == b"writing\n"
        seen = []
        for i in range(4):
            out = tmp_path / f"out{i}"
            export(store, out)
            summary = json.loads((out / "summary.json").read_text())["counts"]
            guesses, rounds = _count(out, "guesses"), _count(out, "rounds")
            assert set(guesses.values()) == {summary["guesses"]}, (guesses, summary)
            assert set(rounds.values()) == {summary["rounds"]}, (rounds, summary)
            answered = [r for r in json.loads((out / "rounds.json").read_text()) if r["answer_key"]]
            assert len(answered) == summary["guesses"]  # the key-hiding saw the same state
            seen.append(summary["guesses"])
    finally:
        writer.kill()
        writer.wait(timeout=10)
        writer.stdout.close()
    assert len(set(seen)) == len(seen), f"the writer did not write between exports: {seen}"


def test_public_export_ties_no_image_to_its_variant_and_private_adds_it(played, tmp_path):
    store, _, _ = played
    public = tmp_path / "public"
    export(store, public)
    stored = [dict(r) for r in store._conn().execute("SELECT path, sha256 FROM images")]
    secrets = {row["path"] for row in stored} | {row["sha256"] for row in stored}
    for fmt in FORMATS:
        rows = _rows(public, "images", fmt)
        assert len(rows) == len(stored) and not _holds_any(rows, secrets), fmt
    columns = set(pq.read_table(public / "images.parquet").column_names)
    assert not columns & {"path", "sha256", "psnr", "ssim"}
    assert {"variant", "seconds", "weight_bytes"} <= columns
    assert set(json.loads((public / "images.json").read_text())[0]) == columns
    with open(public / "images.csv", newline="") as f:
        assert set(next(csv.reader(f))) == columns

    private = tmp_path / "private"
    export(store, private, include_private=True)
    for fmt in FORMATS:
        rows = _rows(private, "images", fmt)
        assert {(r["path"], r["sha256"]) for r in rows} == {
            (r["path"], r["sha256"]) for r in stored
        }, fmt


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


def test_every_epoch_time_has_its_iso_8601_utc_text_beside_it(played, tmp_path):
    from datetime import UTC, datetime

    store, _, _ = played
    out = tmp_path / "iso"
    export(store, out)
    for table, times in (
        ("generations", ["created_at"]),
        ("rounds", ["created_at", "expires_at"]),
        ("guesses", ["created_at"]),
    ):
        parquet = pq.read_table(out / f"{table}.parquet")
        names = parquet.column_names
        rows = parquet.to_pylist()
        with open(out / f"{table}.csv", newline="") as f:
            csv_rows = list(csv.DictReader(f))
        json_rows = json.loads((out / f"{table}.json").read_text())
        assert rows
        for name in times:
            assert names.index(name + "_utc") == names.index(name) + 1
            for row, as_csv, as_json in zip(rows, csv_rows, json_rows, strict=True):
                text = row[name + "_utc"]
                assert text.endswith("Z") and "T" in text
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
                assert parsed.tzinfo is not None
                assert abs(parsed.timestamp() - row[name]) < 1e-6
                expected = datetime.fromtimestamp(row[name], UTC)
                assert parsed.replace(microsecond=0) == expected.replace(microsecond=0)
                assert as_csv[name + "_utc"] == as_json[name + "_utc"] == text
