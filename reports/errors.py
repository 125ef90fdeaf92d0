"""The two ways a results file can let the harness down, each a one-line message that names the file.

They live apart from the modules that raise them so callers can catch both without importing SQLite or JSON code.
"""

from __future__ import annotations


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
