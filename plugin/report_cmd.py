"""`vq-benchmark report [DB] [--run RUN_ID|latest|all] [--dataset NAME] [-k EXPR] [--format ...]`: the results of
a run (or a merged sharded run) as a table with the Pareto-optimal cases marked, or as CSV or JSON."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vq_benchmark.plugin.settings import BY_NAME, read_pyproject_ini, resolve_settings
from vq_benchmark.reports.report_table import FORMATS, LATEST, report


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
    p.set_defaults(func=run)
    return p


def default_db() -> Path:
    """The db-path setting, resolved as pytest would (env > ini in pyproject > default)."""
    cwd = Path.cwd()
    ini, ini_dir = read_pyproject_ini(cwd)
    options: dict[str, str | None] = {name: None for name in BY_NAME}
    return resolve_settings(options, os.environ, ini, cwd=cwd, ini_dir=ini_dir).db_path


def run(args: argparse.Namespace) -> int:
    db = args.db if args.db is not None else default_db()
    print(report(db, run=args.run, dataset=args.dataset, keyword=args.keyword, fmt=args.fmt))
    return 0
