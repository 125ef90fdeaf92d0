"""`vq-benchmark submit`: run a sweep as a SLURM job array, one shard per task, then a merge job that joins them.

The scripts are the templates in `slurm/` with their `#SBATCH` resources and their settings block rendered, so what
ran is saved beside the results (`<run-dir>/<run_id>/slurm/`) and can be resubmitted by hand. sbatch is always called
with an argument list, and every piece of user text placed in a script is shell-quoted, so nothing the user typed is
ever parsed by a shell except the --setup line, which exists to be run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from vq_benchmark.plugin.run_id import new_run_id
from vq_benchmark.plugin.settings import SettingError, read_pyproject_ini, resolve_settings
from vq_benchmark.reports.atomic import atomic_write_bytes, describe_os_error

USAGE_EXIT = 2
TEMPLATES_ENV = "VQ_SLURM_TEMPLATES"
ARRAY_TEMPLATE = "benchmark_array.sbatch"
MERGE_TEMPLATE = "merge.sbatch"
BLOCK_BEGIN = "# >>> settings"
BLOCK_END = "# <<< settings"
SBATCH_TIMEOUT_S = 120
# sbatch splits `#SBATCH` lines on whitespace and a newline would start a script line: resource values stay plain.
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:,@+=/-]+")
DIRECTIVE = re.compile(r"#SBATCH\s+--([A-Za-z-]+)")
ARRAY_RESOURCES = ("partition", "time", "mem", "cpus-per-task", "account", "qos")
MERGE_RESOURCES = ("partition", "account", "qos")  # the merge is light: the array's time/mem/cpus do not apply
SHARD_OPTIONS = ("--vq-shard-id", "--vq-num-shards")
SHARD_ENV = ("VQ_SHARD_ID", "VQ_NUM_SHARDS")


class SubmitError(Exception):
    """A problem the user can fix; printed as one `vq-benchmark: error:` line, exit 2."""


@dataclass(frozen=True)
class Plan:
    """Everything `submit` would do: two rendered scripts, where they go, and the sbatch argument lists."""

    run_id: str
    run_folder: Path
    script_dir: Path
    merged_db: Path
    shards: int
    array_script: str
    merge_script: str
    array_cmd: tuple[str, ...]
    merge_cmd: tuple[str, ...]  # the dependency is added once the array's job id is known

    @property
    def array_path(self) -> Path:
        return self.script_dir / ARRAY_TEMPLATE

    @property
    def merge_path(self) -> Path:
        return self.script_dir / MERGE_TEMPLATE


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `submit` on the `vq-benchmark` subparsers; `run` is its handler (also set as `func`)."""
    p = subparsers.add_parser(
        "submit",
        help="run the cases as a SLURM job array (one shard per task) plus a merge job",
        description="Render slurm/benchmark_array.sbatch and slurm/merge.sbatch into <run-dir>/<run_id>/slurm/, "
        "submit the array, then the merge with --dependency=afterany:<array>. Arguments after `--` go to pytest "
        "(e.g. -- --vq-dataset glove-50d -k pq).",
    )
    p.add_argument("--shards", type=int, required=True, metavar="N", help="array tasks, one shard each")
    p.add_argument("--throttle", type=int, metavar="K", help="at most K tasks at a time (--array=0-(N-1)%%K)")
    for name in ARRAY_RESOURCES:
        p.add_argument(f"--{name}", metavar=name.split("-")[0].upper(), help=f"sbatch --{name} of the array")
    p.add_argument("--setup", help="shell text each job runs first, e.g. 'module load python/3.11'")
    p.add_argument("--python", help="Python in the jobs (default: this one; python3 on PATH after --setup)")
    p.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra sbatch argument for both jobs, one token each: --sbatch-arg=--constraint=skylake",
    )
    p.add_argument("--merged-db", type=Path, help="merged database (default: <run-dir>/<run_id>/merged.db)")
    p.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch command lines; submit nothing")
    p.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="arguments for pytest vq_cases")
    _one_line_errors(p)
    p.set_defaults(func=run)
    return p


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Usage errors as one `vq-benchmark: error:` line (argparse's usage block would bury it), unknown options
    included: argparse leaves those to the top-level parser, which is not ours."""

    def error(message: str) -> NoReturn:
        print(f"vq-benchmark: error: submit: {message}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)

    parse_known_args = parser.parse_known_args

    def parse_strictly(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        parsed, extras = parse_known_args(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)} (pytest arguments go after `--`)")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_strictly  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    """`vq-benchmark submit`: exit 0 when both jobs are submitted (or printed), 2 on any error."""
    try:
        plan = build_plan(args, cwd=Path.cwd(), environ=os.environ)
        if args.dry_run:
            print(describe_dry_run(plan))
            return 0
        array_id, merge_id = submit(plan, _sbatch_exe())
    except (SubmitError, SettingError, OSError) as exc:
        print(f"vq-benchmark: error: {exc}", file=sys.stderr)
        return USAGE_EXIT
    print(f"run id: {plan.run_id}")
    print(f"array job: {array_id} ({plan.shards} tasks)")
    print(f"merge job: {merge_id} (after the array ends)")
    print(f"merged db: {plan.merged_db}")
    print(f"scripts and logs: {plan.script_dir}")
    print(f"a lost task i runs again alone with: sbatch --array=i {shlex.quote(str(plan.array_path))}")
    return 0


# --- planning ---------------------------------------------------------------------------------------------------


def build_plan(args: argparse.Namespace, *, cwd: Path, environ: Mapping[str, str]) -> Plan:
    """Check the arguments, resolve the run id and run dir as the shards will, and render both scripts."""
    _check_counts(args.shards, args.throttle)
    resources = _resources(args)
    sbatch_args = [_checked_sbatch_arg(a) for a in args.sbatch_arg]
    pytest_args, run_id, run_dir = _pytest_args_with_run(args.pytest_args, cwd, environ)
    run_folder = run_dir / run_id
    script_dir = run_folder / "slurm"
    merged_db = cwd / args.merged_db if args.merged_db else run_folder / "merged.db"
    python = args.python or ("python3" if args.setup else sys.executable)
    common = {"PYTHON": python, "SETUP": args.setup or "", "WORKDIR": str(cwd)}
    templates = template_dir(environ)
    merge_resources = {k: v for k, v in resources.items() if k in MERGE_RESOURCES}
    array_opts, merge_opts = _log_options(script_dir, resources, merge_resources)
    array_values = {**common, "PYTEST_ARGS": pytest_args, "NUM_SHARDS": str(args.shards)}
    merge_values = {**common, "MERGE_ARGS": [str(run_folder), "--db", str(merged_db)]}
    array_spec = f"0-{args.shards - 1}" + (f"%{args.throttle}" if args.throttle else "")
    return Plan(
        run_id=run_id,
        run_folder=run_folder,
        script_dir=script_dir,
        merged_db=merged_db,
        shards=args.shards,
        array_script=render(_read(templates / ARRAY_TEMPLATE), resources, array_values, run_id),
        merge_script=render(_read(templates / MERGE_TEMPLATE), merge_resources, merge_values, run_id),
        array_cmd=("sbatch", "--parsable", f"--array={array_spec}", *array_opts, *sbatch_args),
        merge_cmd=("sbatch", "--parsable", *merge_opts, *sbatch_args),
    )


def _resources(args: argparse.Namespace) -> dict[str, str]:
    """The array's #SBATCH values the user gave, checked (the template's defaults stand for the others)."""
    given = {name: getattr(args, name.replace("-", "_")) for name in ARRAY_RESOURCES}
    return {name: _checked_value(name, value) for name, value in given.items() if value is not None}


def _pytest_args_with_run(
    user_args: Sequence[str], cwd: Path, environ: Mapping[str, str]
) -> tuple[list[str], str, Path]:
    """The pytest arguments with an explicit run id and run dir (every task and the merge must agree on both)."""
    pytest_args = list(user_args)
    _check_no_shard_settings(pytest_args, environ)
    run_id, run_dir = _resolve_run(pytest_args, cwd, environ)
    if _option_value(pytest_args, "--vq-run-id") is None:
        pytest_args.append(f"--vq-run-id={run_id}")
    if _option_value(pytest_args, "--vq-run-dir") is None:  # explicit, in case the job does not get our env
        pytest_args.append(f"--vq-run-dir={run_dir}")
    return pytest_args, run_id, run_dir


def _log_options(script_dir: Path, array: dict[str, str], merge: dict[str, str]) -> tuple[list[str], list[str]]:
    """Job logs go beside the scripts: as #SBATCH --output lines (so a script resubmitted by hand logs there too),
    or, for a directory sbatch would split or misread, as sbatch arguments."""
    logs = str(script_dir).replace("%", "%%")  # a literal % in an sbatch filename pattern
    array_out, merge_out = f"--output={logs}/%x-%A_%a.out", f"--output={logs}/%x-%j.out"
    if not SAFE_VALUE.fullmatch(logs):
        return [array_out], [merge_out]
    array["output"] = array_out.split("=", 1)[1]
    merge["output"] = merge_out.split("=", 1)[1]
    return [], []


def _check_counts(shards: int, throttle: int | None) -> None:
    if shards < 1:
        raise SubmitError(f"submit: --shards must be at least 1, got {shards}")
    if throttle is not None and throttle < 1:
        raise SubmitError(f"submit: --throttle must be at least 1, got {throttle}")


def _checked_value(name: str, value: str) -> str:
    if not SAFE_VALUE.fullmatch(value):
        raise SubmitError(f"submit: --{name} {value!r}: expected letters, digits and _.:,@+=/- only")
    return value


def _checked_sbatch_arg(arg: str) -> str:
    """Each --sbatch-arg is one option token; a bare word would become sbatch's script argument."""
    if not arg.startswith("-") or "\n" in arg:
        raise SubmitError(f"submit: --sbatch-arg {arg!r}: expected one sbatch option such as --constraint=skylake")
    return arg


