"""`vq-benchmark` command line. Settings resolve exactly as in pytest (option > env > ini in pyproject > default)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from vq_benchmark.fixtures.registry import DatasetError, known_datasets
from vq_benchmark.plugin.settings import BY_NAME, SettingError, read_pyproject_ini, resolve_settings


def _settings(args: argparse.Namespace) -> dict:
    cwd = Path.cwd()
    ini, ini_dir = read_pyproject_ini(cwd)
    options = {name: getattr(args, BY_NAME[name].dest, None) for name in BY_NAME}
    return resolve_settings(options, os.environ, ini, cwd=cwd, ini_dir=ini_dir)


def _cmd_datasets(args: argparse.Namespace) -> int:
    s = _settings(args)
    specs = known_datasets(s["datasets-file"].value, s["data-dir"].value)
    rows = [(spec.name, spec.metric, spec.origin, spec.description) for spec in specs.values()]
    print(tabulate(rows, headers=["dataset", "metric", "declared in", "description"], tablefmt="simple"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vq-benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("datasets", help="list the datasets --vq-dataset accepts")
    for name in ("datasets-file", "data-dir"):
        setting = BY_NAME[name]
        p.add_argument(f"--{name}", setting.option, dest=setting.dest, default=None, help=setting.help)
    p.set_defaults(func=_cmd_datasets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DatasetError, SettingError) as exc:
        print(f"vq-benchmark: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
