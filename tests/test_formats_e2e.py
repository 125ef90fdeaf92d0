"""End to end: `pytest vq_cases` on datasets in the field's file formats, checked through their SQLite rows.

Each dataset is written here with the project's own writers (or h5py/pyarrow), declared in a datasets file and
benchmarked with one cheap codec; the rows must say what was measured (metric, dtype, bytes) and their recall
must equal an independent numpy computation from the saved neighbour arrays.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_benchmark.fixtures.formats.bigann import write_bigann_gt, write_fbin
from vq_benchmark.fixtures.formats.texmex import write_vecs

REPO = Path(__file__).resolve().parent.parent
CASES_DIR = str(REPO / "vq_cases")
N, NQ, D = 1200, 30, 16


def _rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY case_id")]
    finally:
        conn.close()


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, D)).astype(np.float32) * 3
    base = centres[rng.integers(0, 12, N)] + rng.standard_normal((N, D)).astype(np.float32)
    queries = centres[rng.integers(0, 12, NQ)] + rng.standard_normal((NQ, D)).astype(np.float32)
    return base.astype(np.float32), queries.astype(np.float32)


def _brute(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 brute force, ties by smaller id: (ids, distances in the harness's units)."""
    x, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    key = ((q[:, None] - x[None]) ** 2).sum(-1) if metric != "ip" else -(q @ x.T)
    ids = np.argsort(key, axis=1, kind="stable")[:, :k]
    d = np.take_along_axis(key, ids, axis=1)
    return ids, (d if metric != "ip" else -d)


def _run(pytester: pytest.Pytester, tmp_path: Path, toml: str, *args: str) -> pytest.RunResult:
    dsfile = tmp_path / "datasets.toml"
    dsfile.write_text(toml)
    name = toml.split("]", 1)[0].removeprefix("[datasets.")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "pq"\nM = [4]\nnbits = [6]\n')
    return pytester.runpytest(
        CASES_DIR,
        f"--vq-dataset={name}",
        f"--vq-datasets-file={dsfile}",
        f"--vq-data-dir={tmp_path}",
        f"--vq-sweep={sweep}",
        f"--vq-db-path={tmp_path / 'out' / 'bench.db'}",
        f"--vq-run-dir={tmp_path / 'out' / 'runs'}",
        f"--vq-cache-dir={tmp_path / 'cache'}",
        f"--vq-codebooks-dir={tmp_path / 'codebooks'}",
        "-p",
        "no:cacheprovider",
        *args,
    )


def _recall10(row: dict, gt_ids: np.ndarray) -> float:
    """k-recall@10 from the saved neighbour ids (no ties in this continuous data, so ids suffice)."""
    got = np.load(row["neighbors_path"])[:, :10]
    return float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, gt_ids[:, :10], strict=True)]))


def _check(rows: list[dict], dataset: str, gt_ids: np.ndarray, **expected: object) -> None:
    assert [r["case_id"] for r in rows] == [f"{dataset}-pq-M4-nbits6", f"{dataset}-sq8"]
    for row in rows:
        assert row["status"] == "ok", row["error"]
        for key, value in expected.items():
            assert row[key] == value, (key, row[key])
        assert row["compression_ratio"] == row["vector_bytes"] / row["code_bytes"]
        assert row["recall_at_10"] == pytest.approx(_recall10(row, gt_ids), abs=1e-12)
    sq8 = rows[1]
    assert sq8["recall_at_10"] > 0.8


def test_fbin_with_bigann_ground_truth(pytester: pytest.Pytester, tmp_path: Path) -> None:
    base, queries = _data()
    write_fbin(tmp_path / "b.fbin", base)
    write_fbin(tmp_path / "q.fbin", queries)
    ids, dists = _brute(base, queries, 100, "l2")
    write_bigann_gt(tmp_path / "gt.bin", ids, dists)
    res = _run(pytester, tmp_path, '[datasets.bf]\nbase = "b.fbin"\nqueries = "q.fbin"\nground_truth = "gt.bin"\n')
    assert res.ret == 0, res.stdout.str()
    rows = _rows(tmp_path / "out" / "bench.db")
    _check(rows, "bf", ids, metric_type="l2", vector_dtype="float32", vector_bytes=4 * D, n_base=N)
    assert rows[0]["gt_source"] == f"file {tmp_path / 'gt.bin'}"


