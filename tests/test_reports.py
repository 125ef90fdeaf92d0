"""Tests for reports/: the row schema, the SQLite store, the atomic JSON report, atomic writes and the summary.

make_row has its own file (test_rows.py), and so does the append-only log (test_jsonl.py).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.reports import atomic as atomic_module
from vq_benchmark.reports import schema
from vq_benchmark.reports import sqlite_store as sqlite_store_module
from vq_benchmark.reports.atomic import atomic_open, atomic_write_bytes, clean_stale_temps, describe_os_error
from vq_benchmark.reports.errors import ReportError
from vq_benchmark.reports.json_report import FORMAT_VERSION, read_json_report, write_json_report
from vq_benchmark.reports.schema import (
    ALL_COLUMNS,
    COLUMN_NAMES,
    METRIC_NAMES,
    PRIMARY_KEY,
    PROVENANCE,
    check_row,
    metric,
)
from vq_benchmark.reports.sqlite_store import TABLE, SqliteStore, StoreError
from vq_benchmark.reports.summary import NOTE_MAX_CHARS, SUMMARY_METRICS, summary_table

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


def test_recall_metrics_are_declared_explicitly_without_depths_in_the_schema():
    assert not hasattr(schema, "RECALL_KS")
    for k in (1, 10, 100):
        for name, prefix in ((f"recall_at_{k}", "k-recall@k: "), (f"one_recall_at_{k}", "1-recall@R: ")):
            m = metric(name)
            assert (m.sql_type, m.unit, m.higher_is_better) == ("REAL", "", True)
            assert m.description.startswith(prefix) and "tie tolerance" in m.description
    assert metric("recall_at_10").description == (
        "k-recall@k: fraction of the k results whose exact distance is within the tie tolerance of the k-th true "
        "distance"
    )
    assert metric("one_recall_at_1").description == (
        "1-recall@R: one of the first R results is within the tie tolerance of the true nearest distance"
    )


def test_provenance_declares_omp_wait_policy():
    (col,) = [c for c in PROVENANCE if c.name == "omp_wait_policy"]
    assert (col.sql_type, col.description) == ("TEXT", "OMP_WAIT_POLICY the process ran with")


@pytest.mark.parametrize(
    ("column", "value", "exc", "words"),
    [
        ("mse", math.nan, ValueError, "non-finite"),
        ("qps", -math.inf, ValueError, "non-finite"),
        ("code_bytes", 2**63, ValueError, "64-bit"),
        ("seed", -(2**63) - 1, ValueError, "64-bit"),
        ("code_bytes", 8.0, TypeError, "INTEGER but holds float"),
        ("dataset", 3, TypeError, "TEXT but holds int"),
        ("mse", "0.5", TypeError, "REAL but holds str"),
        ("notes", "\ud800", ValueError, "UTF-8"),
    ],
)
def test_check_row_enforces_declared_types_and_storable_values(column, value, exc, words):
    with pytest.raises(exc, match=words):
        check_row({"run_id": "r", "case_id": "c", column: value})


def test_check_row_accepts_ints_in_real_columns_and_int64_bounds():
    check_row({"mse": 1, "code_bytes": 2**63 - 1, "seed": -(2**63), "qps": -0.0})


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


# ---------------------------------------------------------------- SQLite store: refusals and failures


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize(
    "create",
    [
        f"CREATE TABLE {TABLE} (run_id TEXT, case_id TEXT, mse REAL)",
        f"CREATE TABLE {TABLE} (run_id TEXT, case_id TEXT, PRIMARY KEY (case_id, run_id))",
        f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, case_id TEXT)",
        f"CREATE TABLE {TABLE} (run_id TEXT, case_id TEXT, x TEXT, PRIMARY KEY (run_id, case_id, x))",
        f"CREATE VIEW {TABLE} AS SELECT 'r' AS run_id, 'c' AS case_id",
    ],
    ids=["no-key", "key-reversed", "rowid-key", "wider-key", "view"],
)
def test_foreign_results_table_is_refused_and_left_untouched(tmp_path: Path, create: str):
    path = tmp_path / "theirs.db"
    _sqlite(path, create)
    before = _dump(path)
    with pytest.raises(StoreError) as info:
        SqliteStore(path)
    assert str(info.value) == (
        f"results database {path}: table 'results' exists without the harness key (run_id, case_id); "
        "use another --vq-db-path"
    )
    assert _dump(path) == before


def test_other_tables_in_the_same_file_are_fine(tmp_path: Path):
    path = tmp_path / "shared.db"
    _sqlite(path, "CREATE TABLE notes (x TEXT)", "INSERT INTO notes VALUES ('keep me')")
    store = SqliteStore(path)
    try:
        store.write([full_row()])
        assert len(store.rows()) == 1
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT x FROM notes").fetchall() == [("keep me",)]
    conn.close()


def _read_only_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open every database with SQLite's own read-only mode: as root chmod does not stop writes, this does."""
    real = sqlite3.connect

    def connect(database, *args, **kwargs):
        return real(f"file:{database}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(sqlite_store_module.sqlite3, "connect", connect)


def test_read_only_database_is_refused_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "runs.db"
    SqliteStore(path).close()
    _read_only_connect(monkeypatch)
    with pytest.raises(StoreError) as info:
        SqliteStore(path)
    message = str(info.value)
    assert message.startswith(f"results database {path}: open failed: read-only")
    assert "\n" not in message


def test_uncreatable_database_is_refused_at_open():
    path = Path("/proc/vq-benchmark-test/runs.db")
    if not Path("/proc/self").exists():
        pytest.skip("no /proc on this system")
    with pytest.raises(StoreError) as info:
        SqliteStore(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def make_read_only():
    """Really take write access away, also as root: chmod for a normal user, `chattr +i` (immutable) for root."""
    undo: list[list[str]] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            mode = path.stat().st_mode
            path.chmod(0o555 if path.is_dir() else 0o444)
            undo.append(["chmod", oct(mode & 0o7777)[2:], str(path)])
            return
        if shutil.which("chattr") is None:
            pytest.skip("root without chattr: cannot make a path read-only")
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"chattr +i not possible here: {proc.stderr.strip()}")
        undo.append(["chattr", "-i", str(path)])

    yield make
    for command in reversed(undo):
        subprocess.run(command, check=False)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_really_read_only_database_or_directory_is_refused_at_open(tmp_path: Path, make_read_only, what: str):
    path = tmp_path / "ro" / "runs.db"
    SqliteStore(path).close()
    make_read_only(path if what == "file" else path.parent)
    with pytest.raises(StoreError) as info:
        SqliteStore(path)
    assert str(info.value).startswith(f"results database {path}: open failed: ")
    assert "\n" not in str(info.value)


def test_new_database_in_read_only_directory_is_refused(tmp_path: Path, make_read_only):
    make_read_only(tmp_path)
    with pytest.raises(StoreError, match=r"runs\.db: open failed: cannot open"):
        SqliteStore(tmp_path / "runs.db")


def test_disk_full_during_write_is_one_line_and_rolls_back(store: SqliteStore):
    store.write([full_row("r", "kept")])
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLITE_FULL: a disk that fills up
    big = [full_row("r", f"big-{i}", notes="x" * 20_000) for i in range(5)]
    with pytest.raises(StoreError) as info:
        store.write(big)
    message = str(info.value)
    assert message.startswith(f"results database {store.path}: write failed: disk full")
    assert "\n" not in message
    assert not store._conn.in_transaction
    assert [r["case_id"] for r in store.rows()] == ["kept"]
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    store.write(big)
    assert len(store.rows()) == 6


def test_failing_batch_leaves_no_half_transaction(store: SqliteStore):
    store._conn.execute(
        f"CREATE TRIGGER refuse BEFORE INSERT ON {TABLE} WHEN NEW.case_id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
    )
    with pytest.raises(StoreError, match="write failed: refused by trigger"):
        store.write([full_row("r", "first"), full_row("r", "bad"), full_row("r", "third")])
    assert not store._conn.in_transaction
    assert store.rows() == []
    store.write([full_row("r", "first")])
    assert [r["case_id"] for r in store.rows()] == ["first"]


def test_write_needs_the_primary_key(store: SqliteStore):
    with pytest.raises(ValueError, match="run_id"):
        store.write([{"case_id": "c", "status": "ok"}])
    assert store.rows() == []


def test_store_error_names_a_locked_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sqlite_store_module, "BUSY_TIMEOUT_S", 0.05)
    path = tmp_path / "runs.db"
    SqliteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=r"runs\.db: open failed: .*database is locked"):
            SqliteStore(path)
    finally:
        holder.close()


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
    with pytest.raises(StoreError, match="simulated crash") as info:
        write_json_report(path, [full_row("r", "second")], {"v": 2})
    assert str(path) in str(info.value) and "\n" not in str(info.value)
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
    with pytest.raises(ReportError) as info:
        read_json_report(path)
    assert str(path) in str(info.value)


