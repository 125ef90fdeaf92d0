"""What the end-to-end tests share to start `pytest vq_cases` in a subprocess: the command line with every output
under one folder, and the pytest plugins a sweep never uses switched off (at session end hypothesis's plugin
imports all of hypothesis: about 1 s per process and per xdist worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = REPO / "vq_cases"
QUIET_PLUGINS: tuple[str, ...] = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio")


def output_args(tmp: Path, *, db: Path | None = None, codebooks: str = "codebooks") -> list[str]:
    """Database, run folder, ground-truth cache and codec cache of a sweep, all under `tmp`."""
    return [
        f"--vq-db-path={db if db is not None else tmp / 'bench.db'}",
        f"--vq-run-dir={tmp / 'runs'}",
        f"--vq-cache-dir={tmp / 'cache'}",
        f"--vq-codebooks-dir={tmp / codebooks}",
    ]


def sweep_command(
    tmp: Path, *extra: str, dataset: str = "dummy-small", db: Path | None = None, codebooks: str = "codebooks"
) -> list[str]:
    """`python -m pytest vq_cases --vq-dataset=... -q` with the quiet plugins and outputs under `tmp`, then `extra`."""
    return [
        *(sys.executable, "-m", "pytest", str(CASES_DIR), f"--vq-dataset={dataset}", "-q", *QUIET_PLUGINS),
        *output_args(tmp, db=db, codebooks=codebooks),
        *extra,
    ]


def run_sweep(
    tmp: Path, *extra: str, db: Path | None = None, codebooks: str = "codebooks", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `sweep_command` in `tmp`; with `check`, a non-zero exit fails the calling test with the output's tail."""
    cmd = sweep_command(tmp, *extra, db=db, codebooks=codebooks)
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
