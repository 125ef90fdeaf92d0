"""The engine of `vq-benchmark report`: read a results database (a run's or a merged one), select rows by run,
dataset and a pytest -k expression, mark the Pareto-optimal cases and render a table, CSV or JSON.

Importable without pytest: only the -k expression language is pytest's own, imported when an expression is given.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from vq_benchmark.reports.errors import ReportError, one_line
from vq_benchmark.reports.pareto import pareto_front
from vq_benchmark.reports.schema import Row, metric
from vq_benchmark.reports.sqlite_store import TABLE

FORMATS = ("simple", "github", "csv", "json")
LATEST, ALL = "latest", "all"
KNOWN_IDS_LISTED = 5
PARETO_Y = "recall_at_10"

# (metric, label) in the table's order; units and direction of better come from the registry.
REPORT_METRICS: tuple[tuple[str, str], ...] = (
    ("code_bytes", "bytes/vector"),
    ("compression_ratio", "compression"),
    ("relative_mse", "relative MSE"),
    ("recall_at_1", "recall@1"),
    ("recall_at_10", "recall@10"),
    ("recall_at_100", "recall@100"),
    ("one_recall_at_1", "1-recall@1"),
    ("qps", "QPS"),
    ("train_s", "train"),
)
RAW_COLUMNS: tuple[str, ...] = (
    "run_id",
    "case_id",
    "status",
    "error",
    "dataset",
    "method",
    "params_json",
    *(name for name, _ in REPORT_METRICS),
)


@dataclass(frozen=True)
class Report:
    """Rows in report order (grouped by run and dataset, ok rows by code bytes first) and their Pareto marks."""

    rows: tuple[Row, ...]
    pareto: tuple[str, ...]
    all_runs: bool


def read_rows(db: Path) -> list[Row]:
    """Every row of the `results` table, opened read-only; problems are one-line ReportErrors."""
    db = Path(db)
    if not db.exists():
        raise ReportError(f"results database {db}: no such file")
    if not db.is_file():
        raise ReportError(f"results database {db}: not a file")
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ReportError(f"results database {db}: cannot open ({one_line(exc)})") from exc
    try:
        conn.row_factory = sqlite3.Row
        try:
            found = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ReportError(f"results database {db}: not a SQLite database ({one_line(exc)})") from exc
        if found is None or found[0] != "table":
            raise ReportError(f"results database {db}: no '{TABLE}' table (not a vq-benchmark results database)")
        try:
            return [dict(r) for r in conn.execute(f"SELECT * FROM {TABLE} ORDER BY run_id, case_id")]
        except sqlite3.Error as exc:
            raise ReportError(f"results database {db}: cannot read '{TABLE}' ({one_line(exc)})") from exc
    finally:
        conn.close()


def run_ids_by_time(rows: Sequence[Row]) -> list[str]:
    """Run ids oldest first: by their newest created_at, then by id (run ids sort by time too)."""
    newest: dict[str, str] = {}
    for row in rows:
        run_id, created = str(row.get("run_id")), str(row.get("created_at") or "")
        newest[run_id] = max(newest.get(run_id, ""), created)
    return sorted(newest, key=lambda r: (newest[r], r))


def keyword_filter(expr: str) -> Callable[[str], bool]:
    """pytest's -k language over case ids: a name matches when it is a case-insensitive substring of the id."""
    from _pytest.mark.expression import Expression

    try:
        compiled = Expression.compile(expr)
    except (SyntaxError, ValueError) as exc:  # pytest >= 8.4 raises SyntaxError; older ParseError(Exception)
        raise ReportError(f"-k {expr!r}: {one_line(exc)}") from exc

    def matches(case_id: str) -> bool:
        lowered = case_id.lower()

        def matcher(name: str, /, **kwargs: object) -> bool:
            return not kwargs and name.lower() in lowered

        return bool(compiled.evaluate(matcher))

    return matches


def select_rows(
    rows: Sequence[Row], *, run: str = LATEST, dataset: str | None = None, keyword: str | None = None
) -> list[Row]:
    """The rows of the chosen run (`latest`, `all` or an id), dataset and -k expression."""
    if not rows:
        raise ReportError("the results table holds no rows")
    runs = run_ids_by_time(rows)
    if run == LATEST:
        chosen = [r for r in rows if str(r.get("run_id")) == runs[-1]]
    elif run == ALL:
        chosen = list(rows)
    elif run in runs:
        chosen = [r for r in rows if str(r.get("run_id")) == run]
    else:
        newest = list(reversed(runs))[:KNOWN_IDS_LISTED]
        more = f" (+{len(runs) - len(newest)} more)" if len(runs) > len(newest) else ""
        raise ReportError(f"no run {run!r} in the database; newest known: {', '.join(newest)}{more}")
    if dataset is not None:
        chosen = [r for r in chosen if r.get("dataset") == dataset]
    if keyword:
        matches = keyword_filter(keyword)
        chosen = [r for r in chosen if matches(str(r.get("case_id")))]
    if not chosen:
        what = [f"run {run}"] + ([f"dataset {dataset}"] if dataset else []) + ([f"-k {keyword!r}"] if keyword else [])
        raise ReportError(f"no rows match {', '.join(what)}")
    return chosen


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None  # type: ignore[arg-type]


