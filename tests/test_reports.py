"""Tests for reports/: the row schema, the SQLite store, the atomic JSON report and the terminal summary."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.reports import atomic as atomic_module
from vq_benchmark.reports.atomic import atomic_open, atomic_write_bytes
from vq_benchmark.reports.json_report import FORMAT_VERSION, read_json_report, write_json_report
from vq_benchmark.reports.schema import ALL_COLUMNS, COLUMN_NAMES, METRIC_NAMES, PRIMARY_KEY, check_row, metric
from vq_benchmark.reports.sqlite_store import TABLE, SqliteStore, StoreError
from vq_benchmark.reports.summary import SUMMARY_METRICS, summary_table

pytestmark = pytest.mark.smoke

_HYP = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SQL_TYPES = {c.name: c.sql_type for c in ALL_COLUMNS}


def full_row(run_id: str = "run-1", case_id: str = "dummy-pq-M8-nbits8", **overrides) -> dict:
    """A row with a plain value of the declared type in every column."""
    row: dict = {}
    for i, c in enumerate(ALL_COLUMNS):
        row[c.name] = {"INTEGER": i + 1, "REAL": i + 0.25, "TEXT": f"{c.name}-value"}[c.sql_type]
    row.update(run_id=run_id, case_id=case_id, status="ok", error=None, params_json='{"M":8,"nbits":8}')
    row.update(overrides)
    return row


def table_info(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA table_info({TABLE})").fetchall()


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "db" / "runs.db")
    yield s
    s.close()


# ---------------------------------------------------------------- schema


def test_schema_column_names_unique_and_primary_key_present():
    assert len(COLUMN_NAMES) == len(set(COLUMN_NAMES))
    assert set(PRIMARY_KEY) <= set(COLUMN_NAMES)
    assert set(METRIC_NAMES) <= set(COLUMN_NAMES)
    assert set(SUMMARY_METRICS) <= set(METRIC_NAMES)
    assert metric("mse").name == "mse"
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        metric("nope")


@pytest.mark.parametrize(
    "value",
    [
        np.float64(1.0),
        np.float32(1.0),
        np.int64(3),
        np.int32(3),
        np.str_("x"),
        np.array(1.0),
        [1],
        (1,),
        b"x",
    ],
    ids=lambda v: type(v).__name__,
)
def test_check_row_rejects_non_plain_values(value):
    with pytest.raises(TypeError, match="'mse'"):
        check_row({"run_id": "r", "case_id": "c", "mse": value})


def test_check_row_rejects_unknown_columns():
    with pytest.raises(ValueError, match="unknown columns: bogus, zzz"):
        check_row({"run_id": "r", "zzz": 1, "bogus": None})


def test_check_row_accepts_plain_values():
    check_row(full_row())
    check_row({"run_id": "r", "case_id": "c", "mse": None, "code_bytes": 8, "notes": ""})
    check_row({})


# ---------------------------------------------------------------- SQLite store


def test_creates_results_table_with_every_column(store: SqliteStore):
    assert store.path.is_file()
    info = table_info(store.path)
    assert [r[1] for r in info] == list(COLUMN_NAMES)
    assert {r[1]: r[2] for r in info} == SQL_TYPES
    pk = sorted((r[5], r[1]) for r in info if r[5])
    assert tuple(name for _, name in pk) == PRIMARY_KEY


def test_write_read_round_trip(store: SqliteStore):
    row = full_row()
    store.write([row])
    assert store.rows() == [row]
    assert store.rows("run-1") == [row]
    assert store.rows("other-run") == []


def test_partial_rows_fill_missing_columns_with_null(store: SqliteStore):
    store.write([{"run_id": "r", "case_id": "c", "status": "failed", "error": "boom"}])
    (got,) = store.rows()
    assert list(got) == list(COLUMN_NAMES)
    assert got["status"] == "failed" and got["error"] == "boom"
    assert all(got[n] is None for n in COLUMN_NAMES if n not in ("run_id", "case_id", "status", "error"))


def test_rows_are_ordered_and_filtered(store: SqliteStore):
    store.write([full_row("r2", "b"), full_row("r1", "c"), full_row("r1", "a"), full_row("r2", "a")])
    assert [(r["run_id"], r["case_id"]) for r in store.rows()] == [
        ("r1", "a"),
        ("r1", "c"),
        ("r2", "a"),
        ("r2", "b"),
    ]
    assert [r["case_id"] for r in store.rows("r2")] == ["a", "b"]


def test_insert_or_replace_on_same_key(store: SqliteStore):
    store.write([full_row("r1", "c1", mse=1.0, status="failed")])
    store.write([full_row("r1", "c1", mse=2.0)])
    store.write([full_row("r2", "c1", mse=3.0)])
    rows = store.rows()
    assert [(r["run_id"], r["case_id"], r["mse"], r["status"]) for r in rows] == [
        ("r1", "c1", 2.0, "ok"),
        ("r2", "c1", 3.0, "ok"),
    ]


def test_rows_survive_close_and_reopen(tmp_path: Path):
    path = tmp_path / "runs.db"
    first = SqliteStore(path)
    first.write([full_row("r", "a"), full_row("r", "b")])
    first.close()
    again = SqliteStore(path)
    try:
        assert [r["case_id"] for r in again.rows()] == ["a", "b"]
        again.write([full_row("r2", "a")])
        assert len(again.rows()) == 3
    finally:
        again.close()
    # and another, independent sqlite3 reader sees them too
    with sqlite3.connect(path) as conn:
        assert conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone() == (3,)


def test_old_database_gains_missing_columns(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TABLE {TABLE} (run_id TEXT, case_id TEXT, status TEXT, mse REAL, PRIMARY KEY (run_id, case_id))"
        )
        conn.execute(f"INSERT INTO {TABLE} VALUES ('old-run', 'old-case', 'ok', 0.5)")
    conn.close()

    store = SqliteStore(path)
    try:
        info = table_info(path)
        assert {r[1] for r in info} == set(COLUMN_NAMES)
        assert {r[1]: r[2] for r in info} == SQL_TYPES
        (old,) = store.rows()
        assert (old["run_id"], old["case_id"], old["status"], old["mse"]) == (
            "old-run",
            "old-case",
            "ok",
            0.5,
        )
        assert old["recall_at_10"] is None and old["hostname"] is None
        store.write([full_row("new-run", "x")])
        store.write([full_row("old-run", "old-case", mse=0.25)])
        rows = {(r["run_id"], r["case_id"]): r for r in store.rows()}
        assert set(rows) == {("old-run", "old-case"), ("new-run", "x")}
        assert rows["old-run", "old-case"]["mse"] == 0.25
        assert rows["new-run", "x"] == full_row("new-run", "x")
    finally:
        store.close()


def test_parent_directories_are_created(tmp_path: Path):
    path = tmp_path / "a" / "b" / "c" / "runs.db"
    SqliteStore(path).close()
    assert path.is_file()


def test_directory_path_raises_store_error(tmp_path: Path):
    target = tmp_path / "is-a-dir"
    target.mkdir()
    with pytest.raises(StoreError) as info:
        SqliteStore(target)
    assert str(target) in str(info.value)


def test_non_sqlite_file_raises_store_error_and_is_left_alone(tmp_path: Path):
    target = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 20
    target.write_bytes(content)
    with pytest.raises(StoreError) as info:
        SqliteStore(target)
    assert str(target) in str(info.value)
    assert target.read_bytes() == content


def test_parent_is_a_file_raises_store_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"file/runs\.db"):
        SqliteStore(blocker / "runs.db")


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        ({"mse": np.float64(0.5)}, TypeError),
        ({"code_bytes": np.int64(8)}, TypeError),
        ({"colour": "red"}, ValueError),
    ],
    ids=["np.float64", "np.int64", "unknown-column"],
)
def test_store_rejects_bad_rows_and_writes_nothing(store: SqliteStore, bad: dict, exc: type[Exception]):
    good = full_row("r", "good")
    with pytest.raises(exc):
        store.write([good, {"run_id": "r", "case_id": "bad", **bad}])
    assert store.rows() == []


_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_real = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_BY_TYPE = {"INTEGER": _int64, "REAL": _real, "TEXT": _text}


@st.composite
def rows(draw):
    row = {}
    for c in ALL_COLUMNS:
        if c.name in PRIMARY_KEY:
            row[c.name] = draw(_text)
        elif draw(st.booleans()):
            row[c.name] = draw(st.none() | _BY_TYPE[c.sql_type])
    return row


@_HYP
@given(row=rows())
def test_store_round_trips_any_typed_row(tmp_path: Path, row: dict):
    path = tmp_path / "hyp.db"
    path.unlink(missing_ok=True)
    s = SqliteStore(path)
    try:
        s.write([row])
        (got,) = s.rows()
    finally:
        s.close()
    expected = {n: row.get(n) for n in COLUMN_NAMES}
    assert got == expected
    for n in COLUMN_NAMES:
        assert type(got[n]) is type(expected[n]), n


# ---------------------------------------------------------------- JSON report


def test_json_round_trip(tmp_path: Path):
    path = tmp_path / "report.json"
    rows_ = [full_row("r", "b"), full_row("r", "a", status="failed", error="x", mse=None)]
    meta = {"run_id": "r", "settings": {"seed": 0}, "hosts": ["h1"]}
    write_json_report(path, rows_, meta)
    doc = read_json_report(path)
    assert doc == {"format_version": FORMAT_VERSION, "meta": meta, "rows": rows_}
    assert [list(r) for r in doc["rows"]] == [list(r) for r in rows_]  # column order kept
    assert path.read_text().endswith("\n")
    assert leftovers(tmp_path, {"report.json"}) == []


def test_json_rewrite_replaces_content(tmp_path: Path):
    path = tmp_path / "report.json"
    write_json_report(path, [full_row("r", "a")], {"n": 1})
    write_json_report(path, [full_row("r", "a"), full_row("r", "b")], {"n": 2})
    doc = read_json_report(path)
    assert doc["meta"] == {"n": 2}
    assert [r["case_id"] for r in doc["rows"]] == ["a", "b"]
    assert leftovers(tmp_path, {"report.json"}) == []


@pytest.mark.parametrize(
    ("rows_", "meta", "exc"),
    [
        ([full_row(mse=math.nan)], {}, ValueError),
        ([full_row(qps=math.inf)], {}, ValueError),
        ([full_row()], {"x": math.nan}, ValueError),
        ([full_row(mse=np.float64(0.1))], {}, TypeError),
        ([{"run_id": "r", "case_id": "c", "bogus": 1}], {}, ValueError),
    ],
    ids=["nan-row", "inf-row", "nan-meta", "numpy-scalar", "unknown-column"],
)
def test_json_failed_write_keeps_previous_file(tmp_path: Path, rows_, meta, exc):
    path = tmp_path / "report.json"
    write_json_report(path, [full_row("r", "first")], {"v": 1})
    before = path.read_bytes()
    with pytest.raises(exc):
        write_json_report(path, rows_, meta)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, {"report.json"}) == []


def test_json_failure_during_replace_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "report.json"
    write_json_report(path, [full_row("r", "first")], {"v": 1})
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(atomic_module.os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        write_json_report(path, [full_row("r", "second")], {"v": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path, {"report.json"}) == []


def test_json_report_first_write_failure_creates_nothing(tmp_path: Path):
    path = tmp_path / "report.json"
    with pytest.raises(ValueError):
        write_json_report(path, [full_row(mse=math.nan)], {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    ['{"format_version": 1, "rows": [', "[]", '{"meta": {}}', "not json", ""],
    ids=["truncated", "list", "no-rows", "garbage", "empty"],
)
def test_read_json_report_rejects_foreign_files(tmp_path: Path, content: str):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        read_json_report(path)
    assert str(path) in str(info.value)


def test_read_json_report_missing_file(tmp_path: Path):
    path = tmp_path / "absent.json"
    with pytest.raises(ValueError, match=r"absent\.json"):
        read_json_report(path)


def test_read_json_report_rejects_non_list_rows(tmp_path: Path):
    path = tmp_path / "r.json"
    path.write_text('{"rows": 5}')
    with pytest.raises(ValueError):
        read_json_report(path)


# ---------------------------------------------------------------- atomic writes


def test_atomic_open_error_in_block_keeps_old_content(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(path, "w") as f:
        f.write("partial new content")
        raise RuntimeError("stop")
    assert path.read_text() == "old"
    assert leftovers(tmp_path, {"f.txt"}) == []


def test_atomic_write_bytes_and_text_mode(tmp_path: Path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with atomic_open(path, "w") as f:
        f.write("h\u00e9")
    assert path.read_bytes() == "h\u00e9".encode()
    assert leftovers(tmp_path, {"f.bin"}) == []


def test_atomic_open_rejects_other_modes(tmp_path: Path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "a"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_permissions_follow_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- summary table


def test_summary_table_formats_ok_failed_and_skipped_rows():
    ok = full_row(
        "r",
        "dummy-pq-M8-nbits8",
        method="pq",
        code_bytes=8,
        compression_ratio=32.0,
        mse=0.123456,
        recall_at_10=0.95,
        qps=12345.6,
    )
    failed = full_row("r", "dummy-opq-M8-nbits8", method="opq", status="failed", error="RuntimeError: boom")
    skipped = full_row("r", "dummy-sq4", method="sq4", status="skipped", error=None, params_json="{}")
    missing = full_row("r", "dummy-sq8", method="sq8", params_json="{}", mse=None, qps=None, recall_at_10=None)

    table = summary_table([ok, failed, skipped, missing])
    lines = table.splitlines()
    header = lines[0]
    for title in ("case", "method", "params", "bytes", "compression", "MSE", "recall@10", "QPS"):
        assert title in header

    body = {line.split()[0]: line for line in lines[2:]}
    assert list(body) == sorted(["dummy-pq-M8-nbits8", "dummy-opq-M8-nbits8", "dummy-sq4", "dummy-sq8"])

    assert body["dummy-pq-M8-nbits8"].split() == [
        "dummy-pq-M8-nbits8", "pq", "M=8", "nbits=8", "8", "32.0x", "0.1235", "0.9500", "12,346"
    ]  # fmt: skip
    assert "failed: RuntimeError: boom" in body["dummy-opq-M8-nbits8"]
    assert "0.9500" not in body["dummy-opq-M8-nbits8"]
    assert body["dummy-sq4"].split()[1:] == ["sq4", "-", "skipped:"]
    cells = body["dummy-sq8"].split()
    assert cells[:3] == ["dummy-sq8", "sq8", "-"]
    assert cells[-3:] == ["-", "-", "-"]  # mse, recall@10, qps are None


def test_summary_truncates_long_errors():
    row = {"case_id": "c", "status": "failed", "error": "x" * 200}
    table = summary_table([row])
    assert "failed: " + "x" * 52 in table
    assert "x" * 53 not in table


def test_summary_of_no_rows_has_headers_only():
    lines = summary_table([]).splitlines()
    assert "case" in lines[0] and "QPS" in lines[0]
    assert len(lines) <= 2