def test_read_json_report_missing_file(tmp_path: Path):
    path = tmp_path / "absent.json"
    with pytest.raises(ReportError, match=r"absent\.json: cannot read"):
        read_json_report(path)


def test_read_json_report_rejects_non_list_rows(tmp_path: Path):
    path = tmp_path / "r.json"
    path.write_text('{"format_version": 1, "rows": 5}')
    with pytest.raises(ReportError, match="not a vq-benchmark report"):
        read_json_report(path)


def test_read_json_report_refuses_a_newer_format(tmp_path: Path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "meta": {}, "rows": []}))
    with pytest.raises(ReportError) as info:
        read_json_report(path)
    assert str(info.value) == (
        f"JSON report {path}: written by a newer vq-benchmark (format {FORMAT_VERSION + 1} > {FORMAT_VERSION})"
    )


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"rows": []}, "not a vq-benchmark report"),
        ({"format_version": "1", "rows": []}, "positive integer"),
        ({"format_version": True, "rows": []}, "positive integer"),
        ({"format_version": 0, "rows": []}, "positive integer"),
        ({"format_version": 1, "meta": [], "rows": []}, "meta must be an object"),
        ({"format_version": 1, "rows": [5]}, r"rows\[0\]: expected a JSON object"),
        ({"format_version": 1, "rows": [{"status": "ok"}]}, r"rows\[0\]: expected a JSON object with a text case_id"),
        ({"format_version": 1, "rows": [{"case_id": "c", "colour": "red"}]}, r"rows\[0\]: not a result row"),
    ],
    ids=["no-version", "text-version", "bool-version", "zero-version", "list-meta", "row-5", "no-case", "bad-col"],
)
def test_read_json_report_rejects_documents_it_cannot_trust(tmp_path: Path, doc: dict, words: str):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ReportError, match=words) as info:
        read_json_report(path)
    assert str(info.value).startswith(f"JSON report {path}: ")
    assert "\n" not in str(info.value)


