"""End to end: `pytest vq_cases` in-process (pytester) or in a subprocess (the shared sweep, xdist), checked through
the rows it leaves in SQLite and JSON."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sweeps import QUIET_PLUGINS

from vq_benchmark.fixtures.ground_truth import exact_knn
from vq_benchmark.plugin.cli import main
from vq_benchmark.reports.schema import COLUMN_NAMES
from vq_benchmark.vq_cases.metrics import k_recall_at_k

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")


def _out_args(tmp: Path) -> list[str]:
    return [
        f"--vq-db-path={tmp / 'out' / 'bench.db'}",
        f"--vq-run-dir={tmp / 'out' / 'runs'}",
        f"--vq-cache-dir={tmp / 'cache'}",
        f"--vq-codebooks-dir={tmp / 'codebooks'}",
        *QUIET_PLUGINS,
    ]


def _rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY case_id")]
    finally:
        conn.close()


def _collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    res = pytester.runpytest(CASES_DIR, "--collect-only", "-q", *args)
    assert res.ret == 0, res.stdout.str() + res.stderr.str()
    return [line.split("[", 1)[1].rstrip("]") for line in res.outlines if "::test_case[" in line]


@pytest.fixture(scope="module")
def dummy_small_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real sweep of the default sweep on dummy-small, shared by the assertions below."""
    tmp = tmp_path_factory.mktemp("e2e")
    cwd = tmp / "work"
    cwd.mkdir()
    args = [sys.executable, "-m", "pytest", CASES_DIR, "--vq-dataset", "dummy-small", *_out_args(tmp)]
    # a quarter of the base as training sample (still 2x the 256 centroids of nbits=8): the OPQ cases dominate the
    # suite's time and their training time grows with the sample (all 2000 vectors otherwise)
    proc = subprocess.run([*args, "--vq-train-size=500"], cwd=cwd, capture_output=True, text=True, timeout=600)
    collect = subprocess.run([*args, "--collect-only", "-q"], cwd=cwd, capture_output=True, text=True, timeout=120)
    ids = [line.split("[", 1)[1].rstrip("]") for line in collect.stdout.splitlines() if "::test_case[" in line]
    return {"proc": proc, "tmp": tmp, "ids": ids, "rows": _rows(tmp / "out" / "bench.db")}


