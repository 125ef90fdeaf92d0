"""`--vq-benchmark-json FILE`: pytest-benchmark's JSON layout from the rows, read back by pytest-benchmark's own
loader and `pytest-benchmark compare` when it is installed; its timer used where it is active, the harness's
under xdist or without it."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sweeps import QUIET_PLUGINS

from vq_benchmark.plugin.benchmark_json import (
    benchmark_document,
    benchmark_entry,
    extra_info,
    round_stats,
    round_times,
    write_document,
)
from vq_benchmark.reports.schema import METRIC_NAMES

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")
HAVE_PYTEST_BENCHMARK = importlib.util.find_spec("pytest_benchmark") is not None
STATS_KEYS = {
    "min",
    "max",
    "mean",
    "stddev",
    "rounds",
    "median",
    "iqr",
    "q1",
    "q3",
    "iqr_outliers",
    "stddev_outliers",
    "outliers",
    "ld15iqr",
    "hd15iqr",
    "ops",
    "total",
    "data",
    "iterations",
}
_HYP = settings(max_examples=80, deadline=None, database=None)


def _row(case_id: str, status: str = "ok", rounds: list[float] | None = None, **extra) -> dict:
    row = {
        "run_id": "r1",
        "case_id": case_id,
        "status": status,
        "dataset": "dummy-small",
        "method": "sq8",
        "params_json": "{}",
        "recall_at_10": 0.9,
        "qps": 1000.0,
        "mse": None,
        "hostname": "box",
        "cpu_model": "AMD EPYC",
        "git_commit": "abc",
        "git_dirty": 1,
        **extra,
    }
    if rounds is not None:
        row["search_round_s_json"] = json.dumps(rounds)
    return row


# ---------------------------------------------------------------- stats


def test_round_stats_by_hand() -> None:
    s = round_stats([0.4, 0.1, 0.3, 0.2])
    assert set(s) == STATS_KEYS
    assert (s["min"], s["max"], s["rounds"], s["iterations"]) == (0.1, 0.4, 4, 1)
    assert s["mean"] == pytest.approx(0.25) and s["median"] == pytest.approx(0.25)
    assert s["stddev"] == pytest.approx(statistics.stdev([0.1, 0.2, 0.3, 0.4]))
    assert (s["q1"], s["q3"]) == pytest.approx((0.15, 0.35)) and s["iqr"] == pytest.approx(0.2)
    assert s["total"] == pytest.approx(1.0) and s["ops"] == pytest.approx(4.0) and s["data"] == [0.4, 0.1, 0.3, 0.2]
    one = round_stats([2.0])
    assert one["stddev"] == 0 and one["q1"] == one["q3"] == one["ld15iqr"] == one["hd15iqr"] == 2.0
    with pytest.raises(ValueError):
        round_stats([])


@pytest.mark.skipif(not HAVE_PYTEST_BENCHMARK, reason="pytest-benchmark not installed")
@_HYP
@given(data=st.lists(st.floats(1e-6, 10), min_size=1, max_size=25))
def test_round_stats_equal_pytest_benchmarks_own(data) -> None:
    from pytest_benchmark.stats import Stats

    ref = Stats()
    for v in data:
        ref.update(v)
    got = round_stats(data)
    for key, value in ref.as_dict().items():
        if isinstance(value, str) or key in ("rounds", "iqr_outliers", "stddev_outliers"):
            assert got[key] == value, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_equal_rounds_are_no_outliers() -> None:
    """statistics.fmean([1.9] * 3) is 1.8999999999999997: with a zero stddev every round was counted an outlier."""
    stats = round_stats([1.9, 1.9, 1.9])
    assert stats["mean"] == 1.9 and stats["stddev"] == 0.0 and stats["stddev_outliers"] == 0


# ---------------------------------------------------------------- the document


def test_document_layout_from_rows(tmp_path: Path) -> None:
    rows = [
        _row("b-case", rounds=[0.02, 0.01, 0.03], qps_min=3333.3, latency_p50_ms=0.1),
        _row("a-case", rounds=[0.5]),
        _row("failed-case", status="failed", rounds=[0.1]),
        _row("old-row"),  # no rounds recorded (a row of an older run): left out
        _row("bad-rounds", rounds=None, search_round_s_json="[1, NaN]"),
    ]
    doc = benchmark_document(rows, run_id="r1")
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)
    assert doc["machine_info"]["node"] == "box" and doc["machine_info"]["cpu"]["brand_raw"] == "AMD EPYC"
    assert doc["commit_info"]["id"] == "abc" and doc["commit_info"]["dirty"] is True
    assert [b["name"] for b in doc["benchmarks"]] == ["test_case[a-case]", "test_case[b-case]"]
    b = doc["benchmarks"][1]
    assert b["fullname"] == "vq_cases/test_cases.py::test_case[b-case]" and b["param"] == "b-case"
    assert b["group"] == "dummy-small" and b["params"] == {"vq_case": "b-case"}
    assert set(b["stats"]) == STATS_KEYS and b["stats"]["rounds"] == 3 and b["stats"]["min"] == 0.01
    assert b["extra_info"]["recall_at_10"] == 0.9 and b["extra_info"]["qps_min"] == 3333.3
    assert "mse" not in b["extra_info"] and "hostname" not in b["extra_info"]
    assert set(b["extra_info"]) - {"run_id", "case_id", "dataset", "method", "params_json"} <= set(METRIC_NAMES)
    path = tmp_path / "sub" / "bench.json"
    write_document(path, doc)
    assert json.loads(path.read_text())["benchmarks"][0]["stats"]["data"] == [0.5]
    assert round_times(_row("x", search_round_s_json="not json")) is None
    assert benchmark_entry(_row("x", status="skipped", rounds=[1.0])) is None
    assert extra_info({"case_id": "x", "qps": None, "recall_at_1": 1.0}) == {"case_id": "x", "recall_at_1": 1.0}


class _StrictLogger:
    def warning(self, text, **kwargs):
        raise AssertionError(f"pytest-benchmark could not load the file: {text}")

    def info(self, *args, **kwargs):
        pass

    debug = info


@pytest.mark.skipif(not HAVE_PYTEST_BENCHMARK, reason="pytest-benchmark not installed")
def test_pytest_benchmarks_loader_reads_the_document(tmp_path: Path) -> None:
    from pytest_benchmark.storage.file import FileStorage

    path = tmp_path / "run.json"
    write_document(path, benchmark_document([_row("a", rounds=[0.2, 0.1]), _row("b", rounds=[0.3])]))
    loaded = list(FileStorage(tmp_path / "storage", logger=_StrictLogger()).load_benchmarks(str(path)))
    assert [b["name"] for b in loaded] == ["test_case[a]", "test_case[b]"]
    assert loaded[0]["min"] == 0.1 and loaded[0]["rounds"] == 2 and loaded[0]["extra_info"]["recall_at_10"] == 0.9


# ---------------------------------------------------------------- end to end


def _run(tmp: Path, *extra: str, cache: Path) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "pytest",
        CASES_DIR,
        "--vq-dataset",
        "dummy-small",
        "-k",
        "sq8 or sq4",
        "--vq-search-rounds",
        "2",
        f"--vq-db-path={tmp / 'bench.db'}",
        f"--vq-run-dir={tmp / 'runs'}",
        f"--vq-cache-dir={cache}",
        f"--vq-codebooks-dir={tmp / 'codebooks'}",
        *QUIET_PLUGINS,
        *extra,
    ]
    # a child of an xdist worker inherits PYTEST_XDIST_WORKER, which makes pytest-benchmark disable itself
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def _db_rows(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["case_id"]: dict(r) for r in conn.execute("SELECT * FROM results")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def gt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gt-cache")


@pytest.mark.parametrize("mode", ["plain", "xdist", "no-pytest-benchmark"])
def test_run_writes_a_file_pytest_benchmark_compare_reads(tmp_path: Path, gt_cache: Path, mode: str) -> None:
    if mode == "no-pytest-benchmark" and not HAVE_PYTEST_BENCHMARK:
        pytest.skip("pytest-benchmark not installed: the plain run already is without it")
    out = tmp_path / "bench.json"
    extra = {"plain": [], "xdist": ["-n", "2"], "no-pytest-benchmark": ["-p", "no:benchmark"]}[mode]
    proc = _run(tmp_path, f"--vq-benchmark-json={out}", *extra, cache=gt_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = _db_rows(tmp_path / "bench.db")
    assert sorted(b["param"] for b in doc["benchmarks"]) == sorted(rows) == ["dummy-small-sq4", "dummy-small-sq8"]
    timer = "pytest-benchmark" if mode == "plain" and HAVE_PYTEST_BENCHMARK else "harness"
    for bench in doc["benchmarks"]:
        row = rows[bench["param"]]
        assert row["search_timer"] == bench["extra_info"]["search_timer"] == timer
        rounds = json.loads(row["search_round_s_json"])
        assert bench["stats"]["rounds"] == 2 and bench["stats"]["data"] == rounds
        assert bench["stats"]["min"] == row["search_s"] and row["qps"] == pytest.approx(row["n_queries"] / min(rounds))
        for name in METRIC_NAMES:
            if row.get(name) is not None:
                assert bench["extra_info"][name] == row[name], name
        assert math.isfinite(bench["stats"]["ops"])
    if HAVE_PYTEST_BENCHMARK:
        cmp = subprocess.run(
            [sys.executable, "-m", "pytest_benchmark", "compare", str(out)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        assert "test_case[dummy-small-sq8]" in cmp.stdout and "Failed to load" not in cmp.stdout + cmp.stderr


@pytest.mark.skipif(not HAVE_PYTEST_BENCHMARK, reason="pytest-benchmark not installed")
def test_pytest_benchmarks_own_json_carries_the_metrics(tmp_path: Path, gt_cache: Path) -> None:
    own = tmp_path / "own.json"
    proc = _run(tmp_path, f"--benchmark-json={own}", cache=gt_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benches = {b["param"]: b for b in json.loads(own.read_text())["benchmarks"]}
    rows = _db_rows(tmp_path / "bench.db")
    assert set(benches) == set(rows)
    for case_id, bench in benches.items():
        assert bench["stats"]["rounds"] == 2 and bench["extra_info"]["recall_at_10"] == rows[case_id]["recall_at_10"]
        assert bench["stats"]["data"] == json.loads(rows[case_id]["search_round_s_json"])


def test_unwritable_json_path_is_one_warning_line(tmp_path: Path, gt_cache: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = _run(tmp_path, f"--vq-benchmark-json={blocker / 'bench.json'}", cache=gt_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"--vq-benchmark-json {blocker / 'bench.json'} not written" in proc.stdout
    assert _db_rows(tmp_path / "bench.db")  # the rows are kept
