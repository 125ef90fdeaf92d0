"""SLURM: the sbatch templates, `vq-benchmark submit`, and real jobs on a single-node cluster.

The rendering and submit tests need no cluster: a fake `sbatch` on PATH records its argument list. The cluster
tests run real jobs (`bash slurm/local-cluster.sh up` first; .ci/run does it). Without a cluster they skip with the
reason locally, but fail when CI is set, so CI can never pass by silently skipping them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from vq_benchmark.plugin import submit

REPO = Path(__file__).resolve().parent.parent
SLURM_DIR = REPO / "slurm"
TEMPLATES = ("benchmark_array.sbatch", "merge.sbatch", "precompute_gt.sbatch")
HOSTILE = 'it\'s "quoted" $(touch PWNED) `touch PWNED` ${HOME} ; touch PWNED'
JOB_TIMEOUT_S = 240
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
SWEEP = ["--vq-dataset", "dummy-small", "-k", "sq", "--vq-threads", "1"]


# --- helpers ----------------------------------------------------------------------------------------------------


def run_submit(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`vq-benchmark submit ARGV` in this process, through a parser of its own (independent of cli.py's wiring)."""
    parser = argparse.ArgumentParser(prog="vq-benchmark")
    submit.add_parser(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(["submit", *argv])
        rc = args.func(args)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def fake_sbatch(bin_dir: Path, log: Path, *, fail: str | None = None) -> None:
    """An `sbatch` that appends its argv (JSON, one call a line) to `log` and prints the next job id."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    body = f"""#!{sys.executable}
import json, sys
log = {str(log)!r}
with open(log, "a") as f:
    f.write(json.dumps(sys.argv) + "\\n")
if {fail!r} is not None:
    sys.stderr.write({fail!r} + "\\n")
    sys.exit(1)
n = sum(1 for _ in open(log))
print(f"{{1000 + n}};vqlocal")
"""
    exe = bin_dir / "sbatch"
    exe.write_text(body)
    exe.chmod(0o755)


def sbatch_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def fake_python(path: Path, record: Path) -> Path:
    """A stand-in for the jobs' Python that records the argument list and environment it was given."""
    path.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'setup': os.environ.get('SETUP_RAN'), 'cwd': os.getcwd()}}, "
        f"open({str(record)!r}, 'w'))\n"
    )
    path.chmod(0o755)
    return path


def rendered_block(script: str, name: str) -> str:
    return next(line for line in script.splitlines() if line.startswith(f"{name}="))


