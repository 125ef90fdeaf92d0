"""The one place that shapes a result row, for ok, failed and skipped cases alike.

Recording a row must never end a session, so a value the store cannot hold (nan, inf, an int beyond 64 bits, a
numpy array where a number belongs) does not raise here: it is stored as NULL and the reason joins
`null_reasons_json`, next to the reasons the case runner gave. What does raise is a caller's mistake that no data
can cause: an unknown status, an unknown column, missing identity. numpy scalars are unwrapped through `.item()`
(duck typing), because rows cross xdist's serializer and this package must not import numpy.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
from collections.abc import Mapping

from vq_benchmark.reports.errors import one_line
from vq_benchmark.reports.schema import COLUMN_NAMES, SQL_TYPES, SQLITE_INT_MAX, SQLITE_INT_MIN, Row, Scalar, SqlType

STATUSES: frozenset[str] = frozenset({"ok", "failed", "skipped"})
REQUIRED_IDENTITY: tuple[str, ...] = ("case_id", "dataset", "method", "params_json")
ERROR_MAX_CHARS = 500
_ARGUMENT_COLUMNS = ("status", "error")
_REASONS = "null_reasons_json"


def make_row(
    *,
    identity: Mapping[str, object],
    status: str,
    measured: Mapping[str, object] | None = None,
    error: str | None = None,
    context: Mapping[str, object] | None = None,
) -> Row:
    """Build the row of one case: plain values in schema column order, bad values NULL with their reason.

    identity: case_id, dataset, method, params_json (required, text). measured: what the case runner returned.
    context: run_id, worker, created_at, seed, fingerprints, provenance. A column given twice must agree.
    `error` is collapsed to its first non-empty line (at most ERROR_MAX_CHARS characters).
    """
    if status not in STATUSES:
        raise ValueError(f"make_row: status must be one of {', '.join(sorted(STATUSES))}, got {status!r}")
    given = _merge(identity, measured or {}, context or {})
    missing = [k for k in REQUIRED_IDENTITY if not isinstance(_unwrap(identity.get(k)), str)]
    if missing:
        raise ValueError(f"make_row: identity needs text values for {', '.join(missing)}")
    reasons = _earlier_reasons(given.pop(_REASONS, None))
    row: dict[str, Scalar] = {"status": status, "error": one_line(error or "", ERROR_MAX_CHARS) or None}
    for name, value in given.items():
        row[name], reason = plain_value(SQL_TYPES[name], value)
        if reason is not None:
            reasons.setdefault(name, reason)  # the runner's own reason for a NULL says more than ours
    if reasons:
        row[_REASONS] = json.dumps(reasons, sort_keys=True)
    return {name: row[name] for name in COLUMN_NAMES if name in row}


def plain_value(sql_type: SqlType, value: object) -> tuple[Scalar, str | None]:
    """`value` as the plain Python type the column holds, or (None, why it cannot be stored)."""
    value = _unwrap(value)
    if value is None:
        return None, None
    if sql_type == "TEXT":
        return _text(value)
    return _number(value, sql_type)


def _merge(*layers: Mapping[str, object]) -> dict[str, object]:
    merged: dict[str, object] = {}
    for layer in layers:
        for name, value in layer.items():
            if name in merged and not _same(merged[name], value):
                raise ValueError(f"make_row: column {name!r} given twice with different values")
            merged[name] = value
    unknown = sorted(str(n) for n in merged if n not in SQL_TYPES)
    if unknown:
        raise ValueError(f"make_row: unknown columns: {', '.join(unknown)}")
    clash = [n for n in _ARGUMENT_COLUMNS if n in merged]
    if clash:
        raise ValueError(f"make_row: pass {', '.join(clash)} as argument(s), not inside a mapping")
    return merged


def _same(a: object, b: object) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # e.g. comparing arrays; treat as different rather than guess
        return False


def _unwrap(value: object) -> object:
    """numpy scalars and one-element arrays to Python scalars; anything without a working .item() unchanged."""
    if value is None or type(value) in (int, float, str):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except Exception:
            return value
    return value


def _number(value: object, sql_type: SqlType) -> tuple[Scalar, str | None]:
    if isinstance(value, numbers.Integral):  # bool included: True -> 1
        as_int = int(value)
        if not SQLITE_INT_MIN <= as_int <= SQLITE_INT_MAX:
            return None, f"integer outside SQLite's 64-bit range ({as_int.bit_length()} bits)"
        return (float(as_int) if sql_type == "REAL" else as_int), None
    if isinstance(value, numbers.Real):
        try:
            as_float = float(value)
        except (OverflowError, ValueError):
            return None, f"not representable as a float: {_describe(value)}"
        if not math.isfinite(as_float):
            return None, f"not finite: {as_float}"
        if sql_type == "REAL":
            return as_float, None
        if as_float.is_integer() and SQLITE_INT_MIN <= as_float <= SQLITE_INT_MAX:
            return int(as_float), None
        return None, f"not an integer: {as_float!r}"
    return None, f"not a number: {_describe(value)}"


def _text(value: object) -> tuple[Scalar, str | None]:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        if isinstance(value, bytes):
            value = os.fsdecode(value)
    if not isinstance(value, str):
        return None, f"not text: {_describe(value)}"
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: SQLite would refuse the whole row
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text, None


def _earlier_reasons(value: object) -> dict[str, str]:
    """The runner's {metric: reason} (JSON text or a mapping); unreadable reasons are kept as a reason themselves."""
    value = _unwrap(value)
    if value is None:
        return {}
    if isinstance(value, str):
        with contextlib.suppress(ValueError, RecursionError):
            value = json.loads(value)
    if isinstance(value, Mapping):
        return {str(k): one_line(v, ERROR_MAX_CHARS) for k, v in value.items()}
    return {_REASONS: f"earlier reasons unreadable: {_describe(value)}"}


def _describe(value: object) -> str:
    """Short, never-raising description of a bad value for a reason string."""
    try:
        text = repr(value)
    except Exception:
        text = "<unprintable>"
    return one_line(f"{type(value).__name__} {text}", 80)
