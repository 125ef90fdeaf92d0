"""The `vq-benchmark` command: dataset listing and its error line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vq_benchmark.plugin.cli import main, pytest_args_for_run


@pytest.mark.smoke
def test_datasets_lists_builtin_and_file_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dsfile = tmp_path / "ds.toml"
    dsfile.write_text('[datasets.mine]\nbase = "b.npy"\nqueries = "q.npy"\nmetric = "ip"\n')
    assert main(["datasets", "--datasets-file", str(dsfile)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(lines) == {"dummy", "dummy-small", "glove-50d", "glove-50d-ip", "msmarco-sample", "mine"}
    assert lines["mine"][1] == "ip" and lines["dummy"][1] == "l2"


@pytest.mark.smoke
def test_datasets_file_from_env(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    dsfile = tmp_path / "ds.toml"
    dsfile.write_text('[datasets.fromenv]\nbase = "b.npy"\nqueries = "q.npy"\n')
    monkeypatch.setenv("VQ_DATASETS_FILE", str(dsfile))
    monkeypatch.chdir(tmp_path)
    assert main(["datasets"]) == 0
    assert "fromenv" in capsys.readouterr().out


@pytest.mark.smoke
def test_bad_datasets_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["datasets", "--datasets-file", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vq-benchmark: error:") and str(missing) in err and "\n" not in err


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["--dataset", "glove-50d"], ["--vq-dataset=glove-50d"]),
        (["--method", "pq"], ["-k", "((pq))"]),
        (["--method", "pq", "--method", "sq8"], ["-k", "((pq) or (sq8))"]),
        (["-k", "M16", "--method", "opq"], ["-k", "(M16) and ((opq))"]),
        (["-n", "2", "--vq-seed", "3", "-x"], ["-n", "2", "--vq-seed", "3", "-x"]),
    ],
)
def test_run_translates_the_seed_shorthands(given: list[str], expected: list[str]) -> None:
    args = pytest_args_for_run(given)
    assert args[:3] == ["--pyargs", "vq_benchmark.vq_cases", "--import-mode=importlib"]
    rest = args[3:]
    assert all(a in rest for a in expected)
    if "-k" in expected:
        assert rest[rest.index("-k") + 1] == expected[expected.index("-k") + 1]


def test_run_from_an_empty_directory_records_rows(tmp_path: Path) -> None:
    """`vq-benchmark run` is the installed console script: it finds the shipped cases from anywhere."""
    exe = Path(sys.executable).with_name("vq-benchmark")
    proc = subprocess.run(
        [str(exe), "run", "--dataset", "dummy-small", "--method", "sq8", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
    conn = sqlite3.connect(tmp_path / "results" / "benchmark_runs.db")
    try:
        rows = conn.execute("SELECT case_id, status, omp_wait_policy FROM results").fetchall()
    finally:
        conn.close()
    assert rows == [("dummy-small-sq8", "ok", "PASSIVE")]


def test_run_passes_usage_errors_through(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("vq-benchmark")
    proc = subprocess.run(
        [str(exe), "run", "--dataset", "nosuch"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR
    assert "unknown dataset 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr


def test_rebuild_json_from_the_append_only_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    rows = [
        {"run_id": "r1", "case_id": "a", "status": "ok", "recall_at_10": 0.5},
        {"run_id": "r1", "case_id": "b", "status": "failed", "error": "boom"},
        {"run_id": "r1", "case_id": "a", "status": "ok", "recall_at_10": 0.75},
    ]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"run_id": "r1", "ca')
    assert main(["rebuild-json", str(run_dir)]) == 0
    doc = json.loads((run_dir / "results.json").read_text())
    assert [(r["case_id"], r.get("recall_at_10")) for r in doc["rows"]] == [("a", 0.75), ("b", None)]
    assert str(run_dir / "results.json") in capsys.readouterr().out


def test_rebuild_json_without_a_log_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rebuild-json", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path) in err and "results.jsonl" in err and "\n" not in err
