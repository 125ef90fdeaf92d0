"""`vq-benchmark report`: Pareto marking (hypothesis), the table on a real run's database, formats, run selection,
-k and the one-line errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sweeps import run_sweep

from vq_benchmark.plugin.cli import main
from vq_benchmark.reports.pareto import dominates, pareto_front
from vq_benchmark.reports.report_table import build_report, read_rows, render, select_rows

REPO = Path(__file__).resolve().parent.parent
OLD_RUN = "19990101T000000Z-000000"

_coord = st.one_of(st.none(), st.integers(0, 4).map(float))


@given(st.lists(st.tuples(_coord, _coord), max_size=12), st.tuples(st.booleans(), st.booleans()))
def test_pareto_front_property(points: list, maximize: tuple[bool, bool]) -> None:
    front = pareto_front(points, maximize)
    valid = [i for i, (x, y) in enumerate(points) if x is not None and y is not None]
    assert front <= set(valid)
    for i in valid:
        dominated = any(dominates(points[j], points[i], maximize) for j in valid if j != i)
        assert (i in front) == (not dominated)


def test_pareto_ties_and_directions() -> None:
    assert pareto_front([(1.0, 2.0), (1.0, 2.0), (0.5, 2.0)], (True, False)) == {0, 1}
    assert pareto_front([(0.9, 8.0), (0.8, 4.0), (0.7, 8.0), (None, 1.0)], (True, False)) == {0, 1}
    assert pareto_front([(0.9, 8.0), (0.8, 4.0)], (True, True)) == {0}


@pytest.fixture(scope="module")
def run_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    run_sweep(tmp, "-k", "sq8 or sq4 or sqfp16")
    return tmp / "bench.db"


@pytest.fixture(scope="module")
def two_run_db(run_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real run plus an older copy of its rows under another run id (one of them failed)."""
    db = tmp_path_factory.mktemp("two") / "two.db"
    shutil.copy(run_db, db)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    with conn:
        for row in [dict(r) for r in conn.execute("SELECT * FROM results")]:
            row.update(run_id=OLD_RUN, created_at="1999-01-01T00:00:00+00:00")
            if row["method"] == "sq4":
                row.update(status="failed", error="boom", recall_at_10=None)
            names = ", ".join(f'"{k}"' for k in row)
            conn.execute(f"INSERT INTO results ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    conn.close()
    return db


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["report", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_table_marks_fronts(run_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = build_report(select_rows(read_rows(run_db)))
    by_method = {row["method"]: mark for row, mark in zip(report.rows, report.pareto, strict=True)}
    assert set(by_method) == {"sq4", "sq8", "sqfp16"}
    assert "B" in by_method["sqfp16"] and "B" in by_method["sq4"]  # highest recall; smallest code
    assert [row["code_bytes"] for row in report.rows] == sorted(row["code_bytes"] for row in report.rows)
    rc, out, err = _cli(capsys, str(run_db))
    assert rc == 0 and not err
    assert "bytes/vector (B) ↓" in out and "QPS (1/s) ↑" in out and "train (s) ↓" in out and "pareto" in out
    assert len([line for line in out.splitlines() if "dummy-small" in line]) == 3
    rc, out, _ = _cli(capsys, str(run_db), "--format", "github", "--dataset", "dummy-small")
    assert rc == 0 and out.startswith("| dataset")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_machine_formats_parse_back(two_run_db: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _cli(capsys, str(two_run_db), "--run", "all", "--format", fmt)
    assert rc == 0
    parsed = list(csv.DictReader(io.StringIO(out))) if fmt == "csv" else json.loads(out)
    assert len(parsed) == len(read_rows(two_run_db)) == 6
    assert all("pareto" in r for r in parsed)
    failed = [r for r in parsed if r["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["pareto"] == "" and failed[0]["error"] == "boom"
    assert {r["pareto"] for r in parsed} & {"B", "BQ"}


def test_run_selection(two_run_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = read_rows(two_run_db)
    latest = select_rows(rows)
    assert len(latest) == 3 and OLD_RUN not in {r["run_id"] for r in latest}
    assert {r["run_id"] for r in select_rows(rows, run=OLD_RUN)} == {OLD_RUN}
    rc, out, _ = _cli(capsys, str(two_run_db), "--run", "all")
    assert rc == 0 and OLD_RUN in out and "failed: boom" in out
    lines = out.splitlines()
    assert max(i for i, line in enumerate(lines) if OLD_RUN in line) < min(
        i for i, line in enumerate(lines) if line.startswith("2") and OLD_RUN not in line
    )  # older run first
    assert out.index("failed: boom") > out.index("sqfp16")  # non-ok rows after the group's ok rows


def test_keyword_selects(run_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picked = select_rows(read_rows(run_db), keyword="SQ8 or (fp16 and not sq4)")
    assert {r["method"] for r in picked} == {"sq8", "sqfp16"}
    rc, out, _ = _cli(capsys, str(run_db), "-k", "not sq8", "--format", "json")
    assert rc == 0 and {r["method"] for r in json.loads(out)} == {"sq4", "sqfp16"}
    assert render(build_report(picked), "simple").count("dummy-small") == 2


def test_default_db_from_setting(
    run_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VQ_DB_PATH", str(run_db))
    rc, out, _ = _cli(capsys)
    assert rc == 0 and "sqfp16" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["{tmp}/missing.db"], "no such file"),
        (["{tmp}/junk.db"], "not a SQLite database"),
        (["{tmp}/empty.db"], "no 'results' table"),
        (["{db}", "-k", "sq8 or"], "-k 'sq8 or'"),
        (["{db}", "--run", "nope"], "no run 'nope'"),
        (["{db}", "-k", "pq"], "no rows match"),
        (["{db}", "--dataset", "other"], "no rows match"),
    ],
)
def test_errors_are_one_line(
    run_db: Path, tmp_path: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all, just some bytes " * 10)
    sqlite3.connect(tmp_path / "empty.db").execute("CREATE TABLE other (x)").connection.close()
    rc, out, err = _cli(capsys, *(a.format(tmp=tmp_path, db=run_db) for a in argv))
    assert rc == 2 and not out
    assert len(err.strip().splitlines()) == 1 and err.startswith("vq-benchmark: error: ") and needle in err
