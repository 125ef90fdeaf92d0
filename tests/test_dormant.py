"""The pytest11 plugin is installed into every pytest session of the environment: in a project that collects no
vq-benchmark case it must do nothing visible - no output, no faiss import, no validation of VQ_* variables,
no files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

UNRELATED_TEST = """
import sys

def test_unrelated():
    assert 1 + 1 == 2

def test_plugin_imported_nothing_heavy():
    assert "faiss" not in sys.modules
    assert "vq_benchmark.plugin.bench_session" not in sys.modules
"""


def _unrelated_project(tmp_path: Path) -> Path:
    project = tmp_path / "other"
    project.mkdir()
    (project / "test_other.py").write_text(UNRELATED_TEST)
    return project


@pytest.mark.parametrize("n_workers", [None, "2"])
def test_unrelated_suite_sees_nothing_even_with_bad_vq_variables(tmp_path: Path, n_workers: str | None) -> None:
    project = _unrelated_project(tmp_path)
    env = {**os.environ, "VQ_SEED": "-1", "VQ_THREADS": "many", "DB_PATH": "/proc/nope/x.db", "VQ_RUN_ID": "../x"}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"]
    if n_workers:
        cmd += ["-n", n_workers]
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 passed" in out
    out = "\n".join(line for line in out.splitlines() if not line.startswith("plugins:"))  # pytest's own list
    assert "vq-benchmark" not in out and "vq_benchmark" not in out and "VQ_" not in out
    # .benchmarks is pytest-benchmark's own storage folder, made by that plugin in any session, not by ours
    assert {p.name for p in project.iterdir()} - {"__pycache__", ".benchmarks"} == {"test_other.py"}


def test_plugin_options_are_still_declared(tmp_path: Path) -> None:
    """Dormant is not absent: `pytest --help` anywhere documents the options (cheap to declare)."""
    project = _unrelated_project(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--vq-dataset" in proc.stdout and "--vq-db-path" in proc.stdout
