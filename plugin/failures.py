"""How a failed case is described in its row: the error line of a failed test, the end of a crashed worker."""

from __future__ import annotations

import signal
from typing import Any

import pytest


def error_text(excinfo: pytest.ExceptionInfo | None) -> str:
    """One line: an assertion's own message ("mse is not finite: inf"), else "Type: first line"."""
    if excinfo is None:
        return "failed"
    exc = excinfo.value
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if isinstance(exc, AssertionError | pytest.fail.Exception):
        return first or "assertion failed"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def exit_description(node: Any) -> str:
    """'killed by SIGKILL' / 'exit code 3' for an execnet popen worker; best effort, never raises."""
    try:
        code = node.gateway._io.popen.wait(timeout=5)
    except Exception:
        return "exit status unknown"
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
