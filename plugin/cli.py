"""`vq-benchmark` command line. Settings resolve exactly as in pytest (option > env > ini in pyproject > default).

Subcommands:
  run [--dataset NAME] [--method EXPR] [pytest args...]   run the shipped cases from any directory
  datasets [--datasets-file F] [--data-dir D]              list the datasets --vq-dataset accepts
  precompute-gt (--dataset NAME | --vectors-path B ...)    exact ground truth once, streamed, at BLAS speed
  merge-gt PART... --output-path OUT                       join --shard partials of precompute-gt exactly
  embed --collection C --queries Q --out DIR               embed MSMARCO-style TSVs (all-MiniLM-L6-v2), resumable
  merge RUN_DIR... --db OUT.db [--rerun-file F]           join shard results into one database, list what is missing
  submit --shards N [sbatch options] -- [pytest args]      a SLURM job array of shards plus a merge job
  report [DB] [--run RUN_ID|latest|all] [-k EXPR] [--format F]  a run's table, Pareto-optimal cases marked;
         [--plots DIR] [--plot SPEC]... [--html FILE]      also its plots and a self-contained HTML page
  compare BASE NEW [--tolerance SPEC] [--fail-on-regression]  two runs case by case, regressions flagged
  rebuild-json RUN_DIR [RUN_DIR...]                        rebuild results.json from results.jsonl (after a crash)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from vq_benchmark.plugin import compare_cmd, embed_cmd, gt_cmd, merge_cmd, report_cmd, submit
from vq_benchmark.plugin.settings import BY_NAME, SettingError, Settings, read_pyproject_ini, resolve_settings

CASES_PACKAGE = "vq_benchmark.vq_cases"
USAGE_EXIT = 2


def _settings(args: argparse.Namespace) -> Settings:
    cwd = Path.cwd()
    ini, ini_dir = read_pyproject_ini(cwd)
    options = {name: getattr(args, BY_NAME[name].dest, None) for name in BY_NAME}
    return resolve_settings(options, os.environ, ini, cwd=cwd, ini_dir=ini_dir)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from vq_benchmark.fixtures.registry import known_datasets

    s = _settings(args)
    specs = known_datasets(s.datasets_file, s.data_dir)
    rows = [
        (spec.name, spec.metric if spec.metric_given else "(file's)", spec.origin, spec.description)
        for spec in specs.values()
    ]
    print(tabulate(rows, headers=["dataset", "metric", "declared in", "description"], tablefmt="simple"))
    return 0


def _cmd_rebuild_json(args: argparse.Namespace) -> int:
    from vq_benchmark.reports.json_report import rebuild_json_report
    from vq_benchmark.reports.jsonl import run_logs

    for run_dir in args.run_dirs:
        if not run_logs(Path(run_dir)):
            raise SettingError(f"rebuild-json: {run_dir} holds no results.jsonl (expected a <run-dir>/<run_id> folder)")
        print(rebuild_json_report(Path(run_dir)))
    return 0


def pytest_args_for_run(extra: Sequence[str]) -> list[str]:
    """Translate `vq-benchmark run` arguments to pytest's: the seeds' --dataset/--method shorthands become
    --vq-dataset and -k (joined with any -k the user also gave); everything else passes through."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dataset")
    parser.add_argument("--method", action="append", default=[])
    parser.add_argument("-k", dest="keyword", action="append", default=[])
    known, rest = parser.parse_known_args(list(extra))
    args = ["--pyargs", CASES_PACKAGE, "--import-mode=importlib", *rest]
    if known.dataset:
        args.append(f"--vq-dataset={known.dataset}")
    methods = " or ".join(f"({m})" for m in known.method)
    keywords = [f"({k})" for k in known.keyword] + ([f"({methods})"] if methods else [])
    if keywords:
        args += ["-k", " and ".join(keywords)]
    return args


def run(extra: Sequence[str]) -> int:
    """`vq-benchmark run ...`: pytest on the installed case package, in this process."""
    import pytest

    return int(pytest.main(pytest_args_for_run(extra)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vq-benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="run the shipped benchmark cases (pytest --pyargs vq_benchmark.vq_cases ...)",
        description="Any pytest or --vq-* option passes through; --dataset NAME = --vq-dataset NAME, "
        "--method EXPR = -k EXPR.",
    )
    p.add_argument("pytest_args", nargs="*", help="--dataset, --method, and any pytest arguments")

    p = sub.add_parser("datasets", help="list the datasets --vq-dataset accepts")
    for name in ("datasets-file", "data-dir"):
        setting = BY_NAME[name]
        p.add_argument(f"--{name}", setting.option, dest=setting.dest, default=None, help=setting.help)
    p.set_defaults(func=_cmd_datasets)

    gt_cmd.add_parser(sub)  # precompute-gt and merge-gt

    merge_cmd.add_parser(sub)
    embed_cmd.add_parser(sub)
    submit.add_parser(sub)
    report_cmd.add_parser(sub)
    compare_cmd.add_parser(sub)

    p = sub.add_parser("rebuild-json", help="rebuild <run-dir>/<run_id>/results.json from its results.jsonl")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a <run-dir>/<run_id> folder")
    p.set_defaults(func=_cmd_rebuild_json)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any faiss import; see plugin.pytest_plugin
    if argv[:1] == ["run"]:  # everything after `run` belongs to pytest, options included
        return run(argv[1:])
    args = build_parser().parse_args(argv)
    from vq_benchmark.fixtures.registry import DatasetError
    from vq_benchmark.reports.errors import ReportError

    try:
        return int(args.func(args))
    except (DatasetError, SettingError, ReportError) as exc:
        print(f"vq-benchmark: error: {exc}", file=sys.stderr)
        return USAGE_EXIT


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
