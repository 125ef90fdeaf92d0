"""SQLite store for result rows: one `results` table, one row per (run_id, case_id).

Each row is committed in its own transaction as soon as its case ends, so an interrupted sweep keeps every case
that finished. Columns added to the schema later are added to old files with ALTER TABLE, so a database keeps
growing across harness versions instead of being replaced.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from vq_benchmark.reports.schema import ALL_COLUMNS, COLUMN_NAMES, PRIMARY_KEY, Row, check_row

TABLE = "results"


class StoreError(RuntimeError):
    """A database file that cannot be opened or written; the message names the file."""


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0)
        conn.execute("PRAGMA journal_mode=DELETE")
        return conn
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"results database {path}: cannot open ({exc})") from exc


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the table, or add any columns this version knows and the file lacks."""
    cols = ", ".join(f'"{c.name}" {c.sql_type}' for c in ALL_COLUMNS)
    pk = ", ".join(PRIMARY_KEY)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols}, PRIMARY KEY ({pk}))")
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")}
    for c in ALL_COLUMNS:
        if c.name not in have:
            conn.execute(f'ALTER TABLE {TABLE} ADD COLUMN "{c.name}" {c.sql_type}')
    conn.commit()


class SqliteStore:
    """Append-or-replace rows into one database file; safe to reopen by later sessions."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path)
        try:
            ensure_schema(self._conn)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"results database {self.path}: not a usable SQLite file ({exc})") from exc

    def write(self, rows: Iterable[Row]) -> None:
        """Insert rows atomically (one transaction); a re-run of the same case in the same run replaces it."""
        rows = list(rows)
        for row in rows:
            check_row(row)
        placeholders = ", ".join("?" for _ in COLUMN_NAMES)
        names = ", ".join(f'"{n}"' for n in COLUMN_NAMES)
        sql = f"INSERT OR REPLACE INTO {TABLE} ({names}) VALUES ({placeholders})"
        try:
            with self._conn:
                self._conn.executemany(sql, [tuple(r.get(n) for n in COLUMN_NAMES) for r in rows])
        except sqlite3.Error as exc:
            raise StoreError(f"results database {self.path}: write failed ({exc})") from exc

    def rows(self, run_id: str | None = None) -> list[Row]:
        """Read rows back (all runs, or one), ordered by case id."""
        self._conn.row_factory = sqlite3.Row
        try:
            if run_id is None:
                cur = self._conn.execute(f"SELECT * FROM {TABLE} ORDER BY run_id, case_id")
            else:
                cur = self._conn.execute(f"SELECT * FROM {TABLE} WHERE run_id = ? ORDER BY case_id", (run_id,))
            return [dict(r) for r in cur.fetchall()]
        finally:
            self._conn.row_factory = None

    def close(self) -> None:
        self._conn.close()
