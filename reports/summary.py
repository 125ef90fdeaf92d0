"""Terminal summary: one line per case, the columns a reader needs to compare codecs at a glance, and the
caveats (notes) recorded with any of them."""

from __future__ import annotations

import json
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
    params = json.loads(str(row.get("params_json") or "{}"))
    return " ".join(f"{k}={v}" for k, v in params.items()) or "-"


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
