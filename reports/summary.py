"""Terminal summary: one line per case, the columns a reader needs to compare codecs at a glance, and the
caveats (notes) recorded with any of them."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence

from tabulate import tabulate

from vq_benchmark.reports.errors import one_line
from vq_benchmark.reports.schema import Row, metric

NOTE_MAX_CHARS = 300
SUMMARY_METRICS: tuple[str, ...] = ("code_bytes", "compression_ratio", "mse", "recall_at_10", "qps")
_HEADERS = {
    "code_bytes": "bytes",
    "compression_ratio": "compression",
    "mse": "MSE",
    "recall_at_10": "recall@10",
    "qps": "QPS",
}


def _fmt(name: str, value: object) -> str:
    if value is None:
        return "-"
    m = metric(name)
    if m.sql_type == "INTEGER":
        return str(value)
    v = float(value)  # type: ignore[arg-type]
    if name == "qps":
        return f"{v:,.0f}"
    if name == "compression_ratio":
        return f"{v:.1f}x"
    if name == "mse":
        return f"{v:.4g}"
    return f"{v:.4f}"


def _params(row: Row) -> str:
    """Training parameters, then search parameters after a '|'."""
    params = json.loads(str(row.get("params_json") or "{}"))
    text = " ".join(f"{k}={v}" for k, v in params.items())
    raw = row.get("search_params_json")
    try:
        search = json.loads(str(raw)) if raw else {}
    except json.JSONDecodeError:  # not written by the harness: the params column shows training params only
        search = {}
    if isinstance(search, dict) and search:
        text = " | ".join(filter(None, [text, " ".join(f"{k}={v}" for k, v in search.items())]))
    return text or "-"


def summary_table(rows: Sequence[Row], *, tablefmt: str = "simple") -> str:
    """Render rows (any order) as a table sorted by case id; failed and skipped cases show their reason.

    Cases with `notes` (a small training sample, missing GT distances, ...) get a footnote marker in a last
    "notes" column and the note under the table, so a questionable number is never shown without its caveat.
    Identical notes share one footnote.
    """
    body = []
    footnotes: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: str(r["case_id"])):
        line = [row["case_id"], row.get("method"), _params(row)]
        if row.get("status") == "ok":
            line += [_fmt(n, row.get(n)) for n in SUMMARY_METRICS]
        else:
            reason = f"{row.get('status')}: {row.get('error') or ''}".strip()
            line += [reason[:60], *[""] * (len(SUMMARY_METRICS) - 1)]
        note = one_line(row.get("notes") or "", NOTE_MAX_CHARS)
        line.append(f"[{footnotes.setdefault(note, len(footnotes) + 1)}]" if note else "")
        body.append(line)
    headers = ["case", "method", "params", *(_HEADERS[n] for n in SUMMARY_METRICS)]
    if not footnotes:
        return tabulate([line[:-1] for line in body], headers=headers, tablefmt=tablefmt, disable_numparse=True)
    table = tabulate(body, headers=[*headers, "notes"], tablefmt=tablefmt, disable_numparse=True)
    return "\n".join([table, *(f"[{number}] {note}" for note, number in footnotes.items())])


REPEAT_METRICS: tuple[str, ...] = ("mse", "recall_at_10", "qps")


def _configuration(row: Row) -> tuple[str, str, str, str]:
    return (
        str(row.get("dataset")),
        str(row.get("method")),
        str(row.get("params_json") or "{}"),
        str(row.get("search_params_json") or ""),
    )


def _mean_std(name: str, values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    if name == "qps":
        return f"{mean:,.0f} ± {std:,.0f}"
    if name == "mse":
        return f"{mean:.4g} ± {std:.2g}"
    return f"{mean:.4f} ± {std:.4f}"


def repeats_table(rows: Sequence[Row], *, tablefmt: str = "simple") -> str:
    """Mean ± sample standard deviation across training seeds of every configuration measured with more than one
    seed (--vq-repeats, `seeds` in the sweep), over its ok rows; empty when there is none.

    A configuration is (dataset, method, training parameters, search parameters): rows that differ only in seed."""
    groups: dict[tuple[str, str, str, str], list[Row]] = {}
    for row in rows:
        if row.get("status") == "ok":
            groups.setdefault(_configuration(row), []).append(row)
    body = []
    for key in sorted(groups):
        members = groups[key]
        seeds = sorted({int(s) for r in members if isinstance(s := r.get("seed"), int)})
        if len(seeds) < 2:
            continue
        first = min(members, key=lambda r: str(r["case_id"]))
        line = [key[0], key[1], _params(first), len(members), ",".join(map(str, seeds))]
        for name in REPEAT_METRICS:
            values = [float(v) for r in members if isinstance(v := r.get(name), int | float)]
            line.append(_mean_std(name, values))
        body.append(line)
    if not body:
        return ""
    headers = ["dataset", "method", "params", "n", "seeds", *(f"{_HEADERS[n]} mean ± std" for n in REPEAT_METRICS)]
    title = "across training seeds (mean ± sample std):"
    return "\n".join([title, tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)])
