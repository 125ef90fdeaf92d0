"""Where one process's rows go: the SQLite database, the run's append-only JSONL log, and `results.json`.

Each finished case is committed to SQLite and appended (fsync'd) to `results.jsonl` at once, so a killed session
keeps every finished case and recording cost stays flat per row. `results.json` is written once, at session end,
from the log (earlier sessions under the same run id included). A failure to record one row is returned as text
for the caller to mark that case failed; it never ends the session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vq_benchmark.reports.atomic import describe_os_error
from vq_benchmark.reports.json_report import read_json_report, write_json_report
from vq_benchmark.reports.jsonl import JsonlLog, read_jsonl
from vq_benchmark.reports.schema import Row
from vq_benchmark.reports.sqlite_store import SqliteStore, StoreError

JSONL_NAME = "results.jsonl"
JSON_NAME = "results.json"


class RunFiles:
    """The files one recording process owns for one run."""

    def __init__(self, db_path: Path, run_path: Path) -> None:
        self.db_path, self.run_path = Path(db_path), Path(run_path)
        self.rows: dict[str, Row] = {}  # this session's rows by case id
        self.unrecorded: set[str] = set()  # case ids whose row reached neither file
        self._earlier: dict[str, Row] = {}
        self._store: SqliteStore | None = None
        self._log = JsonlLog(self.jsonl_path)

    @property
    def jsonl_path(self) -> Path:
        return self.run_path / JSONL_NAME

    @property
    def json_path(self) -> Path:
        return self.run_path / JSON_NAME

    def open(self) -> None:
        """Open the database and read what a reused run id already holds; StoreError/ReportError when unusable,
        so the problem is a usage error before the first case rather than a lost row after it."""
        self._store = SqliteStore(self.db_path)
        if self.json_path.exists():
            read_json_report(self.json_path)  # corrupt, foreign or newer: refuse rather than overwrite it
        if self.jsonl_path.exists():
            self._earlier = {str(r["case_id"]): r for r in read_jsonl(self.jsonl_path)}

    def write(self, row: Row) -> str | None:
        """Persist one row in both places; the text of what failed, or None. When one place failed, the row is
        marked failed with that text wherever it could be written, so no file claims `ok` for a failed case."""
        problems = self._write_both(row)
        case_id = str(row["case_id"])
        self.unrecorded.discard(case_id)
        if problems:
            row = {**row, "status": "failed", "error": "; ".join(problems)[:500]}
            if len(self._write_both(row)) == 2:
                self.unrecorded.add(case_id)
        self.rows[case_id] = row
        return "; ".join(problems) or None

    def _write_both(self, row: Row) -> list[str]:
        problems = []
        try:
            if self._store is None:
                self._store = SqliteStore(self.db_path)
            self._store.write([row])
        except StoreError as exc:
            problems.append(str(exc))
        try:
            self._log.append(row)
        except (StoreError, ValueError, TypeError) as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(describe_os_error(self.jsonl_path, exc))
        return problems

    def finish(self, meta: dict[str, Any]) -> str | None:
        """Write results.json once: every row of the run (earlier sessions' too), this session's winning."""
        if not self.rows and not self._earlier:
            return None
        rows = {**self._earlier, **self.rows}
        try:
            write_json_report(self.json_path, [rows[k] for k in sorted(rows)], meta)
        except (StoreError, ValueError, TypeError) as exc:
            return str(exc)
        except OSError as exc:
            return describe_os_error(self.json_path, exc)
        return None

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
