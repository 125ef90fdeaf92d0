"""The engine of `vq-benchmark compare`: match the cases of two runs by case_id and judge each metric's change
against a tolerance, in the direction of better the metric registry declares.

Default tolerances follow what can legitimately differ between two runs. Quality metrics (recall, MSE, bytes) come
from seeded training on the same data, so the same code gives the same numbers: any change beyond float noise
(1e-9 absolute) is real. Timings (TIMING_COLUMNS) are clock readings that wobble from run to run even on one
machine (a rerun of identical code measured train_s 10.8% slower), so no default can tell noise from a regression:
a timing is judged only against a tolerance the user gives (`qps=10%`); without one its change is shown as
`changed` and never fails a run. Importable without pytest (only -k needs pytest's expression language).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tabulate import tabulate

from vq_benchmark.reports.errors import ReportError, one_line
from vq_benchmark.reports.report_table import FORMATS, keyword_filter, read_rows, run_ids_by_time
from vq_benchmark.reports.schema import METRIC_NAMES, TIMING_COLUMNS, Row, Scalar, metric

DEFAULT_METRICS: tuple[str, ...] = (
    "code_bytes",
    "relative_mse",
    "recall_at_1",
    "recall_at_10",
    "recall_at_100",
    "one_recall_at_1",
    "qps",
    "train_s",
    "encode_s",
)
QUALITY_ABS_TOLERANCE = 1e-9
# A line's verdict: missing = NULL on NEW only (a regression), added = NULL on BASE only, changed = moved beyond
# tolerance on a metric without a direction of better, or a timing without a tolerance given (never a regression).
VERDICTS = ("regressed", "improved", "same", "missing", "added", "changed")
FORMS = "expected DB (its latest run), DB:RUN or a RUN id of the default database"
_NUMBER = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?")
_SPEC_HELP = "expected NAME=NUMBER (absolute) or NAME=NUMBER% (relative), e.g. recall_at_10=0.01,qps=10%"


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move and still count as the same: `value` absolute, or `value` percent of base."""

    value: float
    relative: bool = False

    def allows(self, base: float, delta: float) -> bool:
        limit = self.value / 100.0 * abs(base) if self.relative else self.value
        return abs(delta) <= limit

    def text(self) -> str:
        return f"{self.value!r}%" if self.relative else repr(self.value)


def default_tolerance(name: str) -> Tolerance | None:
    """1e-9 absolute for everything a seeded run reproduces exactly; None (not judged) for clock readings."""
    return None if name in TIMING_COLUMNS else Tolerance(QUALITY_ABS_TOLERANCE)


def parse_tolerances(specs: Iterable[str]) -> dict[str, Tolerance]:
    """`recall_at_10=0.01,qps=10%` (repeatable, comma-joined) into {metric: Tolerance}; later entries win."""
    out: dict[str, Tolerance] = {}
    for spec in specs:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, eq, raw = (s.strip() for s in part.partition("="))
            if not eq or not name:
                raise ReportError(f"--tolerance {part!r}: {_SPEC_HELP}")
            if name not in METRIC_NAMES:
                raise ReportError(f"--tolerance {part!r}: unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")
            relative = raw.endswith("%")
            number = raw[:-1].strip() if relative else raw
            if not _NUMBER.fullmatch(number) or not math.isfinite(float(number)):
                raise ReportError(f"--tolerance {part!r}: {number!r} is not a non-negative number; {_SPEC_HELP}")
            out[name] = Tolerance(float(number), relative)
    return out


def format_tolerances(tolerances: Mapping[str, Tolerance]) -> str:
    """The spec `parse_tolerances` reads back to the same mapping."""
    return ",".join(f"{name}={tol.text()}" for name, tol in tolerances.items())


def parse_metrics(spec: str | None) -> tuple[str, ...]:
    """`a,b,...` checked against the registry; the default list when not given."""
    if spec is None:
        return DEFAULT_METRICS
    names = tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        what = f"unknown metric {unknown[0]!r}" if unknown else "no metric named"
        raise ReportError(f"--metrics {spec!r}: {what}; known: {', '.join(METRIC_NAMES)}")
    return names


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a database, one of its runs, and that run's rows."""

    db: Path
    run_id: str
    rows: tuple[Row, ...]


def _run_rows(db: Path, run: str | None, label: str) -> Side:
    rows = read_rows(db)
    runs = run_ids_by_time(rows)
    if not runs:
        raise ReportError(f"{label} {db}: the results table holds no rows")
    run_id = runs[-1] if run is None else run
    if run_id not in runs:
        newest = ", ".join(list(reversed(runs))[:5])
        raise ReportError(f"{label} {db}: no run {run_id!r}; newest known: {newest}")
    return Side(db, run_id, tuple(r for r in rows if r.get("run_id") == run_id))