def test_uint8_base_is_measured_against_its_own_bytes(pytester: pytest.Pytester, tmp_path: Path) -> None:
    base, queries = _data(1)
    u8 = np.clip(base * 10 + 128, 0, 255).astype(np.uint8)
    q8 = np.clip(queries * 10 + 128, 0, 255).astype(np.uint8)
    write_fbin(tmp_path / "b.u8bin", u8)
    write_vecs(tmp_path / "q.bvecs", q8)
    res = _run(pytester, tmp_path, '[datasets.u8]\nbase = "b.u8bin"\nqueries = "q.bvecs"\n')
    assert res.ret == 0, res.stdout.str()
    rows = _rows(tmp_path / "out" / "bench.db")
    ids, _ = _brute(u8, q8, 100, "l2")
    _check(rows, "u8", ids, vector_dtype="uint8", vector_bytes=D)
    assert rows[1]["code_bytes"] == D and rows[1]["compression_ratio"] == 1.0  # SQ8 of a uint8 vector saves nothing


@pytest.mark.parametrize("distance", ["angular", "euclidean"])
def test_ann_benchmarks_hdf5(pytester: pytest.Pytester, tmp_path: Path, distance: str) -> None:
    base, queries = _data(2)
    metric = "cosine" if distance == "angular" else "l2"
    ids, d = _brute(base, queries, 100, metric)
    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f.attrs["distance"] = distance
        f["train"], f["test"], f["neighbors"] = base, queries, ids.astype(np.int32)
        f["distances"] = (d / 2 if metric == "cosine" else np.sqrt(d)).astype(np.float32)  # ann-benchmarks' units
    res = _run(pytester, tmp_path, '[datasets.ab]\npath = "x.hdf5"\n')
    assert res.ret == 0, res.stdout.str()
    rows = _rows(tmp_path / "out" / "bench.db")
    _check(rows, "ab", ids, metric_type=metric, vector_dtype="float32")
    assert "x.hdf5" in rows[0]["gt_source"]


def test_hdf5_with_ground_truth_of_another_metric_is_refused(pytester: pytest.Pytester, tmp_path: Path) -> None:
    base, queries = _data(3)
    ids, d = _brute(base, queries, 100, "ip")  # inner-product neighbours declared as euclidean
    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"], f["test"], f["neighbors"], f["distances"] = base, queries, ids, np.abs(d)[:, ::-1].copy()
    res = _run(pytester, tmp_path, '[datasets.ab]\npath = "x.hdf5"\n')
    errors = [line for line in res.outlines + res.errlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and "x.hdf5" in errors[0]
    assert "Traceback" not in res.stdout.str() + res.stderr.str()


def test_parquet_embedding_column(pytester: pytest.Pytester, tmp_path: Path) -> None:
    base, queries = _data(4)
    for name, x in (("b", base), ("q", queries)):
        table = pa.table({"id": np.arange(len(x)), "emb": pa.array(list(x), type=pa.list_(pa.float32()))})
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=500)
    res = _run(
        pytester, tmp_path, '[datasets.hf]\nbase = "b.parquet"\nqueries = "q.parquet"\ncolumn = "emb"\nmetric = "ip"\n'
    )
    assert res.ret == 0, res.stdout.str()
    ids, _ = _brute(base, queries, 100, "ip")
    _check(_rows(tmp_path / "out" / "bench.db"), "hf", ids, metric_type="ip")


