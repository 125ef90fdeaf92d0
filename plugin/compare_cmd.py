"""`vq-benchmark compare BASE NEW [--tolerance SPEC] [--metrics a,b] [--fail-on-regression] [--all] [-k EXPR]
[--dataset NAME] [--format F]`: what changed between two runs, case by case, judged against tolerances, so that a CI
job can fail when a codec gets worse."""

from __future__ import annotations

import argparse
import sys

from vq_benchmark.plugin.report_cmd import default_db
from vq_benchmark.reports.compare import (
    DEFAULT_METRICS,
    QUALITY_ABS_TOLERANCE,
    compare,
    parse_metrics,
    parse_tolerances,
    render,
    resolve_side,
    summary,
)
from vq_benchmark.reports.report_table import FORMATS

REGRESSION_EXIT = 1
_SIDE_HELP = "a results database (its latest run), DB:RUN, or a run id of the default database (db-path setting)"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `compare` on the `vq-benchmark` subcommands; `args.func` is `run`."""
    p = subparsers.add_parser(
        "compare",
        help="compare two runs case by case and flag regressions beyond tolerance",
        description="Match the cases of two runs by case id and judge each metric: regressed or improved when it "
        "moved beyond its tolerance in the registry's direction of better, else same; missing when NEW lost a "
        "value; a case that turned failed or skipped regressed. Default tolerances: "
        f"{QUALITY_ABS_TOLERANCE:g} absolute for quality metrics (a seeded run reproduces them exactly); "
        "timings (qps, train_s, ...) are judged only with a --tolerance for them (e.g. qps=10%), otherwise a "
        "change is shown as changed and never regresses. Exit 1 with --fail-on-regression when a case "
        "regressed or a BASE case is absent from NEW; exit 2 with one line on a usage error.",
    )
    p.add_argument("base", metavar="BASE", help=_SIDE_HELP)
    p.add_argument("new", metavar="NEW", help=_SIDE_HELP)
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="SPEC",
        help="NAME=NUMBER (absolute) or NAME=NUMBER%% (relative to base), comma-joined or repeated, "
        "e.g. recall_at_10=0.005,qps=20%%",
    )
    p.add_argument(
        "--metrics", default=None, metavar="A,B,...", help=f"metrics to compare (default: {','.join(DEFAULT_METRICS)})"
    )
    p.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a case regressed or a BASE case is absent from NEW",
    )
    p.add_argument("--all", dest="show_all", action="store_true", help="show every line, also those judged same")
    p.add_argument("--dataset", default=None, metavar="NAME", help="only this dataset's cases")
    p.add_argument(
        "-k", dest="keyword", default=None, metavar="EXPR", help="pytest -k expression over case ids, e.g. 'pq and M8'"
    )
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="simple", help="output format (default: simple)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    tolerances = parse_tolerances(args.tolerance)  # options first: a bad one is reported before any file is read
    metrics = parse_metrics(args.metrics)
    base = resolve_side(args.base, default_db, "BASE")
    new = resolve_side(args.new, default_db, "NEW")
    result = compare(base, new, metrics=metrics, tolerances=tolerances, dataset=args.dataset, keyword=args.keyword)
    print(render(result, args.fmt, show_all=args.show_all))
    if args.fmt == "csv":  # keep the CSV parseable; the verdict still reaches a CI log
        print(summary(result), file=sys.stderr)
    return REGRESSION_EXIT if args.fail_on_regression and result.regressed else 0