def resolve_side(arg: str, default_db: Callable[[], Path], label: str) -> Side:
    """An argument as DB (latest run), DB:RUN (split at the last ':', for paths that hold one) or a run id of the
    default database, tried in that order so that an existing file always wins."""
    if Path(arg).is_file():
        return _run_rows(Path(arg), None, label)
    path, colon, run = arg.rpartition(":")
    if colon and path and run and Path(path).is_file():
        return _run_rows(Path(path), run, label)
    db = default_db()
    if db.is_file():
        rows = read_rows(db)
        if arg in run_ids_by_time(rows):
            return Side(db, arg, tuple(r for r in rows if r.get("run_id") == arg))
    raise ReportError(f"{label} {arg!r}: no such database, DB:RUN or run id in the default database {db}; {FORMS}")


def filter_rows(rows: Iterable[Row], dataset: str | None, keyword: str | None) -> list[Row]:
    """The rows of one dataset and -k expression (report's -k language over case ids)."""
    matches = keyword_filter(keyword) if keyword else None
    return [
        r
        for r in rows
        if (dataset is None or r.get("dataset") == dataset) and (matches is None or matches(str(r.get("case_id"))))
    ]


@dataclass(frozen=True)
class Line:
    """One case x metric (or `status`) judged; change and change_pct are None where they do not apply."""

    case_id: str
    metric: str
    base: Scalar
    new: Scalar
    change: float | None
    change_pct: float | None
    verdict: str


@dataclass(frozen=True)
class Comparison:
    base: Side
    new: Side
    lines: tuple[Line, ...]
    case_verdicts: dict[str, str]
    only_in_base: tuple[str, ...]
    only_in_new: tuple[str, ...]

    def count(self, verdict: str) -> int:
        return sum(v == verdict for v in self.case_verdicts.values())

    @property
    def regressed(self) -> bool:
        """What --fail-on-regression fails on: a regressed case, or a base case absent from NEW."""
        return self.count("regressed") > 0 or bool(self.only_in_base)


def judge(name: str, base: Scalar, new: Scalar, tolerance: Tolerance | None) -> Line:
    """The verdict of one metric of one case (case_id left empty); a tolerance of None judges no direction: any
    change is `changed`."""
    if base is None or new is None:
        verdict = "same" if base is None and new is None else "missing" if new is None else "added"
        return Line("", name, base, new, None, None, verdict)
    b, n = float(base), float(new)  # type: ignore[arg-type]
    delta = n - b
    pct = 100.0 * delta / abs(b) if b != 0 else None
    better = metric(name).higher_is_better
    if delta == 0 or (tolerance is not None and tolerance.allows(b, delta)):
        verdict = "same"
    elif better is None or tolerance is None:
        verdict = "changed"
    else:
        verdict = "improved" if (delta > 0) == better else "regressed"
    return Line("", name, base, new, delta, pct, verdict)


def compare_rows(
    base: Sequence[Row], new: Sequence[Row], metrics: Sequence[str], tolerances: Mapping[str, Tolerance]
) -> tuple[list[Line], dict[str, str], list[str], list[str]]:
    """Lines, per-case verdicts (regressed > improved > same) and the case ids only in BASE and only in NEW.
    A case that is not ok on either side is judged on its status alone: a failed row holds no numbers."""
    by_base = {str(r["case_id"]): r for r in base}
    by_new = {str(r["case_id"]): r for r in new}
    lines: list[Line] = []
    cases: dict[str, str] = {}
    for case_id in sorted(by_base.keys() & by_new.keys()):
        b, n = by_base[case_id], by_new[case_id]
        b_status, n_status = str(b.get("status")), str(n.get("status"))
        if b_status != "ok" or n_status != "ok":
            verdict = "regressed" if b_status == "ok" else "improved" if n_status == "ok" else "same"
            case_lines = [Line(case_id, "status", _status(b), _status(n), None, None, verdict)]
        else:
            case_lines = [
                replace(judge(m, b.get(m), n.get(m), tolerances.get(m, default_tolerance(m))), case_id=case_id)
                for m in metrics
            ]
        verdicts = {line.verdict for line in case_lines}
        cases[case_id] = (
            "regressed" if verdicts & {"regressed", "missing"} else "improved" if "improved" in verdicts else "same"
        )
        lines += case_lines
    return lines, cases, sorted(by_base.keys() - by_new.keys()), sorted(by_new.keys() - by_base.keys())