def _check_no_shard_settings(pytest_args: Sequence[str], environ: Mapping[str, str]) -> None:
    """Each task takes its shard from the array; a fixed shard would make every task run the same cases."""
    for option in SHARD_OPTIONS:
        if _option_value(pytest_args, option) is not None:
            raise SubmitError(f"submit: {option} is set by the job array for each task; remove it from the pytest args")
    for var in SHARD_ENV:
        if environ.get(var):
            raise SubmitError(f"submit: {var} is set in the environment and would give every task the same shard")


def _option_value(args: Sequence[str], option: str) -> str | None:
    """The last value of `option` in pytest arguments (`--opt V` or `--opt=V`), as pytest would take it."""
    found = None
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(option + "="):
            found = arg[len(option) + 1 :]
    return found


def _resolve_run(pytest_args: Sequence[str], cwd: Path, environ: Mapping[str, str]) -> tuple[str, Path]:
    """The run id and run dir exactly as a shard in `cwd` resolves them (option > env > ini > default)."""
    env = {k: v for k, v in environ.items() if not k.startswith("SLURM_")}  # this shell's job, not the shards'
    options = {name: _option_value(pytest_args, f"--vq-{name}") for name in ("run-id", "run-dir")}
    ini, ini_dir = read_pyproject_ini(cwd)
    settings = resolve_settings(options, env, ini, cwd=cwd, ini_dir=ini_dir)
    return settings.run_id or new_run_id(), settings.run_dir


