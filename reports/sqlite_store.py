"""SQLite store for result rows: one `results` table, one row per (run_id, case_id).

Each write is one transaction, so an interrupted sweep keeps every case that finished and never half of one.
Columns added to the schema later are added to a harness table with ALTER TABLE, so a database keeps growing
across harness versions; a `results` table that lacks the harness key belongs to something else and is refused
rather than altered (INSERT OR REPLACE would then duplicate rows on every rerun).

Every problem a user can cause (a read-only file or directory, a directory or a non-SQLite file at the path, a
full disk) is a StoreError with one line naming the file. Writability is probed at open time with a write
transaction that is rolled back, so a read-only database fails before the first case runs, not after it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from vq_benchmark.reports.atomic import os_error_reason
from vq_benchmark.reports.errors import StoreError, one_line
from vq_benchmark.reports.schema import ALL_COLUMNS, COLUMN_NAMES, PRIMARY_KEY, Row, check_row

TABLE = "results"
BUSY_TIMEOUT_S = 30.0
_PROBE_TABLE = "_vq_benchmark_write_probe"
_SQLITE_WORDS = {
    "SQLITE_FULL": "disk full",
    "SQLITE_READONLY": "read-only, cannot write",
    "SQLITE_CANTOPEN": "cannot open or create the file or its journal (directory missing or read-only?)",
    "SQLITE_NOTADB": "not a SQLite database",
    "SQLITE_CORRUPT": "database file is corrupt",
    "SQLITE_BUSY": f"locked by another process for more than {BUSY_TIMEOUT_S:.0f} s",
    "SQLITE_PERM": "permission denied",
}

__all__ = ["TABLE", "SqliteStore", "StoreError", "ensure_schema"]


def _reason(exc: BaseException) -> str:
    """Plain words for a failed SQLite or file operation (the raw message stays in parentheses)."""
    if isinstance(exc, OSError):
        return os_error_reason(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    words = next((w for code, w in _SQLITE_WORDS.items() if name.startswith(code)), None)
    raw = one_line(exc, 200)
    return f"{words} ({raw})" if words else raw


def _error(path: Path, action: str, exc: BaseException) -> StoreError:
    return StoreError(f"results database {path}: {action} failed: {_reason(exc)}")


def _connect(path: Path) -> sqlite3.Connection:
    if path.is_dir():
        raise StoreError(f"results database {path}: is a directory, expected a SQLite file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = os_error_reason(exc)
        raise StoreError(f"results database {path}: cannot create its directory {path.parent} ({reason})") from exc
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise _error(path, "open", exc) from exc
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header: a non-SQLite file fails here
        conn.execute("PRAGMA journal_mode=DELETE")
        _probe_writable(conn)
    except (sqlite3.Error, OSError) as exc:
        conn.close()
        raise _error(path, "open", exc) from exc
    return conn


def _probe_writable(conn: sqlite3.Connection) -> None:
    """Modify a page inside a transaction and roll back: this needs write access to the file *and* to its
    directory (for the journal), the two things a read-only setup takes away. BEGIN IMMEDIATE alone succeeds on a
    read-only file."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f'CREATE TABLE "{_PROBE_TABLE}" (x)')
    finally:
        _rollback(conn)


def _primary_key(conn: sqlite3.Connection) -> tuple[str, ...]:
    info = conn.execute(f"PRAGMA table_info({TABLE})").fetchall()
    return tuple(name for _, name in sorted((r[5], r[1]) for r in info if r[5]))


def ensure_schema(conn: sqlite3.Connection, path: Path | str = "?") -> None:
    """Create the table, or add the columns this version knows and a harness table lacks (one transaction).

    Refuses (StoreError) a `results` table or view whose primary key is not the harness key.
    """
    cols = ", ".join(f'"{c.name}" {c.sql_type}' for c in ALL_COLUMNS)
    key = ", ".join(PRIMARY_KEY)
    conn.execute("BEGIN IMMEDIATE")
    try:
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()
        if kind is None:
            conn.execute(f"CREATE TABLE {TABLE} ({cols}, PRIMARY KEY ({key}))")
        elif kind[0] != "table" or _primary_key(conn) != PRIMARY_KEY:
            raise StoreError(
                f"results database {path}: table '{TABLE}' exists without the harness key ({key}); "
                "use another --vq-db-path"
            )
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")}
        for c in ALL_COLUMNS:
            if c.name not in have:
                conn.execute(f'ALTER TABLE {TABLE} ADD COLUMN "{c.name}" {c.sql_type}')
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo a failed transaction; SQLite may already have rolled it back itself (e.g. on SQLITE_FULL)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class SqliteStore:
    """Insert-or-replace rows into one database file; safe to reopen by later sessions."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path)
        try:
            ensure_schema(self._conn, self.path)
        except StoreError:
            self._conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            self._conn.close()
            raise _error(self.path, "schema setup", exc) from exc

    def write(self, rows: Iterable[Row]) -> None:
        """Insert rows in one transaction; a re-run of the same case in the same run replaces its row.

        Invalid rows raise ValueError/TypeError before anything is written; a failed write (disk full, I/O error)
        is rolled back completely and raised as StoreError.
        """
        rows = list(rows)
        for row in rows:
            check_row(row)
            missing = [k for k in PRIMARY_KEY if not isinstance(row.get(k), str)]
            if missing:
                raise ValueError(f"row needs text {', '.join(missing)} (the primary key)")
        placeholders = ", ".join("?" for _ in COLUMN_NAMES)
        names = ", ".join(f'"{n}"' for n in COLUMN_NAMES)
        sql = f"INSERT OR REPLACE INTO {TABLE} ({names}) VALUES ({placeholders})"
        values = [tuple(r.get(n) for n in COLUMN_NAMES) for r in rows]
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(sql, values)
                self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise
        except (sqlite3.Error, OSError) as exc:
            raise _error(self.path, "write", exc) from exc

    def rows(self, run_id: str | None = None) -> list[Row]:
        """Read rows back (all runs, or one), ordered by run and case id."""
        self._conn.row_factory = sqlite3.Row
        try:
            if run_id is None:
                cur = self._conn.execute(f"SELECT * FROM {TABLE} ORDER BY run_id, case_id")
            else:
                cur = self._conn.execute(f"SELECT * FROM {TABLE} WHERE run_id = ? ORDER BY case_id", (run_id,))
            return [dict(r) for r in cur.fetchall()]
        except sqlite3.Error as exc:
            raise _error(self.path, "read", exc) from exc
        finally:
            self._conn.row_factory = None

    def close(self) -> None:
        self._conn.close()
