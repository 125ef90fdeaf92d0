"""Data flows one way: settings -> dataset -> codec -> metrics -> row -> store. No module below plugin/ imports
it, reports/ imports nothing else of the project, and the pytest11 module imports nothing heavy at load time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ALLOWED = {
    "fixtures": {"fixtures", "reports"},  # reports.atomic: the one atomic writer
    "vq_cases": {"vq_cases", "fixtures", "reports"},
    "reports": {"reports"},
    "plugin": {"plugin", "vq_cases", "fixtures", "reports"},
}


def _project_imports(path: Path) -> set[str]:
    """The vq_benchmark sub-packages a module imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vq_benchmark" and len(parts) > 1:
                found.add(parts[1])
            assert parts[0] not in ALLOWED, f"{path}: imports the bare name {name!r}; use vq_benchmark.{name}"
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_layers(package: str) -> None:
    for module in sorted((REPO / package).glob("*.py")):
        extra = _project_imports(module) - ALLOWED[package]
        assert not extra, f"{module.relative_to(REPO)} imports {sorted(extra)}"


def test_pytest11_module_loads_without_heavy_imports() -> None:
    code = (
        "import sys, vq_benchmark.plugin.pytest_plugin as p; "
        "heavy = sorted(m for m in ('faiss', 'numpy', 'tabulate', 'sqlite3') if m in sys.modules); print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