def test_every_collected_case_has_one_ok_row(dummy_small_run: dict) -> None:
    proc, rows, ids = dummy_small_run["proc"], dummy_small_run["rows"], dummy_small_run["ids"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(ids) >= 7
    assert sorted(r["case_id"] for r in rows) == sorted(ids)
    assert {r["status"] for r in rows} == {"ok"}
    assert len({r["run_id"] for r in rows}) == 1
    assert set(rows[0]) == set(COLUMN_NAMES)


def test_metric_values_are_sane(dummy_small_run: dict) -> None:
    by_id = {r["case_id"]: r for r in dummy_small_run["rows"]}
    d = 32
    for m in (8, 16):
        pq = by_id[f"dummy-small-pq-M{m}-nbits8"]
        assert pq["recall_at_10"] > 0.2
        assert pq["code_bytes"] == m
        assert pq["compression_ratio"] == d * 4 / m
    sqfp16 = by_id["dummy-small-sqfp16"]
    assert sqfp16["recall_at_10"] > 0.95
    assert sqfp16["compression_ratio"] == 2.0
    assert by_id["dummy-small-sq8"]["compression_ratio"] == 4.0
    assert by_id["dummy-small-sq4"]["compression_ratio"] == 8.0
    # more bits, less distortion: the ordering every quantizer paper relies on
    assert sqfp16["mse"] < by_id["dummy-small-sq8"]["mse"] < by_id["dummy-small-sq4"]["mse"]
    assert by_id["dummy-small-pq-M16-nbits8"]["mse"] < by_id["dummy-small-pq-M8-nbits8"]["mse"]
    for row in by_id.values():
        assert 0 <= row["recall_at_1"] <= 1 and 0 <= row["recall_at_100"] <= 1
        assert row["one_recall_at_1"] <= row["one_recall_at_10"] <= row["one_recall_at_100"]
        assert row["qps"] > 0 and row["train_s"] >= 0 and row["encode_s"] > 0 and row["search_s"] > 0
        assert row["threads"] >= 1 and row["n_base"] == 2000 and row["n_queries"] == 100
        assert row["python_version"] and row["faiss_version"] and row["hostname"] and row["cpu_model"]
        assert row["dataset_fingerprint"] and row["seed"] == 0
        assert json.loads(row["params_json"]) is not None


def test_saved_neighbors_recompute_the_stored_recall(dummy_small_run: dict) -> None:
    """Recall recomputed from the saved ids against an independent brute-force GT equals the stored value."""
    from vq_benchmark.fixtures.registry import BUILTIN
    from vq_benchmark.fixtures.synthetic import make_low_rank_dataset

    p = BUILTIN["dummy-small"].synthetic
    assert p is not None
    base, queries = make_low_rank_dataset(
        p.n_base, p.n_queries, p.dim, intrinsic_dim=p.intrinsic_dim, n_clusters=p.n_clusters, seed=p.seed
    )
    full = ((queries[:, None, :].astype(np.float64) - base[None, :, :]) ** 2).sum(-1)
    order = np.argsort(full, axis=1, kind="stable")[:, :100]
    gt_d = np.take_along_axis(full, order, axis=1)
    for row in dummy_small_run["rows"]:
        ids = np.load(row["neighbors_path"], allow_pickle=False)
        assert ids.shape == (100, 100)
        assert Path(row["distances_path"]).is_file() and Path(row["codec_path"]).is_file()
        assert k_recall_at_k(ids, order, gt_d, 10) == pytest.approx(row["recall_at_10"], abs=1e-9)
    _, ids = exact_knn(base, queries, 100, "l2")
    assert (ids[:, 0] == order[:, 0]).mean() > 0.99


def test_json_report_matches_sqlite(dummy_small_run: dict) -> None:
    runs = dummy_small_run["tmp"] / "out" / "runs"
    (report,) = list(runs.glob("*/results.json"))
    doc = json.loads(report.read_text())
    json_rows = {r["case_id"]: r for r in doc["rows"]}
    for row in dummy_small_run["rows"]:
        for key in ("recall_at_10", "mse", "code_bytes", "status", "run_id"):
            assert json_rows[row["case_id"]][key] == row[key]
    assert doc["meta"]["run_id"] == dummy_small_run["rows"][0]["run_id"]


def test_terminal_shows_summary_table_and_settings(dummy_small_run: dict) -> None:
    out = dummy_small_run["proc"].stdout
    assert "vq-benchmark results" in out and "recall@10" in out and "dummy-small-sqfp16" in out
    assert "dataset" in out and "[option --vq-dataset]" in out
    assert "seed" in out and "[default]" in out


def test_collect_only_lists_cases_without_touching_vectors(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The datasets file points at files that do not exist: collection must not notice."""
    dsfile = tmp_path / "datasets.toml"
    dsfile.write_text('[datasets.ghost]\nbase = "nope/base.npy"\nqueries = "nope/q.npy"\n')
    ids = _collected(pytester, "--vq-dataset=ghost", f"--vq-datasets-file={dsfile}", *_out_args(tmp_path))
    assert "ghost-pq-M8-nbits8" in ids and "ghost-sqfp16" in ids
    assert not (tmp_path / "out").exists()


def test_k_filter_selects_cases(pytester: pytest.Pytester, tmp_path: Path) -> None:
    ids = _collected(pytester, "--vq-dataset=dummy", "-k", "pq-M16", *_out_args(tmp_path))
    assert ids == ["dummy-opq-M16-nbits8", "dummy-pq-M16-nbits8"]  # longest first


def _error_run(pytester: pytest.Pytester, *args: str):
    res = pytester.runpytest(CASES_DIR, *args)
    errors = [line for line in res.errlines + res.outlines if line.startswith("ERROR:")]
    return res, errors


def test_missing_dataset_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("VQ_DATASET", raising=False)
    res, errors = _error_run(pytester, *_out_args(tmp_path))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and "--vq-dataset" in errors[0] and "dummy-small" in errors[0]
    assert "Traceback" not in res.stdout.str() + res.stderr.str()


def test_unknown_dataset_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    res, errors = _error_run(pytester, "--vq-dataset=nosuch", *_out_args(tmp_path))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and "unknown dataset 'nosuch'" in errors[0] and "glove-50d" in errors[0]


def test_unknown_method_in_sweep_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[[sweep]]\nmethod = "pq"\nM = [8]\n\n[[sweep]]\nmethod = "lattice"\n')
    res, errors = _error_run(pytester, "--vq-dataset=dummy-small", f"--vq-sweep={sweep}", *_out_args(tmp_path))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and str(sweep) in errors[0] and "'lattice'" in errors[0] and "sqfp16" in errors[0]


def _npy_dataset(tmp_path: Path, gt_rows: int | None) -> Path:
    rng = np.random.default_rng(0)
    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    base = rng.standard_normal((1500, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    np.save(data / "base.npy", base)
    np.save(data / "queries.npy", queries)
    lines = ['[datasets.toy]\nformat = "npy"\nbase = "toy/base.npy"\nqueries = "toy/queries.npy"\n']
    if gt_rows is not None:
        d, i = exact_knn(base, np.resize(queries, (gt_rows, 16)), 100, "l2")
        np.save(data / "gt_ids.npy", i)
        np.save(data / "gt_d.npy", d)
        lines.append('ground_truth = "toy/gt_ids.npy"\nground_truth_distances = "toy/gt_d.npy"\n')
    dsfile = tmp_path / "datasets.toml"
    dsfile.write_text("".join(lines))
    return dsfile


def _run_toy(pytester: pytest.Pytester, tmp_path: Path, gt_rows: int, *args: str) -> pytest.RunResult:
    dsfile = _npy_dataset(tmp_path, gt_rows=gt_rows)
    data_args = ["--vq-dataset=toy", f"--vq-datasets-file={dsfile}", f"--vq-data-dir={tmp_path / 'data'}"]
    return pytester.runpytest(CASES_DIR, *data_args, *args, *_out_args(tmp_path))


def test_ground_truth_with_wrong_shape_is_rejected(pytester: pytest.Pytester, tmp_path: Path) -> None:
    res = _run_toy(pytester, tmp_path, 39)
    text = res.stdout.str() + res.stderr.str()
    errors = [line for line in res.errlines + res.outlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and "gt_ids.npy" in errors[0] and "40 rows" in errors[0] and "got 39" in errors[0]
    assert not list((tmp_path / "out").rglob("results.jsonl"))  # stopped before any case ran
    assert "Traceback" not in text


def test_user_npy_dataset_with_given_ground_truth(pytester: pytest.Pytester, tmp_path: Path) -> None:
    res = _run_toy(pytester, tmp_path, 40, "-k", "sqfp16")
    assert res.ret == 0, res.stdout.str()
    (row,) = _rows(tmp_path / "out" / "bench.db")
    assert row["case_id"] == "toy-sqfp16" and row["recall_at_10"] > 0.95
    assert row["gt_source"].startswith("file ") and row["compression_ratio"] == 2.0


def test_env_selects_dataset_when_no_option(pytester: pytest.Pytester, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VQ_DATASET", "dummy-small")
    res = pytester.runpytest(CASES_DIR, "-k", "sq8", *_out_args(tmp_path))
    assert res.ret == 0, res.stdout.str()
    res.stdout.fnmatch_lines(["*dataset*= dummy-small*[[]env VQ_DATASET[]]*"])
    (row,) = _rows(tmp_path / "out" / "bench.db")
    assert row["case_id"] == "dummy-small-sq8" and row["status"] == "ok"


def test_xdist_workers_share_one_run_and_split_cores(pytester: pytest.Pytester, tmp_path: Path) -> None:
    res = pytester.runpytest(CASES_DIR, "--vq-dataset=dummy-small", "-n", "2", "-k", "sq", *_out_args(tmp_path))
    assert res.ret == 0, res.stdout.str()
    rows = _rows(tmp_path / "out" / "bench.db")
    assert sorted(r["case_id"] for r in rows) == ["dummy-small-sq4", "dummy-small-sq8", "dummy-small-sqfp16"]
    assert len({r["run_id"] for r in rows}) == 1
    assert {r["worker"] for r in rows} <= {"gw0", "gw1"}
    cores = len(os.sched_getaffinity(0))
    assert {r["threads"] for r in rows} == {max(1, cores // 2)}
    for r in rows:  # arrays were written under the controller's run id
        assert r["run_id"] in r["neighbors_path"] and Path(r["neighbors_path"]).is_file()


def test_failed_case_is_recorded_and_others_still_run(
    pytester: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quantizer that raises fails its own case with one line; PQ with 2^16 centroids cannot train on 1,000
    points, so it is skipped with the reason; the other cases run."""
    (tmp_path / "broken.py").write_text(
        "class Broken:\n"
        "    def fit(self, x):\n"
        "        raise RuntimeError('diverged')\n"
        "    def compress(self, x):\n"
        "        return x\n"
        "    def decompress(self, c):\n"
        "        return c\n"
    )
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[[sweep]]\nmethod = "pq"\nM = [8]\nnbits = [16]\n\n[[sweep]]\nmethod = "sq8"\n\n'
        '[[sweep]]\nmethod = "python"\nquantizer = "broken.py:Broken"\n'
    )
    res = pytester.runpytest(
        CASES_DIR, "--vq-dataset=dummy-small", f"--vq-sweep={sweep}", "--vq-train-size=1000", *_out_args(tmp_path)
    )
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    rows = {r["case_id"]: r for r in _rows(tmp_path / "out" / "bench.db")}
    (failed,) = [r for cid, r in rows.items() if "python" in cid]
    assert failed["status"] == "failed" and "Broken" in failed["error"] and "diverged" in failed["error"]
    assert "\n" not in failed["error"] and failed["recall_at_10"] is None
    skipped = rows["dummy-small-pq-M8-nbits16"]
    assert skipped["status"] == "skipped" and "1000" in skipped["error"] and "65536" in skipped["error"]
    assert rows["dummy-small-sq8"]["status"] == "ok"
    res.stdout.fnmatch_lines(["*dummy-small-python*failed*"])
    # The end of the summary: counts with the skip reason, every file written, and the command to see it again.
    out = res.stdout.str()
    counts = next(line for line in out.splitlines() if "cases run:" in line)
    assert counts.startswith("3 cases run: 1 ok, 1 failed, 1 skipped (1x training sample 1000 < 65536")
    assert counts.endswith("; 3 rows written")
    run_id = failed["run_id"]
    db, folder = tmp_path / "out" / "bench.db", tmp_path / "out" / "runs" / run_id
    res.stdout.fnmatch_lines(
        [
            "files written:",
            f"  database * {db}  (table results, run_id='{run_id}')",
            f"  run folder * {folder}: *manifest.json, results.json, results.jsonl, arrays/ (2 files)",
            f"  codecs * 1 trained codec in {tmp_path / 'codebooks'}/*",
            f"this table again: vq-benchmark report {db} --run {run_id}",
        ]
    )
    command = shlex.split(next(line for line in out.splitlines() if line.startswith("this table again: "))[18:])
    capsys.readouterr()  # the in-process session's own output
    assert command[0] == "vq-benchmark" and main(command[1:]) == 0
    table = capsys.readouterr().out
    lines = table.strip().splitlines()[2:]  # under the header and its rule: one line per case of the run
    assert sorted(line.split()[1] for line in lines) == sorted(str(r["method"]) for r in rows.values())


def test_reused_run_id_keeps_earlier_rows_in_json(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A second session under the same run id (a resumed or split sweep) adds to the JSON report, loses nothing."""
    for subset in ("sq8", "sq4"):
        res = pytester.runpytest(
            CASES_DIR, "--vq-dataset=dummy-small", "--vq-run-id=resume-1", "-k", subset, *_out_args(tmp_path)
        )
        assert res.ret == 0, res.stdout.str()
    doc = json.loads((tmp_path / "out" / "runs" / "resume-1" / "results.json").read_text())
    assert sorted(r["case_id"] for r in doc["rows"]) == ["dummy-small-sq4", "dummy-small-sq8"]
    assert sorted(r["case_id"] for r in _rows(tmp_path / "out" / "bench.db")) == ["dummy-small-sq4", "dummy-small-sq8"]


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda tmp: ["--vq-dataset=dummy-small", f"--vq-db-path={tmp}"], "--vq-db-path"),  # found by the controller
        (lambda tmp: ["--vq-dataset=dummy-small", "--vq-seed=-3"], "--vq-seed"),  # found by the workers too
    ],
    ids=["db-is-directory", "seed"],
)
def test_usage_errors_under_xdist_stop_before_any_case(
    pytester: pytest.Pytester, tmp_path: Path, make_args, expected: str
) -> None:
    """The controller collects nothing itself: it checks when the workers report case ids."""
    args = [*_out_args(tmp_path), *make_args(tmp_path)]  # later options win: the bad path overrides
    res = pytester.runpytest_subprocess(CASES_DIR, "-n", "2", "-k", "sq", *args)
    text = res.stdout.str() + res.stderr.str()
    errors = [line for line in res.errlines + res.outlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR, text[-3000:]
    assert len(errors) == 1 and expected in errors[0], text[-3000:]
    assert "INTERNALERROR" not in text and "Traceback" not in text
    assert not list((tmp_path / "out").rglob("results.jsonl"))


def test_data_error_under_xdist_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    res = _run_toy(pytester, tmp_path, 39, "-n", "2", "-k", "sq")
    text = res.stdout.str() + res.stderr.str()
    errors = [line for line in res.errlines + res.outlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR, text[-3000:]
    assert len(errors) == 1 and "gt_ids.npy" in errors[0] and "got 39" in errors[0]
    assert "INTERNALERROR" not in text and not list((tmp_path / "out").rglob("results.jsonl"))
