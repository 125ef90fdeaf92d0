"""A text stream onto pytest's terminal that works while a case runs: each write suspends pytest's output capture,
as live logging does, so a progress bar is seen on the terminal instead of landing in the case's captured output.

Installed as the progress module's live stream in a plain session or on an xdist controller (workers have no
terminal). Before its first write on a line pytest has started (`test_cases.py ..`) it moves to a fresh line, and
a bar that closes ends its own line, so pytest's output and the bar never share a line.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest


class TerminalStream(io.TextIOBase):
    """Writes through pytest's terminal writer with capture suspended."""

    def __init__(self, config: pytest.Config, *, tty: bool) -> None:
        self._config = config
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._config.pluginmanager.get_plugin("terminalreporter") is None:
            return len(text)  # -p no:terminal: there is no terminal to draw on
        capman: Any = self._config.pluginmanager.get_plugin("capturemanager")
        writer = self._config.get_terminal_writer()
        if capman is None:
            self._write(writer, text)
        else:
            with capman.global_and_fixture_disabled():
                self._write(writer, text)
        return len(text)

    def _write(self, writer: Any, text: str) -> None:
        width = writer.width_of_current_line
        if width and width != self._left_at and not text.startswith("\n"):
            writer.line()  # pytest wrote since our last write: its `file.py ..` line stays whole, the bar starts anew
        writer.write(text, flush=True)
        self._left_at = writer.width_of_current_line  # a bar redrawn with "\r" continues its own line

    _left_at = -1

    def flush(self) -> None:
        pass


def install(config: pytest.Config, *, tty: bool) -> None:
    """Route progress bars of this session's long work (ground truth, training, encoding) to the terminal; `tty`:
    whether it is one, asked at configure time (while a module is collected, fd 1 is pytest's capture file)."""
    from vq_benchmark.fixtures.progress import set_live_stream  # here: the dormant plugin imports no tqdm

    set_live_stream(TerminalStream(config, tty=tty))


def uninstall() -> None:
    from vq_benchmark.fixtures.progress import set_live_stream

    set_live_stream(None)


def stdout_is_terminal() -> bool:
    """Whether pytest's output goes to a terminal (sys.__stdout__: capture never replaces the object, but while a
    module is collected or a case runs fd 1 is pytest's capture file, so ask at configure time)."""
    try:
        return sys.__stdout__ is not None and sys.__stdout__.isatty()
    except (AttributeError, ValueError):
        return False
