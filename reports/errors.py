"""The two ways a results file can let the harness down, each a one-line message that names the file.

They live apart from the modules that raise them so callers can catch both without importing SQLite code; the one
reader of this project's versioned JSON documents (reports, manifests) lives here too, so both word problems alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ReportError(ValueError):
    """A results file that exists but cannot be trusted: corrupt, foreign, or written by a newer harness."""


class StoreError(RuntimeError):
    """A results file that cannot be opened or written (read-only, disk full, not SQLite, foreign table)."""


def one_line(text: object, limit: int = 500) -> str:
    """First non-empty line of `text`, stripped and cut to `limit` characters: messages stay one terminal line."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def read_versioned_json(path: Path, where: str, what: str, newest: int) -> dict[str, Any]:
    """A JSON object this project wrote, with a `format_version` this code can read; ReportError naming `where`
    for an unreadable, corrupt or foreign file, or one written by a newer version."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ReportError(f"{where}: cannot read ({one_line(exc.strerror or exc)})") from exc
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"{where}: corrupt JSON ({one_line(exc, 120)})") from exc
    if not isinstance(doc, dict) or "format_version" not in doc:
        raise ReportError(f"{where}: not a vq-benchmark {what} (expected a JSON object with format_version)")
    version = doc["format_version"]
    if type(version) is not int or version < 1:
        raise ReportError(f"{where}: format_version must be a positive integer, got {one_line(repr(version), 40)}")
    if version > newest:
        raise ReportError(f"{where}: written by a newer vq-benchmark (format {version} > {newest})")
    return doc
