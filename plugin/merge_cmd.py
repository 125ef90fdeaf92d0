"""`vq-benchmark merge RUN_DIR... --db OUT.db [--rerun-file FILE]`: join a sharded run, say what is left to do.

The merge job of a SLURM array runs this after the shards; its exit status is what `--dependency=afterok` and CI
see, so it is 0 only for a complete, consistent run with no failed case. The table comes first and the verdict
last, so the verdict is what stays on screen after a long table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vq_benchmark.reports.atomic import describe_os_error
from vq_benchmark.reports.errors import ReportError, StoreError
from vq_benchmark.reports.merge import MergeResult, merge_runs, write_rerun_file
from vq_benchmark.reports.summary import summary_table

COMPLETE_EXIT, INCOMPLETE_EXIT, USAGE_EXIT = 0, 1, 2
RERUN_NAME = "rerun-cases.txt"
LISTED_IDS = 20


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `merge` on the `vq-benchmark` subcommands; `args.func` is `run`."""
    p = subparsers.add_parser(
        "merge",
        help="join the shards of a run into one SQLite file; list missing and failed cases",
        description="Join the shard folders of one run into one database and check that every shard and case "
        "is there. Exit 0: complete and consistent; 1: something missing, failed or inconsistent "
        "(a rerun file is written for missing and failed cases); 2: usage error.",
    )
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a <run-dir>/<run_id> folder")
    p.add_argument("--db", required=True, type=Path, metavar="OUT.db", help="database the rows are merged into")
    p.add_argument(
        "--rerun-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"argument file for `pytest vq_cases @FILE` (default: <first RUN_DIR>/{RERUN_NAME})",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Merge, print the summary and the verdict; 0 complete, 1 incomplete, 2 usage error (one line on stderr)."""
    try:
        result = merge_runs(args.run_dirs, args.db)
    except (ReportError, StoreError) as exc:
        return _usage_error(str(exc))
    print(summary_table(list(result.rows)))
    print()
    _print_verdict(result)
    if not result.rerun_cases:
        return COMPLETE_EXIT if result.ok else INCOMPLETE_EXIT
    rerun_file = args.rerun_file or Path(args.run_dirs[0]) / RERUN_NAME
    try:
        write_rerun_file(rerun_file, result.rerun_cases, rerun_settings(result))
    except OSError as exc:
        return _usage_error(f"--rerun-file: {describe_os_error(rerun_file, exc)}")
    print(f"wrote {rerun_file}; rerun its {len(result.rerun_cases)} case(s) with: pytest vq_cases @{rerun_file}")
    return INCOMPLETE_EXIT


# What defines the cases' data and training, so the rerun measures the same thing (paths are absolute).
RERUN_SETTINGS = ("dataset", "datasets-file", "data-dir", "cache-dir", "codebooks-dir", "sweep", "seed", "train-size")


def rerun_settings(result: MergeResult) -> list[str]:
    """The options that send a rerun's rows into this run (its own rerun-<stamp>/ folder, which the next merge
    reads): without them the rerun would be a new run under a new id."""
    if result.run_id is None or result.run_folder is None:
        return []
    same_data = [
        f"--vq-{name}={value}"
        for name in RERUN_SETTINGS
        if (value := result.settings.get(name)) not in (None, "") and "\n" not in str(value)
    ]
    return [f"--vq-run-id={result.run_id}", f"--vq-run-dir={result.run_folder.parent.resolve()}", *same_data]


def _usage_error(message: str) -> int:
    print(f"vq-benchmark: error: {message}", file=sys.stderr)
    return USAGE_EXIT


def _print_verdict(result: MergeResult) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in result.status_counts.items()) or "no rows"
    reruns = f" and {result.reruns_merged} rerun(s)" if result.reruns_merged else ""
    print(
        f"merged run {result.run_id}: {result.rows_written} row(s) from {result.shards_merged} shard(s){reruns} "
        f"into {result.out_db} ({counts})"
    )
    for note in result.notes:
        print(f"note: {note}")
    for problem in result.problems:
        print(f"problem: {problem}")
    for word, ids in (("missing", result.missing), ("failed", result.failed)):
        if ids:
            print(f"{word}: {_listing(ids)}")
    if result.missing_shards and not result.lost_cases_known:
        ids = ",".join(map(str, result.missing_shards))
        print(f"the cases of missing shard(s) {ids} are unknown here, so not in the rerun file: run those shards again")
    if result.ok and not result.failed:
        print("complete: every selected case has a row and none failed")


def _listing(ids: Sequence[str]) -> str:
    if len(ids) <= LISTED_IDS:
        return f"{len(ids)} case(s): {', '.join(ids)}"
    return f"{len(ids)} cases, the first {LISTED_IDS}: {', '.join(ids[:LISTED_IDS])}"