def clean_env(**extra: str) -> dict[str, str]:
    """This test process's environment without pytest/xdist, vq-benchmark and SLURM variables: a job submitted
    from it must behave as one submitted from a user's shell (sbatch exports the environment to the job)."""
    drop = ("PYTEST_", "VQ_", "SLURM_", "COV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


# --- templates --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_parse_as_bash_and_document_their_resources(name: str) -> None:
    """Hand use: each template is a valid script with default #SBATCH resources and a settings block."""
    text = (SLURM_DIR / name).read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    for resource in ("--job-name=", "--time=", "--mem=", "--cpus-per-task=", "--output="):
        assert f"#SBATCH {resource}" in text
    assert submit.BLOCK_BEGIN in text and submit.BLOCK_END in text
    proc = subprocess.run(["bash", "-n", str(SLURM_DIR / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_array_template_by_hand_passes_script_arguments_to_pytest(tmp_path: Path) -> None:
    """`sbatch benchmark_array.sbatch ARGS` runs `python -m pytest --pyargs vq_benchmark.vq_cases ARGS` in the
    submitting directory, after VQ_SETUP; VQ_PYTEST_ARGS adds whitespace-split arguments."""
    record = tmp_path / "record.json"
    env = clean_env(
        VQ_PYTHON=str(fake_python(tmp_path / "python", record)),
        VQ_SETUP="export SETUP_RAN=yes",
        VQ_PYTEST_ARGS="--vq-dataset dummy-small",
        SLURM_SUBMIT_DIR=str(tmp_path),
    )
    script = SLURM_DIR / "benchmark_array.sbatch"
    proc = subprocess.run(["bash", str(script), "-k", "pq and not opq"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(record.read_text())
    assert got["argv"][:4] == ["-m", "pytest", "--pyargs", "vq_benchmark.vq_cases"]
    assert got["argv"][-4:] == ["--vq-dataset", "dummy-small", "-k", "pq and not opq"]
    assert got["setup"] == "yes" and Path(got["cwd"]) == tmp_path


# --- submit without a cluster -----------------------------------------------------------------------------------


def test_dry_run_prints_resources_array_and_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a dry run needs no sbatch
    resources = ["--time", "0:05:00", "--mem", "1G", "--cpus-per-task", "2", "--partition", "debug"]
    resources += ["--account", "acct1", "--qos", "short"]
    argv = ["--shards", "3", "--throttle", "1", *resources, "--dry-run", "--", *SWEEP, "--vq-run-id", "dry1"]
    rc, out, err = run_submit(argv, capsys)
    assert rc == 0, err
    for directive in ("time=0:05:00", "mem=1G", "cpus-per-task=2", "partition=debug", "account=acct1", "qos=short"):
        assert f"#SBATCH --{directive}\n" in out
    assert "--array=0-2%1" in out
    assert '--dependency=afterany:"$array"' in out
    assert f"merged db: {tmp_path / 'results/runs/dry1/merged.db'}" in out
    assert not (tmp_path / "results").exists(), "a dry run writes nothing"


def test_user_text_in_scripts_is_quoted_not_executed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pytest argument with spaces, quotes, `$(...)`, backticks and `;` reaches pytest unchanged and runs
    nothing; the --setup line, which exists to be run, runs."""
    monkeypatch.chdir(tmp_path)
    record = tmp_path / "record.json"
    python = fake_python(tmp_path / "python", record)
    argv = ["--shards", "2", "--setup", "export SETUP_RAN=yes", "--python", str(python), "--dry-run"]
    rc, out, err = run_submit([*argv, "--", "-k", HOSTILE, "--vq-run-id", "q1"], capsys)
    assert rc == 0, err
    script = out.split("<==\n", 1)[1].split("\n# ==> ", 1)[0]
    args_line = rendered_block(script, "PYTEST_ARGS")
    assert shlex.quote(HOSTILE) in args_line
    path = tmp_path / "array.sbatch"
    path.write_text(script)
    env = clean_env(SLURM_ARRAY_TASK_ID="1")
    proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(record.read_text())
    assert got["argv"][got["argv"].index("-k") + 1] == HOSTILE
    assert got["argv"][-2:] == ["--vq-shard-id=1", "--vq-num-shards=2"], "task i is shard i of N"
    assert got["setup"] == "yes"
    assert not list(tmp_path.rglob("PWNED")), "a pytest argument was executed by the shell"


def test_submit_calls_sbatch_with_argument_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The array first, then the merge with --dependency=afterany:<array id>; scripts land in the run folder."""
    log = tmp_path / "sbatch-calls.jsonl"
    fake_sbatch(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("VQ_RUN_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_submit(
        ["--shards", "3", "--sbatch-arg=--constraint=fast", "--", *SWEEP, "--vq-run-id=r1"], capsys
    )
    assert rc == 0, err
    folder = tmp_path / "results/runs/r1"
    array, merge = sbatch_calls(log)
    assert array[1:] == ["--parsable", "--array=0-2", "--constraint=fast", str(folder / "slurm/benchmark_array.sbatch")]
    assert merge[-2:] == ["--dependency=afterany:1001", str(folder / "slurm/merge.sbatch")]
    assert "--constraint=fast" in merge
    assert "array job: 1001" in out and "merge job: 1002" in out and "run id: r1" in out
    assert f"merged db: {folder / 'merged.db'}" in out
    merge_script = (folder / "slurm/merge.sbatch").read_text()
    assert rendered_block(merge_script, "MERGE_ARGS") == f"MERGE_ARGS=({folder} --db {folder / 'merged.db'})"
    array_script = (folder / "slurm/benchmark_array.sbatch").read_text()
    assert f"#SBATCH --output={folder}/slurm/%x-%A_%a.out" in array_script
    assert rendered_block(array_script, "PYTHON") == f"PYTHON={shlex.quote(sys.executable)}"


def test_submit_generates_a_run_id_and_passes_it_to_every_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VQ_RUN_ID", raising=False)
    rc, out, err = run_submit(["--shards", "2", "--dry-run", "--", *SWEEP], capsys)
    assert rc == 0, err
    run_id = re.search(r"# run id: (\S+)", out)[1]  # type: ignore[index]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_id)
    assert f"--vq-run-id={run_id}" in out and f"--vq-run-dir={tmp_path / 'results/runs'}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shards", "0"], "--shards must be at least 1"),
        (["--shards", "two"], "invalid int value"),
        (["--shards", "2", "--throttle", "0"], "--throttle must be at least 1"),
        (["--shards", "2", "--time", "1:00\n#SBATCH --x"], "--time"),
        (["--shards", "2", "--sbatch-arg=constraint"], "--sbatch-arg"),
        (["--shards", "2", "--bogus"], "unrecognized arguments"),
        (["--shards", "2", "--", "--vq-shard-id", "1"], "--vq-shard-id is set by the job array"),
        (["--shards", "2", "--", "--vq-run-id", "../up"], "--vq-run-id"),
        (["--shards", "2"], "sbatch not found on PATH"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    rc, _, err = run_submit(argv, capsys)
    assert rc == 2
    assert err.startswith("vq-benchmark: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


def test_sbatch_failure_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_sbatch(tmp_path / "bin", tmp_path / "calls", fail="sbatch: error: invalid partition specified: nope")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_submit(["--shards", "2", "--partition", "nope", "--", *SWEEP], capsys)
    assert rc == 2 and out == ""
    assert err == "vq-benchmark: error: submit: sbatch for the array failed (exit 1): " + (
        "sbatch: error: invalid partition specified: nope\n"
    )


def test_cli_wires_submit() -> None:
    """`vq-benchmark submit` is this module's parser and handler (the wiring lives in plugin/cli.py)."""
    from vq_benchmark.plugin.cli import build_parser

    args = build_parser().parse_args(["submit", "--shards", "2", "--dry-run", "--", "-k", "sq"])
    assert args.func is submit.run and args.pytest_args == ["-k", "sq"]


# --- a real cluster ---------------------------------------------------------------------------------------------


@functools.cache  # once per process: sinfo takes ~10 s to give up on a controller that is down
def _cluster_problem() -> str | None:
    if not shutil.which("sbatch"):
        return "sbatch is not on PATH (start one with: bash slurm/local-cluster.sh up)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer: {exc}"
    states = set(proc.stdout.split())
    if proc.returncode != 0 or not states & {"idle", "mixed", "allocated"}:
        return f"no usable SLURM node (sinfo: {proc.stdout.strip() or proc.stderr.strip()})"
    return None


@pytest.fixture
def cluster() -> Iterator[list[str]]:
    """A live SLURM; yields a list the test appends its job ids to, which are cancelled if still queued at the end."""
    problem = _cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a SLURM cluster: {problem}")
        pytest.skip(problem)
    jobs: list[str] = []
    yield jobs
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, check=False)


def job_states(job_id: str) -> dict[str, tuple[str, str]]:
    """JobId -> (JobState, ExitCode) for a job or every task of an array, from `scontrol show job -o`."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=False)
    out = {}
    for line in proc.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        task = fields.get("ArrayTaskId")
        key = f"{fields.get('ArrayJobId')}_{task}" if task else fields.get("JobId", "?")
        out[key] = (fields.get("JobState", "?"), fields.get("ExitCode", "?"))
    return out


def wait_for(job_ids: Sequence[str], logs: Path | None = None, timeout: float = JOB_TIMEOUT_S) -> dict:
    """Poll until every job (and array task) has ended; fail with their states and logs on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        states = {k: v for j in job_ids for k, v in job_states(j).items()}
        if states and all(state in DONE_STATES for state, _ in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"jobs {job_ids} not done after {timeout:.0f}s: {states}\n{read_logs(logs)}")
        time.sleep(0.5)


def read_logs(folder: Path | None) -> str:
    if folder is None or not folder.is_dir():
        return ""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("*.out")))


def cases_in(db: Path) -> dict[str, tuple[str, float | None, int | None]]:
    """case_id -> (status, recall_at_10, code_bytes); asserts one row per case."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT case_id, status, recall_at_10, code_bytes FROM results").fetchall()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"a case has more than one row in {db}: {sorted(ids)}"
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def vq_submit(args: Sequence[str], cwd: Path) -> dict[str, str]:
    """`vq-benchmark submit ARGS` as a user runs it; the printed `key: value` lines."""
    exe = Path(sys.executable).with_name("vq-benchmark")
    proc = subprocess.run([str(exe), "submit", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)


def job_id(value: str) -> str:
    return value.split()[0]


def run_pytest_cases(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "vq_benchmark.vq_cases", "--import-mode=importlib"]
    cmd += ["-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)


def paths_for(tmp: Path, tag: str) -> list[str]:
    """Every output of a run under `tmp`; `tag` keeps the codebooks apart, so a run cannot reuse another's codecs."""
    return [
        f"--vq-run-dir={tmp / 'runs'}",
        f"--vq-db-path={tmp / (tag + '.db')}",
        f"--vq-codebooks-dir={tmp / ('codebooks-' + tag)}",
        f"--vq-cache-dir={tmp / 'cache'}",
    ]


def test_array_tasks_see_their_task_id(cluster: list[str], tmp_path: Path) -> None:
    script = tmp_path / "task.sh"
    script.write_text(
        '#!/bin/bash\necho "$SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT" > "task-$SLURM_ARRAY_TASK_ID"\n'
    )
    cmd = ["sbatch", "--parsable", "--array=0-2", f"--chdir={tmp_path}", f"--output={tmp_path}/%A_%a.out", str(script)]
    array = subprocess.run(cmd, capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()
    cluster.append(array)
    states = wait_for([array], tmp_path)
    assert {state for state, _ in states.values()} == {"COMPLETED"}, states
    for task in range(3):
        assert (tmp_path / f"task-{task}").read_text() == f"{task} 3\n"


def test_submit_shards_then_merge_equals_an_unsharded_run(cluster: list[str], tmp_path: Path) -> None:
    """Three shards and their merge hold exactly the rows one unsharded session measures."""
    got = vq_submit(["--shards", "3", "--", *SWEEP, *paths_for(tmp_path, "sharded")], tmp_path)
    array, merge = job_id(got["array job"]), job_id(got["merge job"])
    cluster += [array, merge]
    logs = tmp_path / "runs" / got["run id"] / "slurm"
    states = wait_for([array, merge], logs)
    assert all(state == "COMPLETED" for state, _ in states.values()), f"{states}\n{read_logs(logs)}"
    merged = cases_in(Path(got["merged db"]))

    ref = run_pytest_cases([*SWEEP, "--vq-run-id=unsharded", *paths_for(tmp_path, "unsharded")], tmp_path)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    reference = cases_in(tmp_path / "unsharded.db")
    assert merged.keys() == reference.keys() and merged, f"{sorted(merged)} != {sorted(reference)}"
    assert all(status == "ok" for status, _, _ in merged.values()), merged
    assert merged == reference


def submit_and_cancel_last_task(cluster: list[str], tmp: Path, run_id: str) -> tuple[dict[str, str], list[str], str]:
    """Three throttled shards whose last task is cancelled while still pending; waits for the array and the merge
    (which runs anyway: afterany) and checks that the merge failed. Returns submit's lines, the run settings and
    the merge log."""
    settings = [*SWEEP, f"--vq-run-id={run_id}", *paths_for(tmp, "sharded")]
    got = vq_submit(["--shards", "3", "--throttle", "1", "--", *settings], tmp)
    array, merge = job_id(got["array job"]), job_id(got["merge job"])
    cluster += [array, merge]
    subprocess.run(["scancel", f"{array}_2"], check=True, capture_output=True)  # throttled: cannot have started
    logs = tmp / "runs" / run_id / "slurm"
    states = wait_for([array, merge], logs)
    # a pending task cancelled out of its array leaves no record of its own; tasks 0 and 1 ran
    assert states.get(f"{array}_2", ("CANCELLED",))[0] == "CANCELLED", states
    assert states[f"{array}_0"][0] == states[f"{array}_1"][0] == "COMPLETED", f"{states}\n{read_logs(logs)}"
    merge_log = read_logs(logs)
    assert states[merge] == ("FAILED", "1:0"), f"the merge should exit 1: {states}\n{merge_log}"
    return got, settings, merge_log


def merge_again(folder: Path, merged_db: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("vq-benchmark")
    cmd = [str(exe), "merge", str(folder), "--db", str(merged_db)]
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env())


def test_cancelled_task_resubmitted_alone_completes_the_run(cluster: list[str], tmp_path: Path) -> None:
    """The rendered array script pins the shard count: `sbatch --array=2 <script>` runs exactly the lost shard 2
    of 3, after which the merge exits 0 with every case ok."""
    got, _, merge_log = submit_and_cancel_last_task(cluster, tmp_path, "resubmit")
    assert "shard 2 of 3 is missing" in merge_log, merge_log
    folder = tmp_path / "runs" / "resubmit"
    cmd = ["sbatch", "--parsable", "--array=2", str(folder / "slurm" / "benchmark_array.sbatch")]
    again = subprocess.run(cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, check=True)
    cluster.append(again.stdout.strip())
    states = wait_for([again.stdout.strip()], folder / "slurm")
    assert {state for state, _ in states.values()} == {"COMPLETED"}, f"{states}\n{read_logs(folder / 'slurm')}"
    merged = merge_again(folder, Path(got["merged db"]))
    assert merged.returncode == 0, merged.stdout[-3000:] + merged.stderr
    rows = cases_in(Path(got["merged db"]))
    assert len(rows) == 3 and all(status == "ok" for status, _, _ in rows.values()), rows


def test_cancelled_task_is_named_by_merge_and_a_rerun_completes_it(cluster: list[str], tmp_path: Path) -> None:
    """A task cancelled before it ran: the merge exits 1 naming its cases and writes a rerun file;
    `pytest vq_cases @<rerun file>` with the same settings runs them, and merging again exits 0."""
    got, settings, merge_log = submit_and_cancel_last_task(cluster, tmp_path, "cancel-test")
    folder = tmp_path / "runs" / "cancel-test"
    rerun_file = folder / "rerun-cases.txt"
    assert rerun_file.is_file(), (
        "the merge wrote no rerun file for the cases of the cancelled task: a shard that never started leaves no "
        f"manifest, so the merge must know the run's full case list to name them. Merge output:\n{merge_log}"
    )
    lines = rerun_file.read_text().splitlines()
    rerun_cases = [line.split("=", 1)[1] for line in lines if line.startswith("--vq-case=")]
    assert "--vq-run-id=cancel-test" in lines  # the rerun's rows join this run
    assert rerun_cases and all(case in merge_log for case in rerun_cases), merge_log
    rerun = run_pytest_cases([*settings, f"@{rerun_file}"], tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    merged_db = Path(got["merged db"])
    again = merge_again(folder, merged_db)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    rows = cases_in(merged_db)
    assert set(rerun_cases) <= rows.keys() and all(status == "ok" for status, _, _ in rows.values()), rows


def test_ground_truth_array_then_merge_gt_equals_one_run(cluster: list[str], tmp_path: Path) -> None:
    """precompute-gt as a 3-task array (--shard i/3 from the task id), then merge-gt as a dependent job: the
    merged ground truth equals one unsharded run, ties included (the base repeats rows)."""
    import numpy as np

    rng = np.random.default_rng(7)
    base = rng.integers(-3, 4, size=(3000, 6)).astype(np.float32)  # small integers: many exact ties
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "q.npy", rng.integers(-3, 4, size=(25, 6)).astype(np.float32))
    exe = Path(sys.executable).with_name("vq-benchmark")
    common = f"{exe} precompute-gt --vectors-path base.npy --queries-path q.npy --k 50 --quiet"
    task = tmp_path / "gt_task.sh"
    task.write_text(
        "#!/bin/bash\nset -e\n"
        f'{common} --output-path "part$SLURM_ARRAY_TASK_ID.npy" '
        '--shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"\n'
    )
    merge = tmp_path / "merge.sh"
    merge.write_text(f"#!/bin/bash\nset -e\n{exe} merge-gt part*.npy --output-path merged.npy\n")
    opts = [f"--chdir={tmp_path}", f"--output={tmp_path}/%x-%A_%a.out"]
    run = functools.partial(subprocess.run, capture_output=True, text=True, check=True, env=clean_env())
    array = run(["sbatch", "--parsable", "--array=0-2", *opts, str(task)]).stdout.strip()
    cluster.append(array)
    merged = run(["sbatch", "--parsable", f"--dependency=afterok:{array}", *opts, str(merge)]).stdout.strip()
    cluster.append(merged)
    states = wait_for([array, merged], tmp_path)
    assert {state for state, _ in states.values()} == {"COMPLETED"}, (states, read_logs(tmp_path))
    single = subprocess.run(
        [*shlex.split(common), "--output-path", "single.npy"], cwd=tmp_path, env=clean_env(), capture_output=True
    )
    assert single.returncode == 0, single.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "merged.npy"), np.load(tmp_path / "single.npy"))
    np.testing.assert_array_equal(
        np.load(tmp_path / "merged.distances.npy"), np.load(tmp_path / "single.distances.npy")
    )
