"""One self-contained HTML page for a report: the table (sortable), the plots, the provenance, the metric definitions.

The page is meant to be mailed, attached to an issue or opened from a cluster's shared disk, so it references
nothing outside itself: images are inlined as `data:` URIs, CSS and the few lines of sort script are inline, and no
URL appears in any src or href. Every text is escaped; numbers keep their raw value in `data-value` so sorting is
numeric and independent of how a cell is formatted.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vq_benchmark.reports.atomic import atomic_write_bytes, describe_os_error
from vq_benchmark.reports.errors import ReportError, one_line
from vq_benchmark.reports.report_table import REPORT_METRICS, Report, fmt_value, header, params_text
from vq_benchmark.reports.run_provenance import Provenance, settings_table
from vq_benchmark.reports.schema import Row, metric

if TYPE_CHECKING:  # plots.py pulls in matplotlib; the page only reads a Figure's fields
    from vq_benchmark.reports.plots import Figure

PARETO_HELP = (
    "B: on the front of recall@10 (higher) vs bytes/vector (lower); Q: on the front of recall@10 (higher) vs QPS"
    " (higher); BQ: both. Fronts are per dataset (and per run when several runs are shown)."
)

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:100em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}
td{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}td.err{color:#a00}
table.cases th{background:#eee;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#f7f7f7}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#555}dt{font-weight:600}dd{margin:0 0 .4em 1.5em}.note{color:#a60}
@media print{body{margin:0;font-size:11px}table.cases th{position:static;cursor:auto}
figure,tr{break-inside:avoid}a{color:inherit}}
"""

# Click a header: sort the body rows by that column's data-value (numbers numerically, empty values last),
# ascending first, descending on the next click.
SORT_JS = """
(function(){
  document.querySelectorAll('table.cases').forEach(function(table){
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function(th, col){
      th.tabIndex = 0;
      function sort(){
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function(h){ h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var num = th.getAttribute('data-type') === 'num';
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(a, b){
          var x = a.cells[col].getAttribute('data-value'), y = b.cells[col].getAttribute('data-value');
          if (x === '' || y === '') { return (x === '') - (y === ''); }
          var c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
          return asc ? c : -c;
        });
        rows.forEach(function(r){ body.appendChild(r); });
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function(e){
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); }
      });
    });
  });
})();
"""


def esc(value: object) -> str:
    """Text for element content and quoted attribute values."""
    return html.escape(str(value), quote=True)


def _raw(value: object) -> str:
    """What a cell sorts by: repr-exact numbers (JSON's), text as is, NULL as empty (sorts last)."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _cell(text: object, raw: object, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<td{cls} data-value="{esc(_raw(raw))}">{esc(text)}</td>'


def _columns(report: Report) -> list[tuple[str, str, str, str]]:
    """(label, data-type, title, metric name or "") of each column, in the text report's order."""
    lead = [("run", "text", "run id", "")] if report.all_runs else []
    metrics = [(header(n, label), "num", metric(n).description, n) for n, label in REPORT_METRICS]
    return [
        *lead,
        ("dataset", "text", "dataset name", ""),
        ("method", "text", "quantizer method from the sweep", ""),
        ("params", "text", "method parameters | search parameters", ""),
        *metrics,
        ("pareto", "text", PARETO_HELP, ""),
    ]


def table_html(report: Report) -> str:
    """The cases table: one `<tr data-case-id>` per row, every cell with the raw value it sorts by."""
    heads = ""
    for label, kind, title, name in _columns(report):
        by = f' data-metric="{esc(name)}"' if name else ""
        heads += f'<th scope="col" data-type="{kind}"{by} title="{esc(title)}">{esc(label)}</th>'

    body = "\n".join(_row_html(report, row, mark) for row, mark in zip(report.rows, report.pareto, strict=True))
    return f'<table class="cases">\n<thead><tr>{heads}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _row_html(report: Report, row: Row, mark: str) -> str:
    params = params_text(row)
    cells = [_cell(row.get("run_id"), row.get("run_id"))] if report.all_runs else []
    cells += [
        _cell(row.get("dataset") or "-", row.get("dataset")),
        _cell(row.get("method") or "-", row.get("method")),
        _cell(params, "" if params == "-" else params),
    ]
    if row.get("status") == "ok":
        cells += [_cell(fmt_value(n, row.get(n)), row.get(n), "num") for n, _ in REPORT_METRICS]
    else:
        reason = one_line(f"{row.get('status')}: {row.get('error') or ''}", 200)
        cells += [_cell(reason, None, "err"), *(_cell("", None) for _ in REPORT_METRICS[1:])]
    cells.append(_cell(mark, mark))
    attrs = f'data-case-id="{esc(row.get("case_id"))}" data-run-id="{esc(row.get("run_id"))}"'
    return f"<tr {attrs}>{''.join(cells)}</tr>"


