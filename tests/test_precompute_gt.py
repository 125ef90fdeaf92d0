"""`vq-benchmark precompute-gt` / `merge-gt`: exact against a float64 brute force (ties included), sharding,
hold-out, output formats, the sidecar, the --dataset cache, and one-line usage errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.fixtures import ground_truth
from vq_benchmark.fixtures.fingerprint import dataset_fingerprint
from vq_benchmark.fixtures.formats import open_ids, open_vectors, write_fbin
from vq_benchmark.fixtures.ground_truth import exact_knn
from vq_benchmark.fixtures.gt_files import gt_sidecar_mismatch, read_gt_sidecar
from vq_benchmark.fixtures.loading import open_dataset, unit_rows
from vq_benchmark.fixtures.registry import DatasetError, get_dataset, known_datasets
from vq_benchmark.fixtures.vector_source import ArraySource
from vq_benchmark.plugin.cli import main

pytestmark = pytest.mark.smoke
VQ_BENCHMARK = Path(sys.executable).with_name("vq-benchmark")


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Every distance in float64 from the float32 vectors, ranked by (distance, id): the definition of exact."""
    x = np.asarray(base, dtype=np.float32).astype(np.float64)
    q = np.asarray(queries, dtype=np.float32).astype(np.float64)
    if metric == "ip":
        full = q @ x.T
        key = -full
    else:
        full = ((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
        key = full
    ids = np.broadcast_to(np.arange(len(x)), key.shape)
    order = np.lexsort((ids, key), axis=-1)[:, :k]
    return np.take_along_axis(full, order, axis=1), order


def as_searched(base: np.ndarray, queries: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Cosine is L2 on unit rows, normalised as the harness normalises them."""
    if metric != "cosine":
        return base, queries
    return ArraySource(base).normalised()[0 : len(base)], unit_rows(queries.astype(np.float32))


def with_duplicates(rng: np.random.Generator, n: int, nq: int, d: int, integer: bool) -> tuple[np.ndarray, ...]:
    """Base rows drawn from a few distinct vectors (exact distance ties), queries partly copies of base rows."""
    distinct = max(1, n // 4)
    pool = rng.integers(-2, 3, (distinct, d)) if integer else rng.standard_normal((distinct, d))
    base = pool[rng.integers(0, distinct, n)].astype(np.float32)
    queries = (rng.integers(-2, 3, (nq, d)) if integer else rng.standard_normal((nq, d))).astype(np.float32)
    queries[: nq // 2] = base[rng.integers(0, n, nq // 2)]
    return base, queries


def cli(*args: object) -> int:
    """`vq-benchmark ARGS...` in this process; argparse's own usage errors exit via SystemExit."""
    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)


def one_line_error(capsys: pytest.CaptureFixture[str], rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("vq-benchmark: error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------------------------------------------------
# exactness
# ------------------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(5, 80),
    nq=st.integers(1, 9),
    d=st.integers(1, 6),
    metric=st.sampled_from(["l2", "ip", "cosine"]),
    integer=st.booleans(),
    batch=st.integers(1, 90),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_precompute_gt_equals_float64_brute_force(
    n: int, nq: int, d: int, metric: str, integer: bool, batch: int, seed: int, data: st.DataObject
) -> None:
    k = data.draw(st.integers(1, n))
    base, queries = with_duplicates(np.random.default_rng(seed), n, nq, d, integer)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/base.npy", base)
        np.save(f"{tmp}/q.npy", queries)
        files = ["--vectors-path", f"{tmp}/base.npy", "--queries-path", f"{tmp}/q.npy", "--output-path", f"{tmp}/g.npy"]
        rc = cli("precompute-gt", *files, "--k", k, "--metric", metric, "--batch-size", batch, "--quiet")
        assert rc == 0
        ids, dists = np.load(f"{tmp}/g.npy"), np.load(f"{tmp}/g.distances.npy")
    ref_d, ref_i = brute_force(*as_searched(base, queries, metric), k, "ip" if metric == "ip" else "l2")
    assert ids.dtype == np.int64 and dists.dtype == np.float32 and ids.shape == (nq, k)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(dists, ref_d.astype(np.float32))


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_knn_streams_a_file_source_and_reports_progress(tmp_path: Path, metric: str) -> None:
    rng = np.random.default_rng(3)
    base, queries = with_duplicates(rng, 3000, 40, 12, integer=False)
    write_fbin(tmp_path / "b.fbin", base)
    src = open_vectors(tmp_path / "b.fbin", None, "base")
    seen: list[tuple[int, int]] = []
    dists, ids = exact_knn(
        src, queries, 25, metric, chunk_rows=700, progress=lambda *a: seen.append(a), dtype=np.float64
    )
    ref_d, ref_i = brute_force(base, queries, 25, metric)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(dists, ref_d, rtol=1e-14, atol=0)  # float64: the rescored values themselves
    assert seen[0] == (700, 3000) and seen[-1][0] == seen[-1][1] and seen[-1][1] % 3000 == 0


def test_exact_knn_rejects_cosine_and_gpu_without_gpus() -> None:
    base = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="normalise"):
        exact_knn(base, base, 1, "cosine")
    if faiss.get_num_gpus() == 0:
        with pytest.raises(ValueError, match="no GPU"):
            exact_knn(base, base, 1, "l2", use_gpu=True)


def test_gpu_fast_pass_plumbing_with_a_stand_in_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: faiss.knn_gpu is stood in for by faiss.knn to check keys, ids and certification around it."""
    calls = []

    def knn_gpu(res: object, xq: np.ndarray, xb: np.ndarray, k: int, metric: int = faiss.METRIC_L2) -> tuple:
        calls.append(len(xb))
        return faiss.knn(xq, xb, k, metric=metric)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "knn_gpu", knn_gpu, raising=False)
    monkeypatch.setattr(ground_truth, "_GPU_RESOURCES", [])
    base, queries = with_duplicates(np.random.default_rng(5), 2000, 30, 8, integer=True)
    for metric in ("l2", "ip"):
        got = exact_knn(base, queries, 20, metric, chunk_rows=500, use_gpu=True)
        ref_d, ref_i = brute_force(base, queries, 20, metric)
        np.testing.assert_array_equal(got.ids, ref_i)
        np.testing.assert_array_equal(got.dists, ref_d.astype(np.float32))
    assert calls and max(calls) == 500


# ------------------------------------------------------------------------------------------------------------
# shards, hold-out, formats, sidecar
# ------------------------------------------------------------------------------------------------------------


def _files(tmp_path: Path, n: int = 900, nq: int = 30, d: int = 8, seed: int = 1) -> tuple[Path, np.ndarray]:
    base, queries = with_duplicates(np.random.default_rng(seed), n, nq, d, integer=True)
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "q.npy", queries)
    return tmp_path / "base.npy", base


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_three_shards_merge_to_the_unsharded_result(tmp_path: Path, metric: str) -> None:
    base_path, _ = _files(tmp_path)
    common = ["--vectors-path", base_path, "--queries-path", tmp_path / "q.npy", "--k", 40, "--metric", metric]
    assert cli("precompute-gt", *common, "--output-path", tmp_path / "full.npy", "--quiet") == 0
    for i in range(3):
        assert cli("precompute-gt", *common, "--shard", f"{i}/3", "--output-path", tmp_path / f"p{i}.npy",
                   "--batch-size", 64, "--quiet") == 0  # fmt: skip
        assert np.load(tmp_path / f"p{i}.distances.npy").dtype == np.float64
    parts = sorted(tmp_path.glob("p*.npy"))  # companions (p0.distances.npy) name the same partial
    assert cli("merge-gt", *parts, "--output-path", tmp_path / "merged.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "merged.npy"), np.load(tmp_path / "full.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "merged.distances.npy"), np.load(tmp_path / "full.distances.npy"))
    merged, full = read_gt_sidecar(tmp_path / "merged.npy"), read_gt_sidecar(tmp_path / "full.npy")
    assert merged.fingerprint == full.fingerprint and merged.shard is None and len(merged.raw["merged_from"]) == 3


def test_merge_gt_refuses_partials_that_do_not_belong_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base_path, _ = _files(tmp_path)
    common = ["--vectors-path", base_path, "--queries-path", tmp_path / "q.npy", "--quiet"]
    for i in range(3):
        assert (
            cli("precompute-gt", *common, "--k", 10, "--shard", f"{i}/3", "--output-path", tmp_path / f"p{i}.npy") == 0
        )
    assert cli("precompute-gt", *common, "--k", 11, "--shard", "2/3", "--output-path", tmp_path / "k11.npy") == 0
    assert cli("precompute-gt", *common, "--k", 10, "--metric", "ip", "--shard", "2/3",
               "--output-path", tmp_path / "ip.npy") == 0  # fmt: skip
    assert cli("precompute-gt", *common, "--k", 10, "--shard", "1/2", "--output-path", tmp_path / "half.npy") == 0
    for name in ("p1.npy", "p1.distances.npy", "p1.json"):
        shutil.copy(tmp_path / name, tmp_path / name.replace("p1", "copy"))
    capsys.readouterr()
    p0, p1, p2 = (tmp_path / f"p{i}.npy" for i in range(3))
    out = ["--output-path", tmp_path / "m.npy"]
    one_line_error(capsys, cli("merge-gt", p0, p1, tmp_path / "k11.npy", *out), "k11.npy", "k 11 differs from 10")
    one_line_error(capsys, cli("merge-gt", p0, p1, tmp_path / "ip.npy", *out), "ip.npy", "metric ip differs")
    one_line_error(capsys, cli("merge-gt", p0, p1, p2, tmp_path / "half.npy", *out), "half.npy", "one of 3")
    one_line_error(capsys, cli("merge-gt", p0, p1, tmp_path / "copy.npy", p2, *out), "copy.npy", "given twice")
    one_line_error(capsys, cli("merge-gt", p0, p2, *out), "shard(s) 1/3 missing")
    np.save(tmp_path / "plain.npy", np.zeros((30, 10), np.int64))
    one_line_error(capsys, cli("merge-gt", p0, p1, tmp_path / "plain.npy", *out), "plain.json", "not found")
    assert not (tmp_path / "m.npy").exists()


def test_num_queries_holds_rows_out_of_the_base(tmp_path: Path) -> None:
    base_path, base = _files(tmp_path, n=700)
    out = tmp_path / "gt" / "gt.npy"
    assert cli("precompute-gt", "--vectors-path", base_path, "--num-queries", 25, "--seed", 7, "--k", 30,
               "--output-path", out, "--quiet") == 0  # fmt: skip
    held = np.load(tmp_path / "gt" / "gt.holdout_ids.npy")
    queries = np.load(tmp_path / "gt" / "gt.queries.npy")
    reduced = np.load(tmp_path / "gt" / "gt.base.npy")
    assert held.shape == (25,) and len(set(held.tolist())) == 25 and (np.diff(held) > 0).all()
    np.testing.assert_array_equal(queries, base[held])
    np.testing.assert_array_equal(reduced, np.delete(base, held, axis=0))
    ids = np.load(out)
    assert ids.max() < 675
    np.testing.assert_array_equal(ids, brute_force(reduced, queries, 30, "l2")[1])
    side = read_gt_sidecar(out)
    assert side.n_base == 675 and side.raw["queries"] == {"held_out": True, "count": 25, "seed": 7}
    assert side.fingerprint == dataset_fingerprint(open_vectors(tmp_path / "gt" / "gt.base.npy", None, "b"),
                                                   queries.astype(np.float32), "l2")  # fmt: skip
    # the same seed holds out the same rows again; another seed other rows
    assert cli("precompute-gt", "--vectors-path", base_path, "--num-queries", 25, "--seed", 8, "--k", 30,
               "--output-path", tmp_path / "other.npy", "--quiet") == 0  # fmt: skip
    assert not np.array_equal(np.load(tmp_path / "other.holdout_ids.npy"), held)


def test_bin_output_round_trips_through_the_formats_reader(tmp_path: Path) -> None:
    _, base = _files(tmp_path)
    write_fbin(tmp_path / "base.fbin", base)
    assert cli("precompute-gt", "--vectors-path", tmp_path / "base.fbin", "--queries-path", tmp_path / "q.npy",
               "--k", 17, "--output-path", tmp_path / "gt.bin", "--quiet") == 0  # fmt: skip
    ids, dists = open_ids(tmp_path / "gt.bin", None, "ground truth")
    ref_d, ref_i = brute_force(base, np.load(tmp_path / "q.npy"), 17, "l2")
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(dists, ref_d.astype(np.float32))
    side = read_gt_sidecar(tmp_path / "gt.bin")
    assert side.ids_file == tmp_path / "gt.bin" and side.distances_file is None and side.raw["base"]["format"] == "fbin"


def test_sidecar_content(tmp_path: Path) -> None:
    base_path, _ = _files(tmp_path)
    out = tmp_path / "gt.npy"
    assert cli("precompute-gt", "--vectors-path", base_path, "--queries-path", tmp_path / "q.npy", "--k", 12,
               "--metric", "cosine", "--output-path", out, "--quiet") == 0  # fmt: skip
    doc = json.loads((tmp_path / "gt.json").read_text())
    side = read_gt_sidecar(out)
    assert read_gt_sidecar(tmp_path / "gt.distances.npy") == side == read_gt_sidecar(tmp_path / "gt.json")
    assert (side.metric, side.search_metric, side.k, side.n_base, side.n_queries, side.dim) == (
        "cosine",
        "l2",
        12,
        900,
        30,
        8,
    )
    assert side.shard is None and side.ids_file == out and side.distances_file == tmp_path / "gt.distances.npy"
    assert (
        doc["command"].startswith("vq-benchmark precompute-gt --vectors-path ") and "--metric cosine" in doc["command"]
    )
    assert set(doc["versions"]) == {"vq_benchmark", "numpy", "faiss", "python"}
    assert doc["base"]["path"] == str(base_path.absolute()) and doc["queries"]["count"] == 30
    # the fingerprint is the loader's: base and queries as searched (unit rows for cosine) plus the metric
    src = open_vectors(base_path, None, "b").normalised()
    fp = dataset_fingerprint(src, unit_rows(np.load(tmp_path / "q.npy")), "cosine")
    assert side.fingerprint == fp
    assert gt_sidecar_mismatch(side, fingerprint=fp, metric="cosine", n_base=900, n_queries=30) is None
    assert "metric cosine" in str(gt_sidecar_mismatch(side, fingerprint=fp, metric="l2"))
    assert "other vectors" in str(gt_sidecar_mismatch(side, fingerprint="00"))


def test_dataset_mode_fills_the_harness_cache(tmp_path: Path) -> None:
    """The cached result is what open_dataset then uses: same fingerprint (cosine normalisation included)."""
    _files(tmp_path)
    (tmp_path / "ds.toml").write_text(
        '[datasets.toy]\nbase = "base.npy"\nqueries = "q.npy"\nmetric = "cosine"\n', encoding="utf-8"
    )
    settings_args = ["--datasets-file", tmp_path / "ds.toml", "--data-dir", tmp_path, "--cache-dir", tmp_path / "c"]
    assert cli("precompute-gt", "--dataset", "toy", *settings_args, "--k", 20, "--quiet") == 0
    assert len(list((tmp_path / "c" / "gt").glob("gt-*-k20.npz"))) == 1
    spec = get_dataset("toy", known_datasets(tmp_path / "ds.toml", tmp_path))
    ds = open_dataset(spec, tmp_path / "c", gt_k=20)
    assert ds.gt_source.startswith("cached")
    base, queries = as_searched(np.load(tmp_path / "base.npy"), np.load(tmp_path / "q.npy"), "cosine")
    np.testing.assert_array_equal(ds.gt_ids, brute_force(base, queries, 20, "l2")[1])
    # sharded: merge-gt puts the joined result in the same cache
    shutil.rmtree(tmp_path / "c" / "gt")
    for i in range(2):
        out = tmp_path / f"s{i}.npy"
        assert (
            cli(
                "precompute-gt",
                "--dataset",
                "toy",
                *settings_args,
                "--k",
                20,
                "--shard",
                f"{i}/2",
                "--output-path",
                out,
            )
            == 0
        )
    assert cli("merge-gt", tmp_path / "s0.npy", tmp_path / "s1.npy", "--output-path", tmp_path / "m.npy") == 0
    again = open_dataset(spec, tmp_path / "c", gt_k=20)
    assert again.gt_source.startswith("cached")
    np.testing.assert_array_equal(again.gt_ids, ds.gt_ids)
    np.testing.assert_array_equal(again.gt_dists, ds.gt_dists)


# ------------------------------------------------------------------------------------------------------------
# usage errors: one line, exit 2
# ------------------------------------------------------------------------------------------------------------


def test_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base_path, base = _files(tmp_path, n=50)
    q = ["--queries-path", tmp_path / "q.npy"]
    out = ["--output-path", tmp_path / "gt.npy"]
    one_line_error(capsys, cli("precompute-gt", "--vectors-path", base_path, *q, *out, "--shard", "3/2"), "--shard 3/2")
    one_line_error(capsys, cli("precompute-gt", "--vectors-path", base_path, *q, *out, "--k", 51), "--k 51", "50 base")
    missing = tmp_path / "nope.fbin"
    one_line_error(capsys, cli("precompute-gt", "--vectors-path", missing, *q, *out), str(missing), "not found")
    blocked = tmp_path / "file" / "gt.npy"
    (tmp_path / "file").write_text("not a folder")
    one_line_error(
        capsys, cli("precompute-gt", "--vectors-path", base_path, *q, "--output-path", blocked), str(blocked)
    )
    one_line_error(capsys, cli("precompute-gt", "--vectors-path", base_path, "--num-queries", 50, *out),
                   "--num-queries 50", "50 rows")  # fmt: skip
    one_line_error(capsys, cli("precompute-gt", "--vectors-path", base_path, *out), "--queries-path", "--num-queries")
    one_line_error(capsys, cli("precompute-gt", "--vectors-path", base_path, *q, "--output-path", tmp_path / "g.txt"),
                   "g.txt", ".npy or .bin")  # fmt: skip
    one_line_error(capsys, cli("precompute-gt", "--vectors-path", base_path, *q, *out, "--k", "zero"), "--k")
    bad = base.copy()
    bad[33, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    one_line_error(
        capsys, cli("precompute-gt", "--vectors-path", tmp_path / "bad.npy", *q, *out, "--k", 5), "bad.npy", "row 33"
    )
    if faiss.get_num_gpus() == 0:
        one_line_error(capsys, cli("precompute-gt", "--vectors-path", base_path, *q, *out, "--use-gpu"),
                       "--use-gpu", "no GPU")  # fmt: skip
    assert not (tmp_path / "gt.npy").exists()


def test_console_script_in_a_subprocess(tmp_path: Path) -> None:
    base_path, base = _files(tmp_path, n=300)
    proc = subprocess.run(
        [str(VQ_BENCHMARK), "precompute-gt", "--vectors-path", str(base_path), "--queries-path",
         str(tmp_path / "q.npy"), "--k", "5", "--output-path", str(tmp_path / "gt.npy"), "--threads", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ground truth: 300/300 vec" in proc.stderr  # not a terminal: one summary line, no bar
    np.testing.assert_array_equal(
        np.load(tmp_path / "gt.npy"), brute_force(base, np.load(tmp_path / "q.npy"), 5, "l2")[1]
    )
    proc = subprocess.run([str(VQ_BENCHMARK), "precompute-gt", "--use-gpu", "--vectors-path", str(base_path),
                           "--num-queries", "3", "--output-path", str(tmp_path / "g.npy")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    if faiss.get_num_gpus() == 0:
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--use-gpu" in proc.stderr


def test_datasets_file_ground_truth_with_sidecar_is_checked(tmp_path: Path) -> None:
    """precompute-gt output declared as a dataset's ground_truth is used for its own vectors and refused, in one
    line, for other vectors (fingerprint), another metric, or fewer neighbours than the harness asks."""
    base_path, _ = _files(tmp_path, n=900, nq=30, d=8, seed=3)
    rng = np.random.default_rng(4)
    q = rng.standard_normal((20, 8)).astype(np.float32)
    write_fbin(tmp_path / "q.fbin", q)
    out = tmp_path / "gt" / "out.npy"
    args = ["precompute-gt", f"--vectors-path={base_path}", f"--queries-path={tmp_path / 'q.fbin'}", "--quiet"]
    assert main([*args, f"--output-path={out}", "--k=100"]) == 0
    toml = tmp_path / "ds.toml"

    def declare(queries: str, gt: str = "gt/out.npy", metric: str = "l2") -> None:
        toml.write_text(
            f'[datasets.p]\nbase = "{base_path.name}"\nqueries = "{queries}"\nground_truth = "{gt}"\n'
            f'ground_truth_distances = "gt/out.distances.npy"\nmetric = "{metric}"\n'
        )

    declare("q.fbin")
    spec = get_dataset("p", known_datasets(toml, tmp_path))
    ds = open_dataset(spec, tmp_path / "cache")
    assert ds.gt_source == f"file {out}" and ds.gt_k == 100
    want = exact_knn(np.asarray(open_vectors(base_path, None, "b")), q, 100, "l2")
    np.testing.assert_array_equal(ds.gt_ids, want.ids)

    # other queries of the same shape: the distances spot check would pass for some, the fingerprint never does
    write_fbin(tmp_path / "q2.fbin", q + 1e-3)
    declare("q2.fbin")
    with pytest.raises(
        DatasetError, match=r"^dataset p: ground truth refused: .*out\.json was computed for other vectors"
    ):
        open_dataset(get_dataset("p", known_datasets(toml, tmp_path)), tmp_path / "cache")

    assert main([*args, f"--output-path={tmp_path / 'gt' / 'k10.npy'}", "--k=10"]) == 0
    toml.write_text(f'[datasets.p]\nbase = "{base_path.name}"\nqueries = "q.fbin"\nground_truth = "gt/k10.npy"\n')
    with pytest.raises(DatasetError, match=r"holds k=10 neighbours per query, fewer than the 100 asked"):
        open_dataset(get_dataset("p", known_datasets(toml, tmp_path)), tmp_path / "cache")
