"""JSON report (`results.json`): the rows of one run in one document, written once when the session ends.

During a session rows go to the append-only `results.jsonl` (reports.jsonl); rewriting this document after every
case made recording quadratic. If a session dies before writing it, `rebuild_json_report` recreates it from the
log. Readers get a ReportError naming the file for anything they cannot trust, including a document written by a
newer harness whose format they do not know.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vq_benchmark.reports.atomic import atomic_write_bytes, describe_os_error
from vq_benchmark.reports.errors import ReportError, StoreError, read_versioned_json
from vq_benchmark.reports.jsonl import latest_per_case, read_run_logs, run_logs
from vq_benchmark.reports.schema import Row, check_row, stored_row

FORMAT_VERSION = 1
REPORT_NAME = "results.json"
LOG_NAME = "results.jsonl"


def write_json_report(path: Path, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    """Write `{"format_version", "meta", "rows"}` atomically; NULL metrics are simply absent from a row.

    A bad row or meta raises ValueError/TypeError; a failed write raises StoreError; either way an earlier file
    at `path` is left as it was.
    """
    for row in rows:
        check_row(row)
    doc = {"format_version": FORMAT_VERSION, "meta": meta, "rows": list(rows)}
    data = (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(path), data)
    except OSError as exc:
        raise StoreError(describe_os_error(path, exc)) from exc


def rebuild_json_report(run_path: Path, meta: dict[str, Any] | None = None) -> Path:
    """Recreate `<run_path>/results.json` from `<run_path>/results.jsonl` (last row per case wins, sorted by
    case_id) and return its path; for a session that died before writing its report."""
    run_path = Path(run_path)
    if not run_logs(run_path):
        raise ReportError(f"{run_path}: no {LOG_NAME} to rebuild {REPORT_NAME} from")
    rows = latest_per_case(read_run_logs(run_path))
    if meta is None:
        run_ids = sorted({str(r.get("run_id")) for r in rows if r.get("run_id") is not None})
        meta = {"run_id": run_ids[0] if len(run_ids) == 1 else None, "rebuilt_from": LOG_NAME}
    target = run_path / REPORT_NAME
    write_json_report(target, rows, meta)
    return target


def read_json_report(path: Path) -> dict[str, Any]:
    """Read a report back; raises ReportError (a ValueError) naming the file when it cannot be trusted."""
    where = f"JSON report {path}"
    doc = read_versioned_json(path, where, "report", FORMAT_VERSION)
    if not isinstance(doc.get("rows"), list):
        raise ReportError(f"{where}: not a vq-benchmark report (expected format_version, meta and a rows list)")
    if not isinstance(doc.get("meta", {}), dict):
        raise ReportError(f"{where}: meta must be an object")
    try:
        for index, row in enumerate(doc["rows"]):
            stored_row(f"{where}: rows[{index}]", row)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    return doc