def template_dir(environ: Mapping[str, str]) -> Path:
    """The `slurm/` templates: $VQ_SLURM_TEMPLATES, else the checkout this package is installed from (editable)."""
    configured = environ.get(TEMPLATES_ENV)
    folder = Path(configured) if configured else Path(__file__).resolve().parent.parent / "slurm"
    if not (folder / ARRAY_TEMPLATE).is_file():
        raise SubmitError(f"submit: no {ARRAY_TEMPLATE} in {folder} (set {TEMPLATES_ENV} to the slurm/ templates)")
    return folder


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise SubmitError(f"submit: cannot read template {path}: {exc.strerror or exc}") from None


# --- rendering --------------------------------------------------------------------------------------------------


def render(template: str, resources: Mapping[str, str], values: Mapping[str, str | Sequence[str]], run_id: str) -> str:
    """The template with its `#SBATCH` resources replaced or added and its settings block filled in."""
    lines = template.splitlines()
    lines = _render_directives(lines, resources)
    lines = _render_block(lines, values)
    lines.insert(1, f"# Rendered by `vq-benchmark submit` for run {run_id}.")
    return "\n".join(lines) + "\n"


def _render_directives(lines: list[str], resources: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    done: set[str] = set()
    last = 0
    for line in lines:
        match = DIRECTIVE.match(line)
        if match:
            name = match.group(1)
            if name in resources:
                line = f"#SBATCH --{name}={resources[name]}"
                done.add(name)
            last = len(out)
        out.append(line)
    added = [f"#SBATCH --{name}={value}" for name, value in resources.items() if name not in done]
    return out[: last + 1] + added + out[last + 1 :]


def _render_block(lines: list[str], values: Mapping[str, str | Sequence[str]]) -> list[str]:
    begin = next((i for i, line in enumerate(lines) if line.startswith(BLOCK_BEGIN)), None)
    end = next((i for i, line in enumerate(lines) if line.startswith(BLOCK_END)), None)
    if begin is None or end is None or end < begin:
        raise SubmitError(f"submit: template has no '{BLOCK_BEGIN}' ... '{BLOCK_END}' block")
    return lines[: begin + 1] + [_assignment(k, v) for k, v in values.items()] + lines[end:]


def _assignment(name: str, value: str | Sequence[str]) -> str:
    """`NAME='value'` or `NAME=('a' 'b')`: quoted so that the shell reads the text back unchanged."""
    if isinstance(value, str):
        return f"{name}={shlex.quote(value)}"
    return f"{name}=(" + " ".join(shlex.quote(v) for v in value) + ")"


# --- submitting -------------------------------------------------------------------------------------------------


def describe_dry_run(plan: Plan) -> str:
    """The scripts as they would be written, then the two sbatch command lines (runnable once they are)."""
    parts = [
        f"# run id: {plan.run_id} (dry run: nothing written, nothing submitted)",
        f"# ==> {plan.array_path} <==",
        plan.array_script,
        f"# ==> {plan.merge_path} <==",
        plan.merge_script,
        "# sbatch command lines:",
        f"array=$({shlex.join([*plan.array_cmd, str(plan.array_path)])})",
        shlex.join(list(plan.merge_cmd)) + ' --dependency=afterany:"$array" ' + shlex.quote(str(plan.merge_path)),
        f"# merged db: {plan.merged_db}",
    ]
    return "\n".join(parts)


def _sbatch_exe() -> str:
    exe = shutil.which("sbatch")
    if not exe:
        raise SubmitError("submit: sbatch not found on PATH (is this a SLURM login node? try --dry-run)")
    return exe


def write_scripts(plan: Plan) -> None:
    for path, text in ((plan.array_path, plan.array_script), (plan.merge_path, plan.merge_script)):
        try:
            plan.script_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, text.encode())
            path.chmod(0o755)
        except OSError as exc:
            raise SubmitError(f"submit: {describe_os_error(path, exc)}") from None


def submit(plan: Plan, sbatch: str) -> tuple[str, str]:
    """Write the scripts, submit the array, then the merge after it; the two job ids."""
    write_scripts(plan)
    array_id = _sbatch([sbatch, *plan.array_cmd[1:], str(plan.array_path)], "the array")
    merge_cmd = [sbatch, *plan.merge_cmd[1:], f"--dependency=afterany:{array_id}", str(plan.merge_path)]
    try:
        merge_id = _sbatch(merge_cmd, "the merge job")
    except SubmitError as exc:
        raise SubmitError(
            f"{exc} (array job {array_id} is submitted: scancel {array_id}, or sbatch the merge)"
        ) from None
    return array_id, merge_id


def _sbatch(cmd: list[str], what: str) -> str:
    """Run sbatch --parsable (an argument list, no shell) and return the job id it prints."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SubmitError(f"submit: sbatch for {what} did not run: {exc}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SubmitError(f"submit: sbatch for {what} failed (exit {proc.returncode}): {why}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SubmitError(f"submit: sbatch for {what} printed {proc.stdout.strip()!r}, expected a job id")
    return job_id