def figures_html(figures: Sequence[Figure], note: str = "") -> str:
    """Each figure's PNG as a data: URI; the page never links to the figure files."""
    if not figures:
        return f'<p class="note">No plots{": " + esc(note) if note else "."}</p>'
    parts = []
    for fig in figures:
        uri = "data:image/png;base64," + base64.b64encode(fig.png).decode("ascii")
        parts.append(
            f'<figure id="fig-{esc(fig.name)}"><img src="{uri}" alt="{esc(fig.title)}">'
            f"<figcaption>{esc(fig.title)}</figcaption></figure>"
        )
    return "\n".join(parts)


def provenance_html(prov: Provenance) -> str:
    """The rows' provenance facts, then each run's settings with the source that set them."""
    facts = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in prov.facts)
    parts = [f'<table class="facts">{facts}</table>']
    for run in prov.runs:
        parts.append(f"<h3>Settings of run {esc(run.run_id)}</h3>")
        if run.origin:
            parts.append("<p>Read from " + ", ".join(f"<code>{esc(o)}</code>" for o in run.origin) + ".</p>")
        parts += [f'<p class="note">{esc(note)}</p>' for note in run.notes]
        lines = settings_table(run)
        if lines:
            trs = "".join(f"<tr><td>{esc(n)}</td><td>{esc(v)}</td><td>{esc(s)}</td></tr>" for n, v, s in lines)
            parts.append(
                '<table class="settings"><thead><tr><th scope="col">setting</th><th scope="col">value</th>'
                f'<th scope="col">source</th></tr></thead><tbody>{trs}</tbody></table>'
            )
    return "\n".join(parts)


def definitions_html() -> str:
    """The shown metrics as the registry declares them: name, unit, direction of better, description."""
    better = {True: "higher", False: "lower", None: "-"}
    items = []
    for name, label in REPORT_METRICS:
        m = metric(name)
        unit = f"unit {m.unit}" if m.unit else "no unit"
        items.append(
            f'<dt id="metric-{esc(name)}">{esc(label)} (<code>{esc(name)}</code>)</dt>'
            f"<dd>{esc(unit)}; better: {esc(better[m.higher_is_better])}. {esc(m.description)}</dd>"
        )
    items.append(f"<dt>pareto</dt><dd>{esc(PARETO_HELP)}</dd>")
    return "<dl>" + "".join(items) + "</dl>"


def render_html(
    report: Report, figures: Sequence[Figure], provenance: Provenance, *, title: str, plots_note: str = ""
) -> str:
    """The whole page as one string (UTF-8, no external reference); `plots_note` says why there are no plots."""
    n_ok = sum(1 for r in report.rows if r.get("status") == "ok")
    summary = f"{len(report.rows)} cases ({n_ok} ok); click a column header to sort, again to reverse."
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{esc(title)}</h1>",
            f"<p>{esc(summary)}</p>",
            '<h2 id="results">Results</h2>',
            table_html(report),
            '<h2 id="plots">Plots</h2>',
            figures_html(figures, plots_note),
            '<h2 id="provenance">Provenance</h2>',
            provenance_html(provenance),
            '<h2 id="metrics">Metric definitions</h2>',
            definitions_html(),
            f"<script>{SORT_JS}</script>",
            "</body></html>",
            "",
        ]
    )


def write_html(path: Path, page: str) -> Path:
    """Write the page atomically (creating its folder); ReportError naming `path` when it cannot."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, page.encode("utf-8"))
    except OSError as exc:
        raise ReportError(describe_os_error(path, exc)) from exc
    return path
