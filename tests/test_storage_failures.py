"""core.store.storage under failure: lost locks, read-only files and folders, full disks.

Real parts only: SQLite files in temp folders, writer processes killed with SIGKILL, a
size-capped database (SQLite's ``max_page_count``) and, where this machine lets tests
mount, a real tiny tmpfs and a read-only bind mount.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import DatabaseReadOnlyError, StorageFullError
from core.store.storage import Store
from tests.data_helpers import make_game, make_generation, make_store

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HOME": tempfile.gettempdir()}


def _open_fds(path: Path) -> list[str]:
    """This process's open descriptors on ``path`` or its -wal / -shm files."""
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") in names:
                out.append(fd)
    return out


# --- lock loss: no Python file I/O on the database ------------------------------------

WRITER = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from core.bench.simulate import synthetic_generation
    from core.game.rounds import Game
    from core.store.storage import Store

    db, images = Path(sys.argv[1]), Path(sys.argv[2])
    first, second = Store(db, images), Store(db, images)  # two Stores in one process
    gid = first.save_generation(synthetic_generation(0, random.Random(0), size=8))
    games = [Game(s, random.Random(i), rounds_per_minute=0) for i, s in enumerate((first, second))]
    k = 0
    while True:
        k += 1
        game = games[k % 2]
        view = game.new_round(f"s{k}", "duel", gid)
        game.guess(f"s{k}", view.round_id, "A")
        if k % 20 == 0:
            Store(db, images).close()  # and a third, opened and closed mid-load
        sys.stdout.write(view.round_id + "\\n")  # acknowledged: the guess is committed
        sys.stdout.flush()
    """
)

OPENER = textwrap.dedent(
    """
    import sqlite3, sys
    from pathlib import Path
    from core.store.storage import Store

    db = Path(sys.argv[1])
    while True:  # a reader that opens and closes the database over and over
        with Store(db, Path(sys.argv[2]), must_exist=True) as store:
            store.counts()
        conn = sqlite3.connect(db)
        conn.execute("SELECT count(*) FROM guesses").fetchone()
        conn.close()
    """
)


def _spawn(code: str, *args: Path, user: int | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], cwd=REPO, env=ENV, user=user, **kwargs
    )


def test_two_stores_and_another_process_lose_no_acknowledged_guess(tmp_path):
    """Opening and closing the database elsewhere (another Store in the same process,
    another process) must never drop the writer's locks: with a Python open()/close() of
    the file, the other process checkpointed and deleted the WAL under the writer."""
    db, images = tmp_path / "arena.db", tmp_path / "images"
    writer = _spawn(WRITER, db, images, stdout=subprocess.PIPE)
    opener = None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 600:
            line = writer.stdout.readline()
            assert line, "the writer died early"
            acknowledged.append(line.decode().strip())
            if len(acknowledged) == 50:
                opener = _spawn(OPENER, db, images)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
        acknowledged += [x.decode().strip() for x in writer.stdout.read().splitlines()]
    finally:
        for proc in (writer, opener):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    in_db = {r[0] for r in conn.execute("SELECT round_id FROM guesses")}
    conn.close()
    assert set(acknowledged) <= in_db


# --- a failed start closes what it opened ---------------------------------------------


def test_failed_start_closes_every_connection(tmp_path):
    db = tmp_path / "arena.db"
    with pytest.raises(StorageFullError):
        Store(db, tmp_path / "images", max_pages=2)  # the schema needs more pages
    assert _open_fds(db) == []


# --- full disk -------------------------------------------------------------------------


def test_full_database_refuses_the_guess_and_loses_nothing_acknowledged(tmp_path):
    db = tmp_path / "arena.db"
    store = Store(db, tmp_path / "images", max_pages=40)
    game = make_game(store)
    gid = store.save_generation(make_generation())
    views = []
    with pytest.raises(StorageFullError):
        for k in range(100_000):  # open rounds until the rounds alone fill the cap
            views.append((f"s{k}", game.new_round(f"s{k}", "duel", gid).round_id))
    acknowledged, refused = [], []
    for session, round_id in views:
        try:
            game.guess(session, round_id, "A")
            acknowledged.append(round_id)
        except StorageFullError:
            refused.append((session, round_id))
    assert refused, "the cap was never reached by a guess"
    for _, round_id in refused:  # not recorded, and the round is still open
        assert not store.fetch_round(round_id).guessed
    store.close()
    roomy = Store(db, tmp_path / "images")  # more room: everything acknowledged is there
    assert {r[0] for r in roomy._conn().execute("SELECT round_id FROM guesses")} == set(
        acknowledged
    )
    assert roomy.integrity_check() == "ok"
    make_game(roomy).guess(*refused[0], "A")  # the refused vote can be cast again
    roomy.close()


@contextlib.contextmanager
def _mounted(target: Path, *args: str) -> Iterator[None]:
    """``mount *args target`` for the block; skips the test where mounting is not allowed."""
    target.mkdir(exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting needs root")
    done = subprocess.run(["mount", *args, str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting is not allowed here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def test_full_tmpfs_raises_storage_full_and_loses_nothing_acknowledged(tmp_path):
    disk = tmp_path / "disk"
    with _mounted(disk, "-t", "tmpfs", "-o", "size=400k", "tmpfs"):
        store = Store(disk / "arena.db", disk / "images")
        game = make_game(store)
        gid = store.save_generation(make_generation())
        acknowledged = []
        with pytest.raises(StorageFullError):
            for k in range(1_000_000):
                view = game.new_round(f"s{k}", "duel", gid)
                game.guess(f"s{k}", view.round_id, "A")
                acknowledged.append(view.round_id)
        with pytest.raises(StorageFullError):  # images too: all or nothing
            for i in range(1_000):
                store.save_generation(make_generation(i))
        assert store.counts()["images"] == len(list((disk / "images").iterdir()))
        store.close()
        conn = sqlite3.connect(disk / "arena.db")
        assert set(acknowledged) <= {r[0] for r in conn.execute("SELECT round_id FROM guesses")}
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


# --- read-only -------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder outside pytest's private tmp (0700), so an unprivileged child can reach it."""
    path = Path(tempfile.mkdtemp(prefix="spot-ro-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(path)


def _open_as_unprivileged(db: Path) -> str:
    """Open a Store on ``db`` in a forked child that is not root (root ignores file modes);
    return ``"opened"`` or the error's class name and message."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, try, report, exit without running pytest's code
        try:
            if os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            try:
                Store(db, db.parent / "images").close()
                result = "opened"
            except Exception as e:
                result = f"{type(e).__name__}: {e}"
            os.write(write, result.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_file_or_folder_is_refused_at_start(shared_dir, what):
    folder = shared_dir / "data"
    folder.mkdir()
    db = folder / "arena.db"
    store = Store(db, folder / "images")
    store.save_generation(make_generation())
    store.close()
    before = db.read_bytes()
    if os.geteuid() == 0:
        for p in [folder, *folder.rglob("*")]:
            os.chown(p, NOBODY, NOBODY)
    if what == "file":
        db.chmod(0o444)
    else:
        folder.chmod(0o555)
    out = _open_as_unprivileged(db)
    assert out.startswith("DatabaseReadOnlyError"), out
    assert (str(db) if what == "file" else f"folder {folder}") in out
    assert db.read_bytes() == before


def test_read_only_mount_is_refused_at_start(tmp_path):
    source, target = tmp_path / "source", tmp_path / "ro"
    source.mkdir()
    make_store(source).close()
    with _mounted(target, "--bind", "-o", "ro", str(source)):
        with pytest.raises(DatabaseReadOnlyError):
            Store(target / "arena.db", target / "images")
        assert _open_fds(target / "arena.db") == []