def _status(row: Row) -> str:
    status = str(row.get("status"))
    return status if status == "ok" or not row.get("error") else one_line(f"{status}: {row.get('error')}", 60)


def compare(
    base: Side,
    new: Side,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tolerances: Mapping[str, Tolerance] | None = None,
    dataset: str | None = None,
    keyword: str | None = None,
) -> Comparison:
    """Filter both sides alike, then judge every matched case."""
    b_rows, n_rows = filter_rows(base.rows, dataset, keyword), filter_rows(new.rows, dataset, keyword)
    if not b_rows and not n_rows:
        what = ([f"dataset {dataset}"] if dataset else []) + ([f"-k {keyword!r}"] if keyword else [])
        raise ReportError(f"no rows of either run match {', '.join(what) or 'anything'}")
    lines, cases, only_b, only_n = compare_rows(b_rows, n_rows, metrics, tolerances or {})
    return Comparison(base, new, tuple(lines), cases, tuple(only_b), tuple(only_n))


def _arrow(name: str) -> str:
    better = metric(name).higher_is_better if name in METRIC_NAMES else None
    return {True: "↑", False: "↓", None: ""}[better]


def _fmt(value: Scalar, sign: str = "") -> str:
    """Enough digits to see a change: report's fixed 4 decimals would hide a 20% change of 0.0002 s."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:{sign}}"
    if not isinstance(value, float):
        return str(value)
    return f"{value:{sign},.0f}" if abs(value) >= 1000 else f"{value:{sign}.4g}"


def _fmt_change(line: Line) -> tuple[str, str]:
    if line.change is None:
        return "-", "-"
    integer = isinstance(line.base, int) and isinstance(line.new, int)
    change = _fmt(int(line.change) if integer else line.change, "+")
    return change, "-" if line.change_pct is None else f"{line.change_pct:+.1f}%"


def summary(comparison: Comparison) -> str:
    c = comparison
    return (
        f"{len(c.case_verdicts)} cases compared, {c.count('regressed')} regressed, {c.count('improved')} improved, "
        f"{c.count('same')} same; only in base: {len(c.only_in_base)}; only in new: {len(c.only_in_new)}"
    )


def _notes(c: Comparison) -> list[str]:
    """Timings from different CPUs say little about the code: say so next to the numbers."""
    cpus = [sorted({str(r.get("cpu_model")) for r in side.rows}) for side in (c.base, c.new)]
    if cpus[0] != cpus[1]:
        return [f"note: timings come from different CPUs (base: {', '.join(cpus[0])}; new: {', '.join(cpus[1])})"]
    return []


def render(comparison: Comparison, fmt: str = "simple", *, show_all: bool = False) -> str:
    """A tabulate table of the lines that are not `same` (every line with show_all) plus the only-in lists and the
    summary; CSV of the lines (only-in cases as rows with that verdict); JSON of everything."""
    c = comparison
    lines = [line for line in c.lines if show_all or line.verdict != "same"]
    if fmt == "json":
        doc = {
            "base": {"db": str(c.base.db), "run_id": c.base.run_id},
            "new": {"db": str(c.new.db), "run_id": c.new.run_id},
            "lines": [asdict(line) for line in lines],
            "cases": c.case_verdicts,
            "only_in_base": list(c.only_in_base),
            "only_in_new": list(c.only_in_new),
            "summary": summary(c),
        }
        return json.dumps(doc, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["case_id", "metric", "base", "new", "change", "change_pct", "verdict"])
        for line in lines:
            writer.writerow(["" if v is None else v for v in asdict(line).values()])
        writer.writerows([case, "", "", "", "", "", "only_in_base"] for case in c.only_in_base)
        writer.writerows([case, "", "", "", "", "", "only_in_new"] for case in c.only_in_new)
        return buf.getvalue().rstrip("\n")
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = [f"base: {c.base.db} run {c.base.run_id}", f"new:  {c.new.db} run {c.new.run_id}", *_notes(c), ""]
    if lines:
        body = [
            [x.case_id, f"{x.metric} {_arrow(x.metric)}".strip(), _fmt(x.base), _fmt(x.new), *_fmt_change(x), x.verdict]
            for x in lines
        ]
        headers = ["case", "metric", "base", "new", "change", "change %", "verdict"]
        out += [tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True), ""]
    else:
        out += ["no differences beyond tolerance", ""]
    out += [f"only in base: {', '.join(c.only_in_base)}"] if c.only_in_base else []
    out += [f"only in new: {', '.join(c.only_in_new)}"] if c.only_in_new else []
    return "\n".join([*out, summary(c)])
