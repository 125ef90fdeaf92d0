"""The built wheel, installed in a fresh virtualenv beside testing-cabal's `fixtures` package: one import name,
the shipped cases run from an empty directory, and uninstalling vq-benchmark leaves the other library intact."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "plugin", "fixtures", "vq_cases", "reports", "slurm")


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _tree_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*.py")):
        h.update(p.relative_to(directory).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build from a copy of the sources, so the checkout gets no build/ or egg-info folders."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)], src)
    (whl,) = out.glob("vq_benchmark-*.whl")
    return whl


def test_wheel_installs_beside_testing_cabal_fixtures_and_uninstalls_cleanly(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # A fresh venv without its own pip (ensurepip took 5 s): this interpreter's pip installs into it (--python);
    # --no-compile: byte-compiling numpy, faiss and pytest took 3 s, and the runs below compile what they import.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    _run([*pip, "install", "-q", "--no-compile", "fixtures"], tmp_path)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(py), "-c", purelib], tmp_path).stdout.strip())
    before = _tree_digest(site / "fixtures")
    _run([*pip, "install", "-q", "--no-compile", str(wheel)], tmp_path)

    # one import name: no generic top-level package of ours, the other library's files untouched
    for generic in ("plugin", "reports", "vq_cases"):
        assert not (site / generic).exists(), f"{generic}/ installed at top level"
    assert _tree_digest(site / "fixtures") == before
    assert sorted(p.name for p in (site / "vq_benchmark").iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "fixtures",
        "plugin",
        "reports",
        "slurm",
        "vq_cases",
    ]
    assert (site / "vq_benchmark" / "slurm" / "benchmark_array.sbatch").is_file()  # submit renders these

    empty = tmp_path / "empty"
    empty.mkdir()
    pytest_cmd = [str(venv / "bin" / "pytest"), "--pyargs", "vq_benchmark.vq_cases", "--vq-dataset", "dummy-small"]
    proc = _run([*pytest_cmd, "-k", "sq8 or dummy-small-pq-M8", "-p", "no:cacheprovider"], empty)
    assert "2 passed" in proc.stdout and "vq-benchmark results" in proc.stdout
    conn = sqlite3.connect(empty / "results" / "benchmark_runs.db")
    try:
        rows = conn.execute("SELECT case_id, status FROM results ORDER BY case_id").fetchall()
    finally:
        conn.close()
    assert rows == [("dummy-small-pq-M8-nbits8", "ok"), ("dummy-small-sq8", "ok")]

    _run([*pip, "uninstall", "-y", "-q", "vq-benchmark"], tmp_path)
    assert not list((site / "vq_benchmark").rglob("*.py"))  # only runtime __pycache__ may remain
    check = _run([str(py), "-c", "import fixtures; print(fixtures.Fixture.__name__)"], empty)
    assert check.stdout.strip() == "Fixture"
    assert _tree_digest(site / "fixtures") == before
