"""The append-only row log and the JSON report rebuilt from it after a session died."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.reports import jsonl as jsonl_module
from vq_benchmark.reports.errors import ReportError, StoreError
from vq_benchmark.reports.json_report import LOG_NAME, REPORT_NAME, read_json_report, rebuild_json_report
from vq_benchmark.reports.jsonl import JsonlLog, latest_per_case, read_jsonl
from vq_benchmark.reports.rows import make_row
from vq_benchmark.reports.schema import ALL_COLUMNS, PRIMARY_KEY
from vq_benchmark.reports.sqlite_store import SqliteStore

pytestmark = pytest.mark.smoke

_HYP = settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def row(case_id: str = "c", run_id: str = "run-1", **measured) -> dict:
    identity = {"case_id": case_id, "dataset": "dummy", "method": "pq", "params_json": "{}"}
    return make_row(identity=identity, status="ok", measured=measured, context={"run_id": run_id})


def line_of(r: dict) -> bytes:
    return (json.dumps(r, allow_nan=False, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------- appending


def test_append_writes_one_sorted_line_per_row_and_creates_directories(tmp_path: Path):
    path = tmp_path / "runs" / "r1" / LOG_NAME
    log = JsonlLog(path)
    first, second = row("a", mse=0.5), row("b", code_bytes=8)
    log.append(first)
    log.append(second)
    assert path.read_bytes() == line_of(first) + line_of(second)
    assert read_jsonl(path) == [first, second]


def test_append_is_fsynced_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(jsonl_module.os, "fsync", fsync)
    log = JsonlLog(tmp_path / LOG_NAME)
    log.append(row("a"))
    log.append(row("b"))
    assert synced == [len(line_of(row("a"))), len(line_of(row("a"))) + len(line_of(row("b")))]


def test_a_new_log_object_appends_to_an_existing_file(tmp_path: Path):
    path = tmp_path / LOG_NAME
    JsonlLog(path).append(row("a"))
    JsonlLog(path).append(row("a", mse=1.0))
    assert [r.get("mse") for r in read_jsonl(path)] == [None, 1.0]


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        ({"case_id": "c", "mse": float("nan")}, ValueError),
        ({"case_id": "c", "colour": "red"}, ValueError),
        ({"case_id": "c", "mse": "high"}, TypeError),
        ({"run_id": "r"}, ValueError),
    ],
    ids=["nan", "unknown-column", "wrong-type", "no-case-id"],
)
def test_bad_rows_are_refused_and_nothing_is_written(tmp_path: Path, bad: dict, exc: type[Exception]):
    path = tmp_path / LOG_NAME
    with pytest.raises(exc):
        JsonlLog(path).append(bad)
    assert not path.exists() or path.read_bytes() == b""


def test_disk_full_mid_line_is_a_store_error_and_leaves_no_torn_line(tmp_path: Path, monkeypatch):
    path = tmp_path / LOG_NAME
    log = JsonlLog(path)
    log.append(row("a"))
    before = path.read_bytes()
    real = os.write

    def half_then_full(fd: int, data) -> int:
        if len(data) > 10:
            return real(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl_module.os, "write", half_then_full)
    with pytest.raises(StoreError) as info:
        log.append(row("b", notes="n" * 100))
    assert str(info.value) == f"cannot write {path}: disk full (no space left on device)"
    assert path.read_bytes() == before
    monkeypatch.undo()
    log.append(row("c"))
    assert [r["case_id"] for r in read_jsonl(path)] == ["a", "c"]


def test_unwritable_location_is_a_store_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"cannot write .*file/results\.jsonl"):
        JsonlLog(blocker / LOG_NAME).append(row())


# ---------------------------------------------------------------- torn writes


@pytest.mark.parametrize("fragment_len", [1, 37, 70_000, 200_000], ids=lambda n: f"torn-{n}")
def test_next_writer_cuts_a_torn_tail_before_appending(tmp_path: Path, fragment_len: int):
    path = tmp_path / LOG_NAME
    JsonlLog(path).append(row("a"))
    with path.open("ab") as f:
        f.write((b'{"case_id": "killed", "notes": "' + b"x" * fragment_len)[:fragment_len])
    assert [r["case_id"] for r in read_jsonl(path)] == ["a"]
    JsonlLog(path).append(row("b"))
    assert path.read_bytes() == line_of(row("a")) + line_of(row("b"))


def test_a_log_holding_only_a_torn_line(tmp_path: Path):
    path = tmp_path / LOG_NAME
    path.write_bytes(b'{"case_id": "a", "mse"' + b"0" * 100_000)
    assert read_jsonl(path) == []
    JsonlLog(path).append(row("b"))
    assert read_jsonl(path) == [row("b")]


def test_a_complete_last_line_without_newline_counts_as_torn(tmp_path: Path):
    """Only the newline, written in the same write() as the line, marks it complete."""
    path = tmp_path / LOG_NAME
    path.write_bytes(line_of(row("a")) + line_of(row("b"))[:-1])
    assert read_jsonl(path) == [row("a")]


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b'{"case_id": "x", "mse": ', "corrupt JSON"),
        (b"\xff\xfe garbage", "corrupt JSON"),
        (b"[1, 2]", "expected a JSON object with a text case_id"),
        (b'{"mse": 0.5}', "expected a JSON object with a text case_id"),
        (b'{"case_id": 5}', "expected a JSON object with a text case_id"),
        (b'{"case_id": "x", "colour": "red"}', "not a result row .*unknown columns: colour"),
        (b'{"case_id": "x", "mse": NaN}', "not a result row .*non-finite"),
        (b'{"case_id": "x", "code_bytes": true}', "not a result row .*bool"),
    ],
    ids=["truncated", "binary", "list", "no-case-id", "int-case-id", "unknown-column", "nan", "bool"],
)
def test_a_bad_line_before_the_last_names_file_and_line(tmp_path: Path, line: bytes, words: str):
    path = tmp_path / LOG_NAME
    path.write_bytes(line_of(row("a")) + line + b"\n" + line_of(row("b")))
    with pytest.raises(ReportError, match=words) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"JSONL log {path}, line 2: ")
    assert "\n" not in str(info.value)


def test_a_bad_terminated_last_line_is_corruption_not_a_torn_write(tmp_path: Path):
    path = tmp_path / LOG_NAME
    path.write_bytes(line_of(row("a")) + b'{"case_id": \n')
    with pytest.raises(ReportError, match="line 2: corrupt JSON"):
        read_jsonl(path)


def test_blank_lines_are_ignored(tmp_path: Path):
    path = tmp_path / LOG_NAME
    path.write_bytes(b"\n" + line_of(row("a")) + b"  \n\n" + line_of(row("b")))
    assert [r["case_id"] for r in read_jsonl(path)] == ["a", "b"]


def test_missing_log_is_a_report_error(tmp_path: Path):
    with pytest.raises(ReportError, match=r"results\.jsonl: cannot read"):
        read_jsonl(tmp_path / LOG_NAME)


def test_latest_row_per_case_wins_and_cases_are_sorted():
    rows = [row("b", mse=1.0), row("a", mse=2.0), row("b", mse=3.0), row("c"), row("a", mse=4.0)]
    assert [(r["case_id"], r.get("mse")) for r in latest_per_case(rows)] == [("a", 4.0), ("b", 3.0), ("c", None)]


# ---------------------------------------------------------------- rebuilding results.json


def test_rebuild_json_report_from_the_log(tmp_path: Path):
    run = tmp_path / "run-1"
    log = JsonlLog(run / LOG_NAME)
    for r in (row("b", mse=1.0), row("a"), row("b", mse=2.0)):
        log.append(r)
    with (run / LOG_NAME).open("ab") as f:
        f.write(b'{"case_id": "torn')
    target = rebuild_json_report(run)
    assert target == run / REPORT_NAME
    doc = read_json_report(target)
    assert [(r["case_id"], r.get("mse")) for r in doc["rows"]] == [("a", None), ("b", 2.0)]
    assert doc["meta"] == {"run_id": "run-1", "rebuilt_from": LOG_NAME}
    assert rebuild_json_report(run, {"run_id": "run-1", "note": "x"}) == target
    assert read_json_report(target)["meta"] == {"run_id": "run-1", "note": "x"}
    assert sorted(p.name for p in run.iterdir()) == [REPORT_NAME, LOG_NAME]


def test_rebuild_without_a_log_is_a_report_error_and_writes_nothing(tmp_path: Path):
    with pytest.raises(ReportError, match=r"results\.jsonl"):
        rebuild_json_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_rebuild_of_mixed_runs_leaves_run_id_open(tmp_path: Path):
    log = JsonlLog(tmp_path / LOG_NAME)
    log.append(row("a", run_id="r1"))
    log.append(row("b", run_id="r2"))
    assert read_json_report(rebuild_json_report(tmp_path))["meta"]["run_id"] is None


def test_a_session_that_records_per_row_and_dies_keeps_every_case(tmp_path: Path):
    """The recording path the plugin uses: make_row -> SQLite + log per case; results.json only rebuilt."""
    run = tmp_path / "run-1"
    store = SqliteStore(tmp_path / "runs.db")
    log = JsonlLog(run / LOG_NAME)
    identity = {"dataset": "dummy", "method": "pq", "params_json": "{}"}
    try:
        for i, mse in enumerate([0.5, float("inf"), float("nan")]):
            r = make_row(
                identity={**identity, "case_id": f"case-{i}"},
                status="ok",
                measured={"mse": mse},
                context={"run_id": "run-1"},
            )
            store.write([r])
            log.append(r)
        failed = make_row(
            identity={**identity, "case_id": "case-3"}, status="failed", error="boom\nTraceback", context={}
        )
        failed["run_id"] = "run-1"
        store.write([failed])
        log.append(failed)
        assert [r["case_id"] for r in store.rows("run-1")] == [f"case-{i}" for i in range(4)]
    finally:
        store.close()
    doc = read_json_report(rebuild_json_report(run))
    assert [r.get("mse") for r in doc["rows"]] == [0.5, None, None, None]
    assert json.loads(doc["rows"][1]["null_reasons_json"]) == {"mse": "not finite: inf"}
    assert doc["rows"][3]["error"] == "boom"


# ---------------------------------------------------------------- properties


_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_real = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_BY_TYPE = {"INTEGER": _int64, "REAL": _real, "TEXT": _text}


@st.composite
def rows(draw) -> dict:
    r: dict = {}
    for c in ALL_COLUMNS:
        if c.name in PRIMARY_KEY:
            r[c.name] = draw(_text)
        elif draw(st.booleans()):
            r[c.name] = draw(st.none() | _BY_TYPE[c.sql_type])
    return r


@_HYP
@given(batch=st.lists(rows(), min_size=1, max_size=4))
def test_any_valid_row_round_trips(tmp_path_factory: pytest.TempPathFactory, batch: list[dict]):
    path = tmp_path_factory.mktemp("rt") / LOG_NAME
    log = JsonlLog(path)
    for r in batch:
        log.append(r)
    back = read_jsonl(path)
    assert back == batch
    for got, sent in zip(back, batch, strict=True):
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in sent.items()}


@_HYP
@given(batch=st.lists(rows(), min_size=0, max_size=3), torn=rows(), cut=st.floats(min_value=0, max_value=1))
def test_a_torn_final_line_of_any_length_is_dropped(
    tmp_path_factory: pytest.TempPathFactory, batch: list[dict], torn: dict, cut: float
):
    path = tmp_path_factory.mktemp("torn") / LOG_NAME
    whole = line_of(torn)
    fragment = whole[: int(cut * (len(whole) - 1))]  # anything short of the newline: a killed writer
    path.write_bytes(b"".join(line_of(r) for r in batch) + fragment)
    assert read_jsonl(path) == batch
    JsonlLog(path).append(torn)
    assert read_jsonl(path) == [*batch, torn]
