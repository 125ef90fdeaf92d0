"""Crashes and kills: a crashed xdist worker's case gets a row, workers of a killed controller stop, temp files
of killed runs are cleaned, and a case whose row cannot be recorded fails alone while every other row is kept."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweeps import QUIET_PLUGINS

from vq_benchmark.reports.atomic import temp_name

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")

CRASHER = """
import os, signal

def pytest_runtest_call(item):
    if "sq4" in item.nodeid and hasattr(item.config, "workerinput"):
        os.kill(os.getpid(), signal.SIGKILL)
"""

SLEEPER = """
import os, pathlib, time

def pytest_runtest_call(item):
    if hasattr(item.config, "workerinput"):
        pathlib.Path(os.environ["VQ_TEST_MARKS"], str(os.getpid())).touch()
        time.sleep(120)
"""

FAILING_STORE = """
from vq_benchmark.reports import sqlite_store

_write = sqlite_store.SqliteStore.write

def _flaky(self, rows):
    if any(r["case_id"].endswith("-sq4") for r in rows):
        raise sqlite_store.StoreError(f"results database {self.path}: write failed (simulated disk full)")
    return _write(self, rows)

sqlite_store.SqliteStore.write = _flaky
"""


def _out_args(tmp: Path) -> list[str]:
    return [
        f"--vq-db-path={tmp / 'out' / 'bench.db'}",
        f"--vq-run-dir={tmp / 'out' / 'runs'}",
        f"--vq-cache-dir={tmp / 'cache'}",
        f"--vq-codebooks-dir={tmp / 'codebooks'}",
        *QUIET_PLUGINS,
    ]


def _rows(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["case_id"]: dict(r) for r in conn.execute("SELECT * FROM results")}
    finally:
        conn.close()


def _env_with_plugin(tmp: Path, name: str, source: str) -> dict[str, str]:
    plugins = tmp / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / f"{name}.py").write_text(source)
    return {**os.environ, "PYTHONPATH": str(plugins)}


def _run_with_plugin(tmp: Path, name: str, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A sweep on dummy-small in a subprocess, with the test plugin `name` (its `source`) loaded by -p."""
    cmd = _pytest(*args, "-p", name, *_out_args(tmp))
    env = _env_with_plugin(tmp, name, source)
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def _pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", CASES_DIR, "--vq-dataset=dummy-small", *args]


def test_crashed_worker_case_gets_a_failed_row(tmp_path: Path) -> None:
    proc = _run_with_plugin(tmp_path, "crasher", CRASHER, "-n", "2", "-k", "sq")
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert "INTERNALERROR" not in out
    rows = _rows(tmp_path / "out" / "bench.db")
    assert set(rows) == {"dummy-small-sq4", "dummy-small-sq8", "dummy-small-sqfp16"}
    crashed = rows["dummy-small-sq4"]
    assert crashed["status"] == "failed" and "worker crashed" in crashed["error"] and "SIGKILL" in crashed["error"]
    assert rows["dummy-small-sq8"]["status"] == rows["dummy-small-sqfp16"]["status"] == "ok"
    assert "worker crashed" in proc.stdout.split("vq-benchmark results")[-1]  # in the summary table


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_promptly_when_the_controller_is_killed(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**_env_with_plugin(tmp_path, "sleeper", SLEEPER), "VQ_TEST_MARKS": str(marks)}
    controller = subprocess.Popen(
        _pytest("-n", "2", "-k", "sq", "-p", "sleeper", *_out_args(tmp_path)),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = {int(p.name) for p in marks.iterdir()}
        assert len(workers) == 2 and workers <= _children(controller.pid)
        controller.kill()
        controller.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "xdist workers outlived their killed controller"
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_stale_temp_files_of_killed_runs_are_cleaned(tmp_path: Path) -> None:
    dead = 2**31 - 5  # above any pid_max: never a live process
    stale = [
        temp_name(tmp_path / "out" / "runs" / "r1" / "results.json", dead),
        temp_name(tmp_path / "codebooks" / "fp" / "x.faissindex", dead),
        temp_name(tmp_path / "cache" / "gt" / "gt-ab-k100.npz", dead),
    ]
    live = temp_name(tmp_path / "cache" / "busy.npz")  # this (live) process
    for p in [*stale, live]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    proc = subprocess.run(
        _pytest("-k", "sq8", *_out_args(tmp_path)), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not any(p.exists() for p in stale)
    assert live.exists()


def test_a_row_that_cannot_be_recorded_fails_its_case_only(tmp_path: Path) -> None:
    proc = _run_with_plugin(tmp_path, "failing_store", FAILING_STORE, "-k", "sq")
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert "INTERNALERROR" not in out and "simulated disk full" in out
    rows = _rows(tmp_path / "out" / "bench.db")
    assert set(rows) == {"dummy-small-sq8", "dummy-small-sqfp16"}  # sq4's row could not be written there
    (run_dir,) = (tmp_path / "out" / "runs").iterdir()
    logged = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    final = {r["case_id"]: r for r in logged}  # ... but the append-only log kept all three,
    assert len(final) == 3 and final["dummy-small-sq4"]["status"] == "failed"  # and does not claim sq4 ok
    assert "simulated disk full" in final["dummy-small-sq4"]["error"]