def test_report_error_is_a_value_error():
    assert issubclass(ReportError, ValueError)


def test_json_write_to_a_full_disk_is_a_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "report.json"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_module.os, "fsync", full)
    with pytest.raises(StoreError) as info:
        write_json_report(path, [full_row()], {})
    assert str(info.value) == f"cannot write {path}: disk full (no space left on device)"
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "disk full (no space left on device)"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.EROFS, "read-only file system"),
        (errno.EIO, "input/output error"),
    ],
)
def test_describe_os_error_words_common_causes(code: int, words: str):
    exc = OSError(code, os.strerror(code))
    assert describe_os_error(Path("/data/r.json"), exc) == f"cannot write /data/r.json: {words}"


def test_describe_os_error_is_one_line_without_errno():
    text = describe_os_error("/x\ny", OSError("first\nsecond"))
    assert "\n" not in text and text.startswith("cannot write /x y: first")


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(proc.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def _temp(directory: Path, name: str, pid: int, token: str = "0a1b2c3d", host: str | None = None) -> Path:
    """A temp file name as atomic_open makes it (this host's tag unless another is given)."""
    return directory / f".{name}.{host or atomic_module._HOST_TAG}-{pid}.{token}.tmp"


def test_clean_stale_temps_removes_only_dead_writers_temps(tmp_path: Path):
    dead = _dead_pid()
    nested = tmp_path / "arrays"
    nested.mkdir()
    stale = [_temp(tmp_path, "results.json", dead), _temp(nested, "c.ids.npy", dead, "ffffffff")]
    live = [_temp(tmp_path, "results.json", os.getpid()), _temp(tmp_path, "x", os.getppid(), "01234567")]
    other = [
        tmp_path / "results.json",
        tmp_path / f"results.json.{atomic_module._HOST_TAG}-{dead}.0a1b2c3d.tmp",  # not hidden: not ours
        _temp(tmp_path, "results.json", dead, "0a1b2c3"),  # 7 hex digits
        _temp(tmp_path, "results.json", dead, "0A1B2C3D"),  # upper case: token_hex never writes it
        tmp_path / f".results.json.{atomic_module._HOST_TAG}-{dead}.0a1b2c3d.tmp.bak",
        _temp(tmp_path, "other-host", dead, host="abcdef" if atomic_module._HOST_TAG != "abcdef" else "fedcba"),
        tmp_path / f".untagged.{dead}.0a1b2c3d.tmp",  # written by an older version or another host
    ]
    for path in stale + live + other:
        path.write_text("x")
    _temp(tmp_path, "dir", dead).mkdir()
    target = tmp_path / "precious"
    target.write_text("keep")
    _temp(tmp_path, "link", dead).symlink_to(target)

    assert clean_stale_temps(tmp_path, recursive=False) == [stale[0]]
    assert clean_stale_temps(tmp_path) == [stale[1]]
    assert all(p.exists() for p in live + other)
    assert _temp(tmp_path, "dir", dead).is_dir()
    assert _temp(tmp_path, "link", dead).is_symlink() and target.read_text() == "keep"
    assert clean_stale_temps(tmp_path / "missing") == []


def test_another_hosts_temps_are_removed_only_when_a_day_old(tmp_path: Path):
    """A pid means nothing for a file another node is writing into a shared directory: only age does."""
    foreign = _temp(tmp_path, "r.json", 1, host="abcdef" if atomic_module._HOST_TAG != "abcdef" else "fedcba")
    foreign.write_text("x")
    assert clean_stale_temps(tmp_path) == []
    old = time.time() - atomic_module.FOREIGN_TEMP_AGE_S - 60
    os.utime(foreign, (old, old))
    assert clean_stale_temps(tmp_path) == [foreign]


def test_clean_stale_temps_keeps_recent_temps_when_asked(tmp_path: Path):
    dead = _dead_pid()
    temp = _temp(tmp_path, "r.json", dead)
    temp.write_text("x")
    assert clean_stale_temps(tmp_path, min_age_s=3600) == []
    old = time.time() - 7200
    os.utime(temp, (old, old))
    assert clean_stale_temps(tmp_path, min_age_s=3600) == [temp]


def test_clean_stale_temps_removes_what_a_killed_writer_left(tmp_path: Path):
    target = tmp_path / "results.json"
    script = (
        "import os, sys\n"
        "from vq_benchmark.reports.atomic import atomic_open\n"
        "with atomic_open(sys.argv[1], 'w') as f:\n"
        "    f.write('half')\n"
        "    f.flush()\n"
        "    os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    (temp,) = [p for p in tmp_path.iterdir()]
    assert temp.name.startswith(".results.json.") and temp.name.endswith(".tmp")
    assert clean_stale_temps(tmp_path) == [temp]
    assert list(tmp_path.iterdir()) == []


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
        notes=None,
    )
    failed = full_row("r", "dummy-opq-M8-nbits8", method="opq", status="failed", error="RuntimeError: boom", notes=None)
    skipped = full_row("r", "dummy-sq4", method="sq4", status="skipped", error=None, params_json="{}", notes=None)
    missing = full_row(
        "r", "dummy-sq8", method="sq8", params_json="{}", mse=None, qps=None, recall_at_10=None, notes=None
    )

    table = summary_table([ok, failed, skipped, missing])
    lines = table.splitlines()
    header = lines[0]
    for title in ("case", "method", "params", "bytes", "compression", "MSE", "recall@10", "QPS"):
        assert title in header
    assert "notes" not in header  # no case has notes: no column for them

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


def test_summary_shows_notes_as_numbered_footnotes():
    rows_ = [
        {"case_id": "b", "status": "ok", "mse": 0.5, "notes": "training sample 100 < 9984 recommended by faiss"},
        {"case_id": "a", "status": "ok", "mse": 0.5, "notes": "ground truth has no distances"},
        {"case_id": "c", "status": "failed", "error": "boom", "notes": "ground truth has no distances"},
        {"case_id": "d", "status": "ok", "mse": 0.5, "notes": ""},
    ]
    lines = summary_table(rows_).splitlines()
    assert lines[0].split()[-1] == "notes"
    last = {line.split()[0]: line.split()[-1] for line in lines[2:6]}
    assert last == {"a": "[1]", "b": "[2]", "c": "[1]", "d": "-"}  # d: empty notes, last cell is its QPS "-"
    assert lines[6:] == ["[1] ground truth has no distances", "[2] training sample 100 < 9984 recommended by faiss"]


def test_summary_note_footnotes_are_one_line_and_truncated():
    long = "line one " + "y" * 1000 + "\nline two"
    lines = summary_table([{"case_id": "a", "status": "ok", "notes": long}]).splitlines()
    assert lines[-1].startswith("[1] line one yyy") and len(lines[-1]) == len("[1] ") + NOTE_MAX_CHARS
    assert "line two" not in "\n".join(lines)
