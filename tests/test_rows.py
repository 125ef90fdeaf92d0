"""make_row: the one shape of a result row; a bad measured value becomes NULL with its reason, never an exception."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.reports.rows import ERROR_MAX_CHARS, make_row
from vq_benchmark.reports.schema import COLUMN_NAMES, METRICS, SQL_TYPES, check_row
from vq_benchmark.reports.sqlite_store import SqliteStore

pytestmark = pytest.mark.smoke

_HYP = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
IDENTITY = {"case_id": "dummy-pq-M8-nbits8", "dataset": "dummy", "method": "pq", "params_json": '{"M":8}'}
CONTEXT = {"run_id": "run-1", "worker": "gw0", "created_at": "2026-01-01T00:00:00+00:00", "seed": 0}
REAL_METRICS = [m.name for m in METRICS if m.sql_type == "REAL"]
INTEGER_METRICS = [m.name for m in METRICS if m.sql_type == "INTEGER"]


def row_of(status: str = "ok", **measured) -> dict:
    return make_row(identity=IDENTITY, status=status, measured=measured, context=CONTEXT)


def reasons(row: dict) -> dict:
    return json.loads(row["null_reasons_json"]) if row.get("null_reasons_json") else {}


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


# ---------------------------------------------------------------- shape


def test_ok_row_is_plain_and_in_schema_column_order():
    row = row_of(mse=0.25, code_bytes=8, factory="PQ8x8", n_base=1000)
    assert list(row) == [n for n in COLUMN_NAMES if n in row]
    assert row["status"] == "ok" and row["error"] is None
    assert {k: row[k] for k in IDENTITY} == IDENTITY
    assert (row["run_id"], row["worker"], row["seed"]) == ("run-1", "gw0", 0)
    assert "null_reasons_json" not in row
    check_row(row)


@pytest.mark.parametrize("status", ["failed", "skipped"])
def test_failed_and_skipped_rows_have_the_same_shape(status: str):
    row = make_row(identity=IDENTITY, status=status, error="RuntimeError: boom", context=CONTEXT)
    assert row == {
        "run_id": "run-1",
        "case_id": IDENTITY["case_id"],
        "status": status,
        "error": "RuntimeError: boom",
        "dataset": "dummy",
        "method": "pq",
        "params_json": '{"M":8}',
        "seed": 0,
        "worker": "gw0",
        "created_at": "2026-01-01T00:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("\n\n  Traceback (most recent call last):  \n  File x\n", "Traceback (most recent call last):"),
        ("one line", "one line"),
        ("   \n\t\n", None),
        ("", None),
        (None, None),
        ("e" * 2000, "e" * (ERROR_MAX_CHARS - 3) + "..."),
    ],
    ids=["multi-line", "single", "blank", "empty", "none", "long"],
)
def test_error_is_collapsed_to_one_line(error, expected):
    row = make_row(identity=IDENTITY, status="failed", error=error)
    assert row["error"] == expected
    assert row["error"] is None or len(row["error"]) <= ERROR_MAX_CHARS


# ---------------------------------------------------------------- mistakes a caller can make


@pytest.mark.parametrize("status", ["passed", "OK", "", None])
def test_unknown_status_is_refused(status):
    with pytest.raises(ValueError, match="status must be one of failed, ok, skipped"):
        make_row(identity=IDENTITY, status=status)


def test_unknown_columns_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown columns: bogus, zz_top"):
        make_row(identity=IDENTITY, status="ok", measured={"zz_top": 1, "mse": 0.1}, context={"bogus": "x"})


@pytest.mark.parametrize("missing", ["case_id", "dataset", "method", "params_json"])
def test_identity_is_required_text(missing: str):
    identity = {k: v for k, v in IDENTITY.items() if k != missing}
    with pytest.raises(ValueError, match=missing):
        make_row(identity=identity, status="ok")
    with pytest.raises(ValueError, match=missing):
        make_row(identity={**IDENTITY, missing: 5}, status="ok")


@pytest.mark.parametrize("name", ["status", "error"])
def test_status_and_error_come_only_as_arguments(name: str):
    with pytest.raises(ValueError, match=name):
        make_row(identity=IDENTITY, status="ok", measured={name: "x"})


def test_a_column_given_twice_must_agree():
    same = make_row(identity=IDENTITY, status="ok", measured={"case_id": np.str_(IDENTITY["case_id"])})
    assert same["case_id"] == IDENTITY["case_id"] and type(same["case_id"]) is str
    with pytest.raises(ValueError, match="'case_id' given twice"):
        make_row(identity=IDENTITY, status="ok", measured={"case_id": "other"})
    with pytest.raises(ValueError, match="'seed' given twice"):
        make_row(identity=IDENTITY, status="ok", measured={"seed": 1}, context={"seed": 2})


# ---------------------------------------------------------------- values become plain, or NULL with a reason


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("mse", np.float32(0.5), 0.5),
        ("mse", np.float64(0.25), 0.25),
        ("mse", np.array(0.125), 0.125),
        ("mse", 3, 3.0),
        ("mse", Fraction(1, 4), 0.25),
        ("code_bytes", np.int64(8), 8),
        ("code_bytes", np.uint8(8), 8),
        ("code_bytes", 8.0, 8),
        ("threads", np.bool_(True), 1),
        ("git_dirty", False, 0),
        ("factory", np.str_("PQ8x8"), "PQ8x8"),
        ("codec_path", Path("/c/x.faissindex"), "/c/x.faissindex"),
        ("qps", -0.0, -0.0),
    ],
)
def test_values_are_converted_to_plain_python(column: str, value, expected):
    row = row_of(**{column: value})
    assert row[column] == expected and type(row[column]) is type(expected)
    assert column not in reasons(row)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("mse", math.inf, "not finite: inf"),
        ("mse", -math.inf, "not finite: -inf"),
        ("qps", math.nan, "not finite: nan"),
        ("recall_at_10", np.float32("nan"), "not finite: nan"),
        ("code_bytes", 2**63, "integer outside SQLite's 64-bit range (64 bits)"),
        ("code_bytes", -(2**63) - 1, "integer outside SQLite's 64-bit range (64 bits)"),
        pytest.param("mse", 10**5000, "integer outside SQLite's 64-bit range (16610 bits)", id="mse-10**5000"),
        ("n_train", np.uint64(2**64 - 1), "integer outside SQLite's 64-bit range (64 bits)"),
        ("code_bytes", 8.5, "not an integer: 8.5"),
        ("code_bytes", 1e300, "not an integer: 1e+300"),
        ("n_base", math.inf, "not finite: inf"),
        ("mse", Fraction(10**400, 3), "not representable as a float: Fraction Fraction("),
        ("mse", "0.5", "not a number: str '0.5'"),
        ("mse", [0.5], "not a number: list [0.5]"),
        ("mse", np.array([1.0, 2.0]), "not a number: ndarray array([1., 2.])"),
        ("mse", None, None),
        ("train_s", Unprintable(), "not a number: Unprintable <unprintable>"),
        ("factory", 3, "not text: int 3"),
    ],
)
def test_bad_values_become_null_with_a_reason(column: str, value, reason):
    row = row_of(**{column: value})
    assert column in row and row[column] is None
    assert reasons(row).get(column, "")[: len(reason or "")] == (reason or "")
    check_row(row)


def test_reasons_merge_with_the_runners_own():
    row = row_of(mse=math.inf, qps=math.nan, null_reasons_json='{"recall_at_100": "GT holds 10 neighbours"}')
    assert reasons(row) == {
        "mse": "not finite: inf",
        "qps": "not finite: nan",
        "recall_at_100": "GT holds 10 neighbours",
    }
    assert row["null_reasons_json"] == json.dumps(reasons(row), sort_keys=True)


def test_the_runners_reason_wins_for_the_same_metric():
    row = row_of(mse=math.nan, null_reasons_json={"mse": "RaBitQ decodes only the 1-bit code"})
    assert reasons(row) == {"mse": "RaBitQ decodes only the 1-bit code"}


@pytest.mark.parametrize("earlier", ["{not json", "[1, 2]", 5])
def test_unreadable_earlier_reasons_are_kept_as_a_reason(earlier):
    row = row_of(mse=math.inf, null_reasons_json=earlier)
    got = reasons(row)
    assert got["mse"] == "not finite: inf"
    assert got["null_reasons_json"].startswith("earlier reasons unreadable: ")


def test_text_with_lone_surrogates_is_made_storable():
    row = row_of(notes="bad \ud800 text")
    assert row["notes"] == "bad \\ud800 text"
    check_row(row)


# ---------------------------------------------------------------- properties


_any_number = st.one_of(
    st.floats(),  # includes nan, inf, -inf, -0.0, subnormals, the largest floats
    st.integers(),  # unbounded: beyond 64 bits too
    st.booleans(),
    st.floats(width=32).map(np.float32),
    st.integers(min_value=0, max_value=2**64 - 1).map(np.uint64),
    st.fractions(),
)


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "prop.db")
    yield s
    s.close()


@_HYP
@given(values=st.fixed_dictionaries({}, optional={name: _any_number for name in REAL_METRICS + INTEGER_METRICS}))
def test_make_row_never_raises_for_any_number_and_every_file_accepts_the_row(store: SqliteStore, values: dict):
    row = make_row(identity=IDENTITY, status="ok", measured=values, context=CONTEXT)
    check_row(row)
    line = json.dumps(row, allow_nan=False, sort_keys=True)
    assert json.loads(line) == row
    store.write([row])
    (back,) = store.rows()
    assert back == {n: row.get(n) for n in COLUMN_NAMES}
    why = reasons(row)
    for name, value in values.items():
        if row[name] is None and value is not None:
            assert name in why, name
        if row[name] is not None:
            assert type(row[name]) is {"REAL": float, "INTEGER": int}[SQL_TYPES[name]]
            assert math.isfinite(row[name])


@_HYP
@given(text=st.text(), number=st.floats(allow_nan=False, allow_infinity=False))
def test_any_text_is_stored_by_sqlite_and_json(store: SqliteStore, text: str, number: float):
    row = make_row(identity={**IDENTITY, "case_id": text}, status="failed", error=text, measured={"notes": text})
    row = {**row, "run_id": "r", "mse": number}
    check_row(row)
    json.dumps(row, allow_nan=False)
    store.write([row])
    (back,) = [r for r in store.rows("r") if r["case_id"] == row["case_id"]]
    assert (back["notes"], back["error"], back["mse"]) == (row["notes"], row["error"], row["mse"])
