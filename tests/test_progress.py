"""Progress of long work: a bar with rate on a terminal, one line (only for long work) otherwise, and inside a real
pytest session on a real terminal (a pty) a bar on its own line that never lands in a case's captured output."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest
from sweeps import run_sweep, sweep_command

from vq_benchmark.fixtures import progress as progress_mod
from vq_benchmark.fixtures.progress import progress, set_live_stream, ticking

REPO = Path(__file__).resolve().parent.parent


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_shows_rate_and_counts() -> None:
    out = FakeTerminal()
    with progress("encoding x", 1000, "vec", stream=out) as bar:
        for _ in range(4):
            bar.update(250)
    text = out.getvalue()
    assert "encoding x" in text and "1.00k/1.00k" in text and "vec/s" in text and "\r" in text
    assert text.endswith("\n")  # the bar ends its own line


def test_no_terminal_gives_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    with progress("ground truth", 300, "vec", stream=out) as bar:
        bar.advance_to(100, 300)
        bar.advance_to(300, 450)  # a pass redone for tied queries: the total grows
        bar.advance_to(450, 450)
    assert re.fullmatch(r"ground truth: 450/450 vec in \d+\.\d s \([\d,]+ vec/s\)\n", out.getvalue())


def test_only_if_long_is_silent_for_short_work_and_reports_long_work(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    with progress("encoding short", 10, stream=out, only_if_long=True) as bar:
        bar.update(10)
    assert out.getvalue() == ""
    monkeypatch.setattr(progress_mod, "LONG_SUMMARY_S", 0.05)
    with progress("encoding long", 10, stream=out, only_if_long=True) as bar:
        time.sleep(0.06)
        bar.update(10)
    assert out.getvalue().startswith("encoding long: 10/10 vec in ")


def test_only_if_long_bar_waits_for_its_delay() -> None:
    out = FakeTerminal()
    with progress("encoding quick", 10, stream=out, only_if_long=True) as bar:
        bar.update(10)
    assert out.getvalue() == ""  # done before LONG_DELAY_S: nothing drawn, nothing to clear


def test_ticking_redraws_elapsed_time_and_stops_its_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "TICK_S", 0.02)
    monkeypatch.setattr(progress_mod, "LONG_DELAY_S", 0.0)
    out = FakeTerminal()
    set_live_stream(out)
    try:
        with ticking("training x on 10 vectors"):
            time.sleep(0.5)  # the bar at start and at close, and at least one tick between (mininterval 0.1 s)
    finally:
        set_live_stream(None)
    text = out.getvalue()
    assert text.count("training x on 10 vectors: 00:00 elapsed") >= 3 and text.endswith("\n")
    assert not [t for t in threading.enumerate() if t.name == "vq-benchmark-progress"]


def test_disabled_is_silent() -> None:
    out = FakeTerminal()
    with progress("x", 5, stream=out, enabled=False) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def _run_in_pty(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Run a command with a pseudo-terminal (100 columns) as its stdout and stderr; its output as text."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_bars_reach_a_real_terminal_on_their_own_lines(tmp_path: Path) -> None:
    """pytest vq_cases on a pty, with the delays set to zero by a plugin: training and encoding draw bars on the
    terminal around pytest's capture, each on its own line, and pytest's own lines stay whole."""
    (tmp_path / "progress_now.py").write_text(
        "from vq_benchmark.fixtures import progress\nprogress.LONG_DELAY_S = 0.0\nprogress.TICK_S = 0.01\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "TERM": "xterm"}
    env.pop("CI", None)  # pytest's CI mode changes nothing here, but keep the run like a user's
    keyword = "dummy-small-sq8 or dummy-small-pq-M8"
    # -v twice after sweep_command's -q: one line per case, as a user's `pytest -v` prints
    args = sweep_command(tmp_path, "-v", "-v", "-k", keyword, "-p", "progress_now", "-p", "no:benchmark")
    out = _run_in_pty(args, tmp_path, env)
    assert "2 passed" in out, out[-3000:]
    lines = out.replace("\r\n", "\n").split("\n")
    bars = [line for line in lines if "encoding dummy-small-" in line]
    assert len(bars) == 2, out[-3000:]
    for bar in bars:
        assert bar.startswith("\r") and "2.00k/2.00k" in bar and "vec/s" in bar
        assert "test_cases.py" not in bar and "PASSED" not in bar
    assert any("training dummy-small-pq-M8-nbits8 on 2,000 vectors" in line for line in lines)
    cases = [line for line in lines if "test_cases.py::test_case[" in line]
    assert len(cases) == 2 and all("encoding" not in line and "training" not in line for line in cases)
    assert sum("PASSED" in line for line in lines) == 2


def test_without_a_terminal_short_work_prints_nothing(tmp_path: Path) -> None:
    """The same run into a pipe (a CI log): no bar, and no summary line for work under LONG_SUMMARY_S."""
    proc = run_sweep(tmp_path, "-k", "sq8", "-p", "no:benchmark")
    assert "encoding" not in proc.stdout + proc.stderr and "\r" not in proc.stdout
