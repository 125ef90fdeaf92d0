"""Append-only row log (`results.jsonl`): one JSON object per line, one line per recorded case.

Appending costs the same for the 1st and the 10,000th case, where rewriting a whole JSON report per case grew
quadratically. Each line goes out in one write() and is fsynced, so a killed writer leaves at most a torn last
line, which readers skip and the next writer cuts off before appending. The full `results.json` is built from
this log once, at the end of a session or by `rebuild_json_report` after a session died.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from vq_benchmark.reports.atomic import describe_os_error
from vq_benchmark.reports.errors import ReportError, StoreError, one_line
from vq_benchmark.reports.schema import Row, check_row, stored_row

_TAIL_CHUNK = 64 * 1024


class JsonlLog:
    """Appends rows to one `.jsonl` file; every append is durable (fsync) before it returns."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tail_checked = False

    def append(self, row: Row) -> None:
        """Write `row` as one line. A bad row raises ValueError/TypeError; a failed write raises StoreError and
        leaves no partial line behind."""
        check_row(row)
        if not isinstance(row.get("case_id"), str):
            raise ValueError("JSONL row needs a text case_id")
        line = (json.dumps(row, allow_nan=False, sort_keys=True) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if not self._tail_checked:
                    _drop_torn_tail(fd)
                    self._tail_checked = True
                _append_line(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            self._tail_checked = False
            raise StoreError(describe_os_error(self.path, exc)) from exc


def _append_line(fd: int, line: bytes) -> None:
    """Write all of `line` and fsync; on failure cut the file back so no torn line sits before the next one."""
    start = os.fstat(fd).st_size
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):  # if this fails too, the next append's tail check cuts it
            os.ftruncate(fd, start)
        raise


def _drop_torn_tail(fd: int) -> None:
    """Cut an unterminated last line (a writer killed mid-append) so the next line starts on its own."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start)
        if end == size and chunk.endswith(b"\n"):
            return
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    if size:
        os.ftruncate(fd, 0)


def read_jsonl(path: str | os.PathLike[str]) -> list[Row]:
    """Every complete row of the log in file order. An unterminated last line is a killed writer's torn append
    and is skipped; any other bad line raises ReportError naming the file and line number."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReportError(f"JSONL log {path}: cannot read ({one_line(exc.strerror or exc)})") from exc
    lines = data.split(b"\n")
    lines.pop()  # b"" after a final newline, otherwise the torn fragment
    return [_parse_line(path, number, raw) for number, raw in enumerate(lines, 1) if raw.strip()]


def _parse_line(path: Path, number: int, raw: bytes) -> Row:
    where = f"JSONL log {path}, line {number}"
    try:
        row = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"{where}: corrupt JSON ({one_line(exc, 120)})") from exc
    try:
        return stored_row(where, row)
    except ValueError as exc:
        raise ReportError(str(exc)) from None


def latest_per_case(rows: Iterable[Row]) -> list[Row]:
    """One row per case_id, the last one recorded (a rerun supersedes), sorted by case_id."""
    latest: dict[str, Row] = {}
    for row in rows:
        latest[str(row["case_id"])] = row
    return [latest[case_id] for case_id in sorted(latest)]


WORKER_LOG_GLOB = "results-*.jsonl"  # one per xdist worker: its finished rows survive a killed controller


def run_logs(folder: Path) -> list[Path]:
    """The row logs of one run folder, lowest precedence first: the xdist workers' own, then the recorder's
    `results.jsonl` (whose row for a case wins: it may have marked a case failed that the worker saw pass)."""
    folder = Path(folder)
    logs = sorted(p for p in folder.glob(WORKER_LOG_GLOB) if p.is_file())
    main = folder / "results.jsonl"
    return [*logs, main] if main.is_file() else logs


def read_run_logs(folder: Path) -> list[Row]:
    """Every logged row of a run folder, in precedence order (feed it to latest_per_case)."""
    return [row for log in run_logs(folder) for row in read_jsonl(log)]
