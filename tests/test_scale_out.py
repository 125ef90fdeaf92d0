"""Sweeps that scale out: shards partition the selection and merge joins them; a killed sweep resumes to exactly
one ok row per case; xdist workers keep their own row logs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sweeps import QUIET_PLUGINS

from vq_benchmark.reports.jsonl import read_jsonl

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")
SWEEP = '[[sweep]]\nmethod = "pq"\nM = [4, 8]\nnbits = [6]\n\n[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "sq4"\n'
CASES = {"dummy-small-pq-M4-nbits6", "dummy-small-pq-M8-nbits6", "dummy-small-sq8", "dummy-small-sq4"}

KILLER = """
import os, signal

def pytest_runtest_call(item):
    if os.environ.get("VQ_TEST_KILL") and os.environ["VQ_TEST_KILL"] in item.nodeid:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _base_args(tmp: Path) -> list[str]:
    sweep = tmp / "sweep.toml"
    sweep.write_text(SWEEP)
    return [
        CASES_DIR,
        "--vq-dataset=dummy-small",
        f"--vq-sweep={sweep}",
        f"--vq-db-path={tmp / 'bench.db'}",
        f"--vq-run-dir={tmp / 'runs'}",
        f"--vq-cache-dir={tmp / 'cache'}",
        f"--vq-codebooks-dir={tmp / 'codebooks'}",
        "--vq-threads=1",
        *QUIET_PLUGINS,
        "-p",
        "killer",
        "-rs",
    ]


def _pytest(tmp: Path, *args: str, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    plugins = tmp / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "killer.py").write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": str(plugins)}
    env.pop("VQ_TEST_KILL", None)
    if kill:
        env["VQ_TEST_KILL"] = kill
    cmd = [sys.executable, "-m", "pytest", *_base_args(tmp), *args]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def _rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [dict(r) for r in conn.execute("SELECT * FROM results")]
    finally:
        conn.close()


def test_shards_partition_the_selection_and_merge_joins_them(tmp_path: Path) -> None:
    picked: list[str] = []
    for i in range(3):
        proc = _pytest(tmp_path, f"--vq-shard-id={i}", "--vq-num-shards=3", "--vq-run-id=split")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # an empty shard is fine too
        manifest = json.loads((tmp_path / "runs" / "split" / f"shard-{i}-of-3" / "manifest.json").read_text())
        assert manifest["exit_status"] == 0 and manifest["n_cases_total"] == len(CASES)
        assert f"shard {i}/3: {len(manifest['case_ids'])} of {len(CASES)} cases" in proc.stdout
        picked += manifest["case_ids"]
    assert sorted(picked) == sorted(CASES)  # disjoint, and together the whole selection
    assert not (tmp_path / "bench.db").exists()  # shards never write the shared database

    exe = Path(sys.executable).with_name("vq-benchmark")
    merged = tmp_path / "merged.db"
    proc = subprocess.run(
        [str(exe), "merge", str(tmp_path / "runs" / "split"), "--db", str(merged)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _rows(merged)
    assert {r["case_id"] for r in rows} == CASES and {r["status"] for r in rows} == {"ok"}


def test_a_shard_outside_the_count_is_a_usage_error(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "--vq-shard-id=3", "--vq-num-shards=3")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--vq-shard-id" in proc.stderr


@pytest.mark.parametrize("workers", [None, "2"], ids=["plain", "xdist"])
def test_a_killed_sweep_resumes_to_one_ok_row_per_case(tmp_path: Path, workers: str | None) -> None:
    """SIGKILL mid-case (the whole session, or one xdist worker), then --vq-resume under a new run id."""
    extra = ["-n", workers] if workers else []
    first = _pytest(tmp_path, *extra, "--vq-run-id=first", kill="dummy-small-sq8")
    if workers:
        assert first.returncode == pytest.ExitCode.TESTS_FAILED, first.stdout[-3000:]
        assert list((tmp_path / "runs" / "first").glob("results-gw*.jsonl"))  # the workers' own row logs
    else:
        assert first.returncode == -9  # the session itself was killed
    done = {r["case_id"] for r in _rows(tmp_path / "bench.db") if r["status"] == "ok"}
    assert "dummy-small-sq8" not in done

    second = _pytest(tmp_path, *extra, "--vq-run-id=second", "--vq-resume")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    (skipped,) = [line for line in second.stdout.splitlines() if "resumed: an ok row" in line]
    assert skipped.startswith(f"SKIPPED [{len(done)}]") and skipped.endswith("exists in run first"), skipped
    rows = _rows(tmp_path / "bench.db")
    ok = Counter(r["case_id"] for r in rows if r["status"] == "ok")
    assert ok == Counter(CASES)  # exactly one ok row per case, across both runs
    assert {r["run_id"] for r in rows if r["case_id"] == "dummy-small-sq8" and r["status"] == "ok"} == {"second"}
    for log in (tmp_path / "runs").rglob("*.jsonl"):
        read_jsonl(log)  # no corrupt file (a torn last line is tolerated by design)


def test_resumed_shards_copy_the_rows_they_skip_so_merge_is_complete(tmp_path: Path) -> None:
    """A sharded run resumed against a database holding earlier ok rows: each shard records the skipped case's row
    in its own database (noted), so the merged run has every case without measuring any again."""
    first = _pytest(tmp_path, "--vq-run-id=earlier")
    assert first.returncode == 0, first.stdout[-3000:]
    for i in range(2):
        proc = _pytest(tmp_path, f"--vq-shard-id={i}", "--vq-num-shards=2", "--vq-run-id=later", "--vq-resume")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert " passed" not in proc.stdout.splitlines()[-1]  # nothing measured again
    exe = Path(sys.executable).with_name("vq-benchmark")
    merged = tmp_path / "merged.db"
    proc = subprocess.run(
        [str(exe), "merge", str(tmp_path / "runs" / "later"), "--db", str(merged)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _rows(merged)
    assert {r["case_id"] for r in rows} == CASES and {r["run_id"] for r in rows} == {"later"}
    assert all(r["status"] == "ok" and "resumed: measured in run earlier" in r["notes"] for r in rows)


def test_an_unknown_case_id_is_a_usage_error(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "--vq-case=dummy-small-sq9")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--vq-case: dummy-small-sq9 is not a collected case" in proc.stderr


def test_xdist_runs_every_case_once_and_starts_the_longest_on_different_workers(tmp_path: Path) -> None:
    """Cases go longest first, one at a time, to whichever worker is free: the two longest (the PQ cases of the
    sweep) never share a worker, and repeated runs (-n 2 twice, -n 4) record exactly one row per case."""
    for run, workers in (("a", "2"), ("b", "2"), ("c", "4")):
        proc = _pytest(tmp_path, "-n", workers, f"--vq-run-id={run}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _rows(tmp_path / "bench.db")
    for run in ("a", "b", "c"):
        mine = [r for r in rows if r["run_id"] == run]
        assert sorted(r["case_id"] for r in mine) == sorted(CASES)
        by_case = {r["case_id"]: r["worker"] for r in mine}
        assert by_case["dummy-small-pq-M4-nbits6"] != by_case["dummy-small-pq-M8-nbits6"], by_case
