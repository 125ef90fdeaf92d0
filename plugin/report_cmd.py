"""`vq-benchmark report [DB] [--run RUN_ID|latest|all] [--dataset NAME] [-k EXPR] [--format ...] [--plots DIR]
[--plot SPEC]... [--html FILE] [--run-dir DIR]`: the results of a run (or a merged sharded run) as a table with the
Pareto-optimal cases marked, or as CSV or JSON; optionally also as plot files and one self-contained HTML page.

matplotlib (plots) is imported only when plots or a page are asked for, so the plain table stays light."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vq_benchmark.plugin.settings import BY_NAME, Settings, read_pyproject_ini, resolve_settings
from vq_benchmark.reports.atomic import describe_os_error
from vq_benchmark.reports.errors import ReportError
from vq_benchmark.reports.report_table import (
    ALL,
    FORMATS,
    LATEST,
    Report,
    build_report,
    read_rows,
    render,
    run_ids_by_time,
    select_rows,
)

if TYPE_CHECKING:
    from vq_benchmark.reports.plots import Figure, PlotSpec

PLOT_NEEDS_OUTPUT = "--plot needs --plots DIR or --html FILE"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `report` on the `vq-benchmark` subcommands; `args.func` is `run`."""
    p = subparsers.add_parser(
        "report",
        help="print a run's results as a table with the Pareto-optimal cases marked (or CSV/JSON)",
        description="Print the rows of a results database, grouped by dataset and sorted by bytes per vector. "
        "The pareto column marks B: on the front of recall@10 (higher) vs bytes/vector (lower); "
        "Q: on the front of recall@10 (higher) vs QPS (higher). Exit 2 with one line on a usage error.",
    )
    p.add_argument(
        "db", nargs="?", type=Path, default=None, metavar="DB", help="results database (default: the db-path setting)"
    )
    p.add_argument(
        "--run",
        default=LATEST,
        metavar="RUN_ID|latest|all",
        help="which run: the newest (latest, default), every run (all), or a run id",
    )
    p.add_argument("--dataset", default=None, metavar="NAME", help="only this dataset's rows")
    p.add_argument(
        "-k", dest="keyword", default=None, metavar="EXPR", help="pytest -k expression over case ids, e.g. 'pq and M8'"
    )
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="simple", help="output format (default: simple)")
    p.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the default plots (and every --plot) of the selected rows to DIR as <name>.png and <name>.svg",
    )
    p.add_argument(
        "--plot",
        dest="plot_specs",
        action="append",
        default=[],
        metavar="SPEC",
        help="one more plot, e.g. 'x=code_bytes,y=recall_at_100' (repeatable; needs --plots or --html)",
    )
    p.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="FILE",
        help="write one self-contained HTML page: sortable table, plots, provenance, metric definitions",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the runs' results.json and manifest.json live, for the page's settings "
        "(default: the run-dir setting)",
    )
    p.set_defaults(func=run)
    return p


def _settings() -> Settings:
    """Every setting resolved as pytest would (env > ini in pyproject > default); no options on this command."""
    cwd = Path.cwd()
    ini, ini_dir = read_pyproject_ini(cwd)
    options: dict[str, str | None] = {name: None for name in BY_NAME}
    return resolve_settings(options, os.environ, ini, cwd=cwd, ini_dir=ini_dir)


def default_db() -> Path:
    """The db-path setting, resolved as pytest would (env > ini in pyproject > default)."""
    return _settings().db_path


def default_run_dir() -> Path:
    """The run-dir setting, resolved like default_db."""
    return Path(_settings().value("run-dir"))


def plot_specs(texts: Sequence[str]) -> list[PlotSpec]:
    """DEFAULT_SPECS then each --plot, without exact repeats (a repeat would draw the same figure twice); the same
    axes with other log scales are a plot of their own."""
    from vq_benchmark.reports.plots import DEFAULT_SPECS, parse_plot

    return list(dict.fromkeys([*DEFAULT_SPECS, *(parse_plot(text) for text in texts)]))


def run_label(report: Report) -> str:
    runs = list(dict.fromkeys(str(r.get("run_id")) for r in report.rows))
    return runs[0] if len(runs) == 1 else f"{len(runs)} runs"


def write_plots(figures: Sequence[Figure], out_dir: Path) -> list[Path]:
    """write_figures, with a blocked or unwritable folder as one line naming it."""
    from vq_benchmark.reports.plots import write_figures

    try:
        return write_figures(figures, out_dir)
    except OSError as exc:
        raise ReportError(f"--plots: {describe_os_error(getattr(exc, 'filename', None) or out_dir, exc)}") from exc


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` (itself included) when that is not a directory."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_outputs(plots: Path | None, page: Path | None) -> None:
    """Refuse, before any work or output, an output path that a file or a folder is in the way of."""
    if plots is not None and (blocker := _blocking_file(plots)) is not None:
        raise ReportError(f"--plots {plots}: {blocker} exists and is not a directory")
    if page is not None and page.is_dir():
        raise ReportError(f"--html {page}: is a directory; expected a file name")
    if page is not None and (blocker := _blocking_file(page.parent)) is not None:
        raise ReportError(f"--html {page}: {blocker} exists and is not a directory")


def run(args: argparse.Namespace) -> int:
    if args.plot_specs and args.plots is None and args.html is None:
        raise ReportError(PLOT_NEEDS_OUTPUT)
    check_outputs(args.plots, args.html)
    want_figures = args.plots is not None or args.html is not None
    specs = plot_specs(args.plot_specs) if want_figures else []  # a bad spec fails before any reading
    db = args.db if args.db is not None else default_db()
    all_rows = read_rows(db)
    rows = select_rows(all_rows, run=args.run, dataset=args.dataset, keyword=args.keyword)
    report = build_report(rows, all_runs=args.run == ALL)
    print(render(report, args.fmt))
    if not want_figures:
        return 0
    from vq_benchmark.reports.plots import make_figures

    # Paths go to stderr after csv/json so that stdout stays one parseable document.
    out = sys.stdout if args.fmt in ("simple", "github") else sys.stderr
    figures: list[Figure] = []
    plots_note = ""
    try:
        figures = make_figures(list(report.rows), specs, run_label=run_label(report))
    except ReportError as exc:  # no matplotlib, or nothing plottable: the page is still worth having
        if args.plots is not None:
            raise
        plots_note = str(exc)
    if args.plots is not None:
        for path in write_plots(figures, args.plots):
            print(path, file=out)
    if args.html is not None:
        from vq_benchmark.reports.html_page import render_html, write_html
        from vq_benchmark.reports.run_provenance import gather_provenance

        run_dir = args.run_dir if args.run_dir is not None else default_run_dir()
        provenance = gather_provenance(report.rows, run_dir, run_ids_by_time(rows))
        title = f"vq-benchmark report: {run_label(report)} ({db.name})"
        print(
            write_html(args.html, render_html(report, figures, provenance, title=title, plots_note=plots_note)),
            file=out,
        )
    return 0
