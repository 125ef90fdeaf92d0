"""Where a number came from: code version, library versions and machine, computed once per process."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path

import faiss
import numpy as np

from vq_benchmark.reports.schema import Row

HARNESS_DIR = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(HARNESS_DIR), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, falling back to what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _harness_commit() -> str | None:
    """HEAD of the harness's own checkout; None for an installed wheel (even one inside another repository)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != HARNESS_DIR:
        return None
    return _git("rev-parse", "HEAD")


@functools.cache
def provenance() -> Row:
    """Provenance columns of every row written by this process (git fields are None outside a checkout)."""
    commit = _harness_commit()
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "git_commit": commit,
        "git_dirty": None if status is None else int(bool(status)),
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "faiss_version": faiss.__version__,
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
    }
