"""The SQLite database file, opened safely: start-up checks, connections, transactions.

Start: the file is judged before anything is written, through SQLite alone (a read-only
URI open and ``os.stat``; never Python file I/O, whose close would drop this process's
POSIX locks on the database): ``PRAGMA quick_check`` (DatabaseCorruptError), then whether
it is empty, ours, foreign or newer (``migrations.judge``). Only then is it opened for
writing, upgraded, and switched to WAL. A read-only file or folder raises
DatabaseReadOnlyError here, not at the first guess; a start that fails closes every
connection it opened.

Concurrency: the database is in WAL mode, so readers never wait for the writer. Each
thread gets its own connection (``threading.local``); writes inside one process are
serialized by a lock (no busy-wait back-off between our own threads), and across
processes by ``BEGIN IMMEDIATE`` with a busy timeout. ``synchronous=FULL``: a commit is
on disk before it is acknowledged, so an acknowledged guess survives the process being
killed, an OS crash and a power loss (NORMAL would risk the last commits on the latter
two, for about 1.7x the throughput; FULL still clears 500 guesses/s here). A full disk
raises StorageFullError and the write is rolled back: nothing is acknowledged.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from core.errors import (
    DatabaseCorruptError,
    DatabaseError,
    DatabaseMissingError,
    DatabaseReadOnlyError,
    StorageFullError,
)
from core.store import migrations
from core.store.snapshot import Snapshot, open_reader

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 10.0


def translate_error(e: sqlite3.Error, where: Path | str) -> DatabaseError | None:
    """The named error for a SQLite failure (full, read-only, damaged), or None."""
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    if code == sqlite3.SQLITE_FULL:
        return StorageFullError(f"{where}: the disk or the database's size cap is full ({e})")
    if code == sqlite3.SQLITE_READONLY:
        return DatabaseReadOnlyError(f"{where} cannot be written ({e})")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return DatabaseCorruptError(f"{where} is damaged ({e}); it was left untouched")
    return None


def read_only_uri(path: Path) -> str:
    """A ``file:`` URI that opens ``path`` read-only (SQLite writes nothing through it)."""
    return f"{path.resolve().as_uri()}?mode=ro"


def inspect(path: Path) -> migrations.Standing:
    """Judge an existing database file without writing it: quick_check, then ours or not.

    Raises DatabaseCorruptError, ForeignDatabaseError or NewerDatabaseError.
    """
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as e:
        raise translate_error(e, path) or DatabaseError(f"{path} could not be opened: {e}") from e
    try:
        # quick_check: every page and B-tree is well formed (root pages, NOT NULL, cell
        # order); it skips only the index-against-table cross-check of integrity_check.
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise DatabaseCorruptError(
                f"{path} is damaged ({'; '.join(problems)[:300]}); it was left untouched"
            )
        return migrations.judge(conn, str(path))
    except sqlite3.Error as e:
        raise translate_error(e, path) or DatabaseError(f"{path} could not be read: {e}") from e
    finally:
        conn.close()


class Database:
    """One SQLite database file with a connection per thread. Safe to share between threads.

    ``max_pages`` caps the database file at that many pages (SQLite's ``max_page_count``;
    None: SQLite's default), so a deployment can keep it from filling a shared disk; a
    write past the cap raises StorageFullError like a full disk.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        must_exist: bool = False,
        max_pages: int | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self._max_pages = max_pages
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        try:
            self._start(must_exist)
        except BaseException:
            self.close()
            raise

    def _start(self, must_exist: bool) -> None:
        """Judge the file, then create or upgrade it; see the module docstring."""
        try:
            st = os.stat(self.db_path)
        except FileNotFoundError:
            if must_exist:
                raise DatabaseMissingError(f"no database at {self.db_path}") from None
            st = None
        folder = self.db_path.parent
        if st is None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatabaseReadOnlyError(f"cannot create the folder {folder}: {e}") from e
        elif not stat.S_ISREG(st.st_mode):
            raise DatabaseCorruptError(f"{self.db_path} is not a file; it was left untouched")
        # WAL needs the -wal and -shm files beside the database: the folder must be writable.
        if not os.access(folder, os.W_OK):
            raise DatabaseReadOnlyError(f"the folder {folder} cannot be written")
        if st is not None and not os.access(self.db_path, os.W_OK):
            raise DatabaseReadOnlyError(f"{self.db_path} cannot be written")
        if st is not None and st.st_size > 0:
            inspect(self.db_path)
        try:
            with self._write() as conn:  # BEGIN IMMEDIATE fails on a read-only file or mount
                # Judged again under the write lock: nothing changed it since.
                migrations.judge(conn, str(self.db_path))
                for name in migrations.migrate(sqlite_utils.Database(conn)):
                    logger.info("applied migration %s to %s", name, self.db_path)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise DatabaseError(f"{self.db_path} could not be switched to WAL ({mode})")
        except sqlite3.Error as e:
            raise translate_error(e, self.db_path) or DatabaseError(
                f"{self.db_path} could not be opened: {e}"
            ) from e

    # --- connections and transactions -----------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.db_path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,  # we issue BEGIN / COMMIT ourselves
                check_same_thread=False,
            )
            with self._connections_lock:
                self._connections.append(conn)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if self._max_pages is not None:
                conn.execute(f"PRAGMA max_page_count = {int(self._max_pages)}")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any exception.

        A full disk, a read-only file or a damaged page become their named errors.
        """
        conn = self._conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back already
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                named = translate_error(e, self.db_path)
                if named is None:
                    raise
                raise named from e

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several SELECTs (inside
        ``snapshot()``, the snapshot's own)."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (the store is unusable afterwards)."""
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- schema ------------------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        return migrations.applied_migrations(self._conn())

    def schema(self) -> dict[str, dict[str, str]]:
        """Table name -> {column name: declared type}, in order (what the schema test checks)."""
        db = sqlite_utils.Database(self._conn())
        return {name: {c.name: c.type for c in db[name].columns} for name in db.table_names()}

    def integrity_check(self) -> str:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0]

    # --- export ----------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One state of the whole database for the duration of the block.

        This thread's reads through the store (e.g. ``stats.summary(store)``) and the
        yielded Snapshot's Arrow reads all see it, even while other threads or processes
        write. Both read transactions are started while a third connection holds the
        write lock (``BEGIN IMMEDIATE``, which excludes writers of every process), so no
        commit can fall between them; the lock is released at once, and writers then
        proceed while the export reads (WAL readers do not block them).
        """
        conn = self._conn()
        if conn.in_transaction:
            raise DatabaseError("a snapshot cannot be opened inside another transaction")
        uri = read_only_uri(self.db_path)
        reader = open_reader(uri)  # ADBC starts its read transaction (autocommit off)
        try:
            with self._write_lock:
                # A read-write connection: on a read-only one BEGIN IMMEDIATE takes no lock.
                lock = sqlite3.connect(
                    self.db_path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None
                )
                try:
                    lock.execute("BEGIN IMMEDIATE")
                    conn.execute("BEGIN")
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    cursor = reader.cursor()
                    cursor.execute("SELECT count(*) FROM sqlite_master")
                    cursor.fetchall()
                    cursor.close()
                finally:
                    lock.close()  # ends its transaction: writers may go on
            declared = {
                table: {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({table})")}
                for table in migrations.DATA_TABLES
            }
            yield Snapshot(reader, declared)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
            reader.close()
