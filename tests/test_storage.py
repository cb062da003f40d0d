"""core.store.storage: all-or-nothing saves, clean image files, corrupt files, crash safety.

The schema and adoption checks are in test_migrations.py; read-only, full-disk and lock
cases in test_storage_failures.py."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from core.errors import DatabaseCorruptError, DatabaseMissingError, UnknownVariantError
from core.records import IMAGE_FIGURES
from core.store.storage import Store
from tests.data_helpers import make_generation, make_store

REPO = Path(__file__).resolve().parent.parent


def test_save_generation_writes_neutral_clean_pngs(tmp_path):
    store = make_store(tmp_path)
    gen = make_generation(3)
    gen.results["int8"].image.info["variant"] = "int8"  # must not reach the file
    gid = store.save_generation(gen)
    paths = store.image_paths(gid)
    assert set(paths) == {"bf16", "int8", "nf4"}
    for variant, path in paths.items():
        assert path.parent == tmp_path / "images"
        assert len(path.stem) == 32 and all(c in "0123456789abcdef" for c in path.stem)
        assert variant not in path.name
        data = path.read_bytes()
        assert b"tEXt" not in data and b"iTXt" not in data and b"zTXt" not in data
        assert b"eXIf" not in data and b"iCCP" not in data
        with Image.open(path) as img:
            assert img.size == gen.results[variant].image.size
            assert not {k for k in img.info if k not in ("dpi",)}
    stored = store.generation(gid)
    assert stored.prompt == gen.prompt and stored.settings == gen.settings
    assert stored.synthetic and stored.variants == ("bf16", "int8", "nf4")
    sha = store._conn().execute("SELECT sha256, path FROM images").fetchall()
    for digest, name in sha:
        assert hashlib.sha256((tmp_path / "images" / name).read_bytes()).hexdigest() == digest
    stats = store.image_stats(gid)
    assert stats["int8"]["weight_bytes"] == gen.results["int8"].weight_bytes
    for variant in ("bf16", "int8", "nf4"):
        for field in ("activation_peak_bytes", "standalone_peak_bytes"):
            assert stats[variant][field] == getattr(gen.results[variant], field)
    assert stats["bf16"]["psnr"] is None
    # One modification time for the whole generation (served as Last-Modified): the
    # order the files were written in (BF16 first) must not show.
    assert len({p.stat().st_mtime_ns for p in paths.values()}) == 1


def test_every_image_figure_has_its_column_and_comes_back(tmp_path):
    """IMAGE_FIGURES is the one list: the images table holds exactly those columns beside
    its keys, and every figure saved is read back by image_stats."""
    store = make_store(tmp_path)
    columns = {row[1] for row in store._conn().execute("PRAGMA table_info(images)")}
    assert columns == {"generation_id", "variant", "path", "sha256", *IMAGE_FIGURES}
    gen = make_generation(2)
    for k, result in enumerate(gen.results.values()):
        for n, name in enumerate(IMAGE_FIGURES):
            value = 100 * k + n + 1
            setattr(result, name, value + 0.5 if name in ("seconds", "psnr", "ssim") else value)
    stats = store.image_stats(store.save_generation(gen))
    for variant, result in gen.results.items():
        assert stats[variant] == dict(zip(IMAGE_FIGURES, result.figures(), strict=True))
        assert stats[variant] == {name: getattr(result, name) for name in IMAGE_FIGURES}


class ExplodingImage:
    """Looks like an image until its pixels are read."""

    mode = "RGB"
    size = (16, 16)

    def tobytes(self):
        raise OSError("disk on fire")


def _assert_empty(store: Store, tmp_path: Path) -> None:
    counts = store.counts()
    assert counts["generations"] == counts["images"] == 0
    assert list((tmp_path / "images").glob("*")) == []


def test_save_is_all_or_nothing_when_an_image_fails(tmp_path):
    store = make_store(tmp_path)
    gen = make_generation()
    gen.results["nf4"].image = ExplodingImage()  # the last one: two files already written
    with pytest.raises(OSError, match="disk on fire"):
        store.save_generation(gen)
    _assert_empty(store, tmp_path)


def test_save_is_all_or_nothing_when_a_row_fails(tmp_path):
    store = make_store(tmp_path)
    conn = sqlite3.connect(tmp_path / "arena.db")
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON images WHEN NEW.variant = 'nf4' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    conn.commit()
    conn.close()
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        store.save_generation(make_generation())
    _assert_empty(store, tmp_path)


def test_unknown_variant_is_rejected_before_anything_is_written(tmp_path):
    store = make_store(tmp_path)
    gen = make_generation()
    gen.results["fp8"] = gen.results.pop("nf4")
    with pytest.raises(UnknownVariantError):
        store.save_generation(gen)
    assert store.counts()["generations"] == 0


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database at all, just some text" * 100,
        b"SQLite format 3\x00" + b"\xff" * 4000,
    ],
    ids=["text", "sqlite-header-garbage-body"],
)
def test_corrupt_file_is_reported_and_left_untouched(tmp_path, content):
    path = tmp_path / "arena.db"
    path.write_bytes(content)
    with pytest.raises(DatabaseCorruptError):
        Store(path, tmp_path / "images")
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arena.db"]


def test_damaged_page_in_real_database_is_reported_and_left_untouched(tmp_path):
    store = make_store(tmp_path)
    for i in range(3):
        store.save_generation(make_generation(i))
    store.close()
    path = tmp_path / "arena.db"
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\x00\xff" * ((4096 - 100) // 2)  # wreck the schema page
    path.write_bytes(bytes(data))
    with pytest.raises(DatabaseCorruptError):
        Store(path, tmp_path / "images")
    assert path.read_bytes() == bytes(data)


def test_missing_database_is_not_created_when_it_must_exist(tmp_path):
    with pytest.raises(DatabaseMissingError):
        Store(tmp_path / "nope.db", tmp_path / "images", must_exist=True)
    assert not (tmp_path / "nope.db").exists()


WRITER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from core.game.rounds import Game
    from core.bench.simulate import synthetic_generation
    from core.store.storage import Store

    store = Store(Path(sys.argv[1]), Path(sys.argv[2]))
    gid = store.save_generation(synthetic_generation(0, random.Random(0), size=8))
    game = Game(store, random.Random(0), rounds_per_minute=0)
    k = 0
    while True:
        k += 1
        view = game.new_round(f"s{k}", "duel", gid)
        game.guess(f"s{k}", view.round_id, "A")
        sys.stdout.write(view.round_id + "\\n")  # acknowledged: the guess is committed
        sys.stdout.flush()
    """
)


def test_sigkill_mid_load_loses_no_acknowledged_guess(tmp_path):
    db = tmp_path / "arena.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(tmp_path / "images")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acknowledged = []
    try:
        while len(acknowledged) < 300:
            line = proc.stdout.readline()
            assert line, "the writer died early"
            acknowledged.append(line.decode().strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        acknowledged += [x.decode().strip() for x in proc.stdout.read().splitlines()]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    in_db = {r[0] for r in conn.execute("SELECT round_id FROM guesses")}
    conn.close()
    assert set(acknowledged) <= in_db
    store = Store(db, tmp_path / "images")
    assert store.integrity_check() == "ok"
