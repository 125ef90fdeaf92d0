"""JSON report: the same rows as the SQLite table, one file per run (and later per shard).

The file is rewritten atomically after every case, so at any moment it holds every finished case of the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vq_benchmark.reports.atomic import atomic_write_bytes
from vq_benchmark.reports.schema import Row, check_row

FORMAT_VERSION = 1


def write_json_report(path: Path, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    """Write `{"format_version", "meta", "rows"}` atomically; NULL metrics are simply absent from a row."""
    for row in rows:
        check_row(row)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    doc = {"format_version": FORMAT_VERSION, "meta": meta, "rows": list(rows)}
    atomic_write_bytes(Path(path), (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())


def read_json_report(path: Path) -> dict[str, Any]:
    """Read a report back; a truncated or foreign file raises ValueError naming the file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"JSON report {path}: unreadable ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ValueError(f"JSON report {path}: expected an object with a 'rows' list")
    return doc