def build_report(rows: Sequence[Row], *, all_runs: bool = False) -> Report:
    """Order rows (by run when all_runs, then dataset; ok rows by code_bytes then case_id, others after) and mark
    each group's ok rows on the recall@10-vs-bytes front (B) and the recall@10-vs-QPS front (Q)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    order = {r: i for i, r in enumerate(run_ids_by_time(rows))}
    for row in rows:
        key = (str(row.get("run_id")) if all_runs else "", str(row.get("dataset")))
        groups.setdefault(key, []).append(row)
    out_rows: list[Row] = []
    marks: list[str] = []
    for key in sorted(groups, key=lambda k: (order.get(k[0], -1), k[1])):
        group = groups[key]
        ok = sorted(
            (r for r in group if r.get("status") == "ok"),
            key=lambda r: (_num(r.get("code_bytes")) is None, _num(r.get("code_bytes")) or 0, str(r["case_id"])),
        )
        rest = sorted((r for r in group if r.get("status") != "ok"), key=lambda r: str(r["case_id"]))
        recall = [_num(r.get(PARETO_Y)) for r in ok]
        sizes, speeds = [_num(r.get("code_bytes")) for r in ok], [_num(r.get("qps")) for r in ok]
        bytes_front = pareto_front(list(zip(recall, sizes, strict=True)), (True, False))
        qps_front = pareto_front(list(zip(recall, speeds, strict=True)), (True, True))
        for i, row in enumerate(ok):
            out_rows.append(row)
            marks.append(("B" if i in bytes_front else "") + ("Q" if i in qps_front else ""))
        out_rows += rest
        marks += [""] * len(rest)
    return Report(tuple(out_rows), tuple(marks), all_runs)


def header(name: str, label: str) -> str:
    """`label (unit) ↑`: unit and direction of better from the metric registry."""
    m = metric(name)
    unit = f" ({m.unit})" if m.unit else ""
    arrow = {True: " ↑", False: " ↓", None: ""}[m.higher_is_better]
    return f"{label}{unit}{arrow}"


def params_text(row: Row) -> str:
    """`M=8 nbits=8` from params_json, search parameters after a '|'."""
    texts = []
    for column in ("params_json", "search_params_json"):
        raw = row.get(column)
        try:
            params = json.loads(str(raw)) if raw else {}
        except json.JSONDecodeError:
            params = {}
        if isinstance(params, dict) and params:
            texts.append(" ".join(f"{k}={v}" for k, v in params.items()))
    return " | ".join(texts) or "-"


def fmt_value(name: str, value: object) -> str:
    if value is None:
        return "-"
    if metric(name).sql_type == "INTEGER" or not isinstance(value, int | float):
        return str(value)
    v = float(value)
    if name == "qps":
        return f"{v:,.0f}"
    if name == "compression_ratio":
        return f"{v:.1f}x"
    if name in ("relative_mse", "train_s"):
        return f"{v:.4g}"
    return f"{v:.4f}"


def render(report: Report, fmt: str = "simple") -> str:
    """The report as a tabulate table (simple, github), CSV (raw values) or JSON (raw rows plus `pareto`)."""
    if fmt == "json":
        objects = [{**row, "pareto": mark} for row, mark in zip(report.rows, report.pareto, strict=True)]
        return json.dumps(objects, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*RAW_COLUMNS, "pareto"])
        for row, mark in zip(report.rows, report.pareto, strict=True):
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in RAW_COLUMNS] + [mark])
        return buf.getvalue().rstrip("\n")
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    lead = ["run"] if report.all_runs else []
    headers = [*lead, "dataset", "method", "params", *(header(n, lbl) for n, lbl in REPORT_METRICS), "pareto"]
    body = []
    for row, mark in zip(report.rows, report.pareto, strict=True):
        line = ([str(row.get("run_id"))] if report.all_runs else []) + [
            str(row.get("dataset") or "-"),
            str(row.get("method") or "-"),
            params_text(row),
        ]
        if row.get("status") == "ok":
            line += [fmt_value(n, row.get(n)) for n, _ in REPORT_METRICS]
        else:
            reason = one_line(f"{row.get('status')}: {row.get('error') or ''}", 60)
            line += [reason, *[""] * (len(REPORT_METRICS) - 1)]
        body.append([*line, mark])
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def report(
    db: Path,
    *,
    run: str = LATEST,
    dataset: str | None = None,
    keyword: str | None = None,
    fmt: str = "simple",
) -> str:
    """Read, select, mark and render: what `vq-benchmark report` prints."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rows = select_rows(read_rows(db), run=run, dataset=dataset, keyword=keyword)
    return render(build_report(rows, all_runs=run == ALL), fmt)