def test_dataset_limit_computes_ground_truth_for_the_prefix(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The file's ground truth covers the whole base, so a prefix never reuses it."""
    base, queries = _data(5)
    write_vecs(tmp_path / "b.fvecs", base)
    write_vecs(tmp_path / "q.fvecs", queries)
    full_ids, _ = _brute(base, queries, 100, "l2")
    write_vecs(tmp_path / "gt.ivecs", full_ids.astype(np.int32))
    toml = '[datasets.tx]\nbase = "b.fvecs"\nqueries = "q.fvecs"\nground_truth = "gt.ivecs"\n'
    res = _run(pytester, tmp_path, toml, "--vq-dataset-limit=500")
    assert res.ret == 0, res.stdout.str()
    rows = _rows(tmp_path / "out" / "bench.db")
    prefix_ids, _ = _brute(base[:500], queries, 100, "l2")
    _check(rows, "tx", prefix_ids, n_base=500)
    assert "first 500 of 1200 base vectors" in rows[0]["gt_source"]
    assert rows[0]["dataset_fingerprint"] != rows[0]["dataset_fingerprint"] + "x"
    # without the limit the file's ground truth is used, and the data is another dataset (fingerprint)
    res = _run(pytester, tmp_path, toml, f"--vq-run-dir={tmp_path / 'out2'}")
    assert res.ret == 0, res.stdout.str()
    full = [r for r in _rows(tmp_path / "out" / "bench.db") if r["n_base"] == N]
    assert len(full) == 2 and full[0]["gt_source"].startswith("file ")
    assert full[0]["dataset_fingerprint"] != rows[0]["dataset_fingerprint"]


def test_truncated_fbin_is_one_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    base, queries = _data(6)
    write_fbin(tmp_path / "b.fbin", base)
    write_fbin(tmp_path / "q.fbin", queries)
    with open(tmp_path / "b.fbin", "r+b") as f:
        f.truncate(8 + 4 * D * 100 + 3)
    res = _run(pytester, tmp_path, '[datasets.bf]\nbase = "b.fbin"\nqueries = "q.fbin"\n')
    errors = [line for line in res.outlines + res.errlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and "b.fbin" in errors[0] and "header says" in errors[0]
    assert "Traceback" not in res.stdout.str() + res.stderr.str()


def test_msmarco_sample_text_to_embedding_to_benchmark(real_minilm, pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The shipped WordNet sample: embedded by the real model, searched with cosine, MRR@10 in every row.

    `real_minilm` (tests/conftest.py) skips without the msmarco extra, fails in CI, and imports torch before pytester
    snapshots `sys.modules`."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "pq"\nM = [48]\nnbits = [6]\n')
    res = pytester.runpytest(
        CASES_DIR,
        "--vq-dataset=msmarco-sample",
        f"--vq-sweep={sweep}",
        f"--vq-db-path={tmp_path / 'out' / 'bench.db'}",
        f"--vq-run-dir={tmp_path / 'out' / 'runs'}",
        f"--vq-cache-dir={tmp_path / 'cache'}",
        f"--vq-codebooks-dir={tmp_path / 'codebooks'}",
        "-p",
        "no:cacheprovider",
    )
    assert res.ret == 0, res.stdout.str()
    rows = _rows(tmp_path / "out" / "bench.db")
    assert [r["case_id"] for r in rows] == ["msmarco-sample-pq-M48-nbits6", "msmarco-sample-sq8"]
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert (row["metric_type"], row["dim"], row["vector_dtype"]) == ("cosine", 384, "float32")
        info = json.loads(row["dataset_info_json"])
        assert info["model"].endswith("all-MiniLM-L6-v2") and info["n_passages"] == row["n_base"]
        assert 0.5 < info["mrr_at_10"] <= 1.0  # each query word has one right gloss
    assert rows[1]["recall_at_10"] > 0.9


def test_memory_check_skips_a_case_that_cannot_fit(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the ground truth cached first, a limit below one case's estimate skips that case with both numbers;
    the rows say so and nothing is killed."""
    base, queries = _data(7)
    write_fbin(tmp_path / "b.fbin", base)
    write_fbin(tmp_path / "q.fbin", queries)
    toml = '[datasets.mem]\nbase = "b.fbin"\nqueries = "q.fbin"\n'
    assert _run(pytester, tmp_path, toml).ret == 0  # caches the ground truth
    monkeypatch.setenv("VQ_MEMORY_LIMIT", "60M")  # below the interpreter allowance of any case
    res = _run(pytester, tmp_path, toml, f"--vq-run-dir={tmp_path / 'out2'}")
    assert res.ret == 0, res.stdout.str()
    rows = [r for r in _rows(tmp_path / "out" / "bench.db") if r["status"] == "skipped"]
    assert len(rows) == 2
    for row in rows:
        assert re.fullmatch(
            r"case mem-\S+ needs ~[0-9.]+ MiB \(.*\) but only 60\.0 MiB is available \(VQ_MEMORY_LIMIT=60M\)",
            row["error"],
        ), row["error"]


def test_memory_check_refuses_a_ground_truth_run(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, queries = _data(8)
    write_fbin(tmp_path / "b.fbin", base)
    write_fbin(tmp_path / "q.fbin", queries)
    monkeypatch.setenv("VQ_MEMORY_LIMIT", "20M")
    res = _run(pytester, tmp_path, '[datasets.mem]\nbase = "b.fbin"\nqueries = "q.fbin"\n')
    errors = [line for line in res.outlines + res.errlines if line.startswith("ERROR:")]
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert len(errors) == 1 and "ground truth of dataset mem needs ~" in errors[0]
    assert "VQ_MEMORY_LIMIT=20M" in errors[0]
