"""Exact k-NN ground truth, its validation, its cache and the atomic writes under it.

Every recall number in a report is measured against exact_knn, so it is checked against an independent
float64 brute force (full distance matrix, lexsort on (distance, id)) and against faiss' flat indexes.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.fixtures.ground_truth import (
    GroundTruthError,
    VectorValueError,
    exact_knn,
    load_cached_gt,
    save_cached_gt,
    validate_ground_truth,
)
from vq_benchmark.reports.atomic import atomic_open, atomic_write_bytes

pytestmark = pytest.mark.smoke


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference: every distance in float64, ties by id; same float32 view of the data as exact_knn."""
    x = np.asarray(base, dtype=np.float32).astype(np.float64)
    q = np.asarray(queries, dtype=np.float32).astype(np.float64)
    if metric == "l2":
        full = ((q[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
        key = full
    else:
        full = q @ x.T
        key = -full
    ids = np.broadcast_to(np.arange(len(x)), key.shape)
    order = np.lexsort((ids, key), axis=-1)[:, :k]
    return np.take_along_axis(full, order, axis=1).astype(np.float32), order


def exact_dists(base: np.ndarray, queries: np.ndarray, ids: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(base, dtype=np.float32).astype(np.float64)[ids]
    q = np.asarray(queries, dtype=np.float32).astype(np.float64)[:, None, :]
    return ((x - q) ** 2).sum(-1) if metric == "l2" else (x * q).sum(-1)


def make_data(kind: str, n: int, nq: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "integer":  # a handful of values: exact distance ties everywhere
        return (
            rng.integers(-2, 3, (n, d)).astype(np.float32),
            rng.integers(-2, 3, (nq, d)).astype(np.float32),
        )
    base = rng.standard_normal((n, d), dtype=np.float32)
    queries = rng.standard_normal((nq, d), dtype=np.float32)
    if kind == "offset":  # a large common mean: float32 |x|^2 - 2 q.x alone would cancel catastrophically
        base = (base * 0.01 + 1000.0).astype(np.float32)
        queries = (queries * 0.01 + 1000.0).astype(np.float32)
    return base, queries


# ------------------------------------------------------------------------------------------------------------
# exact_knn
# ------------------------------------------------------------------------------------------------------------


@st.composite
def knn_cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 60))
    nq = draw(st.integers(1, 12))
    return {
        "n": n,
        "nq": nq,
        "d": draw(st.integers(1, 6)),
        "k": draw(st.integers(1, n)),
        "chunk_rows": draw(st.integers(1, n + 3)),
        "query_block": draw(st.integers(1, nq + 2)),
        "metric": draw(st.sampled_from(["l2", "ip"])),
        "kind": draw(st.sampled_from(["normal", "integer", "offset"])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=knn_cases())
def test_exact_knn_matches_brute_force(case: dict) -> None:
    base, queries = make_data(case["kind"], case["n"], case["nq"], case["d"], case["seed"])
    k, metric = case["k"], case["metric"]
    dists, ids = exact_knn(base, queries, k, metric, chunk_rows=case["chunk_rows"], query_block=case["query_block"])
    ref_d, ref_i = brute_force(base, queries, k, metric)
    assert dists.dtype == np.float32 and ids.dtype == np.int64
    assert dists.shape == ids.shape == (case["nq"], k)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(dists, ref_d)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize(("chunk_rows", "query_block"), [(65536, 1024), (1000, 64), (333, 37), (7, 1000)])
def test_exact_knn_chunking_and_blocking(metric: str, chunk_rows: int, query_block: int) -> None:
    """chunk_rows smaller than k and not dividing n; query_block not dividing nq."""
    base, queries = make_data("normal", 2000, 101, 12, seed=1)
    dists, ids = exact_knn(base, queries, 20, metric, chunk_rows=chunk_rows, query_block=query_block)
    ref_d, ref_i = brute_force(base, queries, 20, metric)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(dists, ref_d)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_knn_agrees_with_faiss_flat(metric: str) -> None:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((5000, 24), dtype=np.float32)
    queries = rng.standard_normal((64, 24), dtype=np.float32)
    k = 50
    dists, ids = exact_knn(base, queries, k, metric, chunk_rows=1500, query_block=50)

    index = faiss.IndexFlatL2(24) if metric == "l2" else faiss.IndexFlatIP(24)
    index.add(base)
    f_dists, f_ids = index.search(queries, k)
    np.testing.assert_allclose(dists, f_dists, rtol=1e-4, atol=1e-4)
    # Ids may only differ where faiss' float32 distances cannot separate two neighbours.
    differ = ids != f_ids
    theirs = exact_dists(base, queries, f_ids, metric)
    np.testing.assert_allclose(theirs[differ], dists[differ], rtol=1e-5, atol=1e-5)
    assert differ.mean() < 0.01


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind", ["normal", "offset"])
def test_exact_knn_distances_are_float64_exact(metric: str, kind: str) -> None:
    base, queries = make_data(kind, 3000, 40, 32, seed=3)
    dists, ids = exact_knn(base, queries, 30, metric, chunk_rows=1024)
    np.testing.assert_allclose(dists, exact_dists(base, queries, ids, metric), rtol=1e-6, atol=0)
    step = np.diff(dists.astype(np.float64), axis=1)
    assert (step >= 0).all() if metric == "l2" else (step <= 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_exact_knn_memmap_base(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(5)
    base = (rng.random((3000, 16)) * 200).astype(dtype)
    queries = (rng.random((30, 16)) * 200).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    mapped = np.load(tmp_path / "base.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    got = exact_knn(mapped, queries, 25, "l2", chunk_rows=700, query_block=16)
    want = exact_knn(base.astype(np.float32), queries, 25, "l2")
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.dists, want.dists)
    np.testing.assert_array_equal(got.ids, brute_force(base, queries, 25, "l2")[1])


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_knn_duplicates_sorted_by_id(metric: str) -> None:
    """Equal distances come in ascending id order, and the smallest ids win the last places."""
    rng = np.random.default_rng(11)
    distinct = rng.standard_normal((40, 8), dtype=np.float32)
    base = distinct[rng.permutation(np.repeat(np.arange(40), 6))]  # 6 copies of each, scattered
    queries = rng.standard_normal((25, 8), dtype=np.float32)
    dists, ids = exact_knn(base, queries, 20, metric, chunk_rows=50, query_block=10)
    np.testing.assert_array_equal(ids, brute_force(base, queries, 20, metric)[1])
    same = dists[:, 1:] == dists[:, :-1]
    assert same.sum() >= 25 * 10  # the test really is about ties
    assert (ids[:, 1:][same] > ids[:, :-1][same]).all()


def test_exact_knn_tie_group_larger_than_margin() -> None:
    """200 copies of the nearest vector, k=10: the float32 pass keeps only k + margin, so certification has
    to notice the tie group spilling over and widen the search until the 10 smallest ids are found."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((3000, 4), dtype=np.float32) + 5.0
    copies = rng.choice(3000, 200, replace=False)
    base[copies] = 0.0
    queries = np.zeros((3, 4), dtype=np.float32)
    dists, ids = exact_knn(base, queries, 10, "l2", chunk_rows=512)
    np.testing.assert_array_equal(ids, np.tile(np.sort(copies)[:10], (3, 1)))
    assert (dists == 0).all()


def test_exact_knn_is_deterministic() -> None:
    base, queries = make_data("integer", 500, 20, 3, seed=4)
    a = exact_knn(base, queries, 30, "ip", chunk_rows=64)
    b = exact_knn(base, queries, 30, "ip", chunk_rows=64)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.dists, b.dists)


def test_exact_knn_rejects_bad_arguments() -> None:
    base, queries = make_data("normal", 10, 2, 3, seed=0)
    with pytest.raises(ValueError, match="exceeds"):
        exact_knn(base, queries, 11, "l2")
    with pytest.raises(ValueError, match="metric"):
        exact_knn(base, queries, 1, "cosine")
    with pytest.raises(ValueError, match="dimension"):
        exact_knn(base, queries[:, :2], 1, "l2")
    with pytest.raises(ValueError, match="positive"):
        exact_knn(base, queries, 0, "l2")
    bad = base.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        exact_knn(bad, queries, 1, "l2")
    bad_q = queries.copy()
    bad_q[1, 0] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        exact_knn(base, bad_q, 1, "l2")  # queries are checked too
    empty = exact_knn(base, queries[:0], 4, "l2")
    assert empty.dists.shape == empty.ids.shape == (0, 4)


@pytest.mark.parametrize(
    ("dtype", "value", "detail"),
    [
        (np.float32, np.nan, "row 37 holds NaN/inf (column 2: nan)"),
        (np.float32, -np.inf, "row 37 holds NaN/inf (column 2: -inf)"),
        (np.float32, 1e30, "values too large for float32 distances (row 37, max |x| = 1e+30)"),
        (np.float64, 1e39, "values too large for float32 distances (row 37, max |x| = 1e+39)"),
    ],
)
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_knn_names_the_bad_base_row(dtype: type, value: float, detail: str, metric: str) -> None:
    """The error says which row, so open_dataset can re-raise it naming the base file without a second scan."""
    base, queries = make_data("normal", 50, 3, 4, seed=1)
    base = base.astype(dtype)
    base[37, 2] = value
    with np.errstate(over="ignore"), pytest.raises(VectorValueError) as info:
        exact_knn(base, queries, 5, metric, chunk_rows=16)
    assert info.value.detail == detail
    assert str(info.value) == f"exact_knn: base {detail}"


# ------------------------------------------------------------------------------------------------------------
# validate_ground_truth
# ------------------------------------------------------------------------------------------------------------

GOOD_IDS = np.arange(40, dtype=np.int32).reshape(10, 4) % 7


def _with(value: object, r: int, c: int, arr: np.ndarray) -> np.ndarray:
    out = arr.astype(np.result_type(arr, np.asarray(value)))
    out[r, c] = value
    return out


@pytest.mark.parametrize(
    ("ids", "dists", "expected"),
    [
        (GOOD_IDS.tolist(), None, "expected a numpy array of neighbour ids, got list"),
        (GOOD_IDS.ravel(), None, "expected a 2-D array of neighbour ids (queries x k), got shape (40,)"),
        (GOOD_IDS.astype(np.float32), None, "expected integer neighbour ids, got dtype float32"),
        (GOOD_IDS[:9], None, "expected 10 rows (one per query), got 9"),
        (GOOD_IDS[:, :0], None, "expected at least 1 neighbour per query, got 0 columns"),
        (_with(7, 2, 3, GOOD_IDS), None, "expected ids in [0, 7) (base size), got 7 at row 2, column 3"),
        (_with(-1, 0, 1, GOOD_IDS), None, "expected ids in [0, 7) (base size), got -1 at row 0, column 1"),
        (GOOD_IDS, np.zeros((10, 3)), "expected distances of the ids' shape (10, 4), got (10, 3)"),
        (
            GOOD_IDS,
            _with(np.nan, 4, 2, np.zeros((10, 4))),
            "expected finite distances, got nan at row 4, column 2",
        ),
        (
            GOOD_IDS,
            _with(np.inf, 9, 0, np.zeros((10, 4))),
            "expected finite distances, got inf at row 9, column 0",
        ),
        (GOOD_IDS, np.zeros((10, 4), dtype=bool), "expected floating-point distances, got bool"),
        (GOOD_IDS, np.zeros((10, 4), dtype=np.int64), "expected floating-point distances, got int64"),
        (GOOD_IDS, np.zeros((10, 4), dtype=np.complex64), "expected floating-point distances, got complex64"),
        (
            GOOD_IDS,
            _with(1e39, 3, 1, np.zeros((10, 4))),
            "expected distances within the float32 range, got 1e+39 at row 3, column 1",
        ),
        (
            np.tile(np.arange(8), (10, 1)),
            None,
            "expected at most 7 neighbours per query (base size), got 8 columns",
        ),
        (
            _with(6, 3, 2, np.tile(np.array([0, 6, 1, 2]), (10, 1))),
            None,
            "expected distinct ids per row, got id 6 twice in row 3 (columns 1 and 2)",
        ),
    ],
)
def test_validate_ground_truth_errors(ids: np.ndarray, dists: np.ndarray | None, expected: str) -> None:
    with pytest.raises(GroundTruthError) as info:
        validate_ground_truth(ids, dists, n_base=7, n_queries=10, source="mydata/gt.npy")
    message = str(info.value)
    assert message == f"ground truth mydata/gt.npy: {expected}"
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


SORTED = np.tile(np.array([0.0, 1.0, 1.0, 2.5]), (10, 1))
DISTINCT = np.tile(np.arange(4), (10, 1))


@pytest.mark.parametrize(
    ("dists", "metric", "expected"),
    [
        (_with(0.5, 6, 2, SORTED), "l2", "(ascending for metric l2), got 0.5 after 1 at row 6, column 2"),
        (_with(3.0, 0, 0, SORTED), "l2", "(ascending for metric l2), got 1 after 3 at row 0, column 1"),
        (SORTED, "ip", "(descending for metric ip), got 1 after 0 at row 0, column 1"),
    ],
)
def test_validate_ground_truth_order(dists: np.ndarray, metric: str, expected: str) -> None:
    with pytest.raises(GroundTruthError) as info:
        validate_ground_truth(DISTINCT, dists, n_base=7, n_queries=10, source="i.npy", metric=metric)
    assert str(info.value) == f"ground truth i.npy: expected distances sorted best-first {expected}"
    validate_ground_truth(DISTINCT, dists, n_base=7, n_queries=10, source="i.npy")  # no metric: order unchecked


def test_validate_ground_truth_names_the_distances_file() -> None:
    with pytest.raises(GroundTruthError) as info:
        validate_ground_truth(
            DISTINCT, SORTED.astype(np.int32), n_base=7, n_queries=10, source="ids.npy", dists_source="d.npy"
        )
    assert str(info.value) == "ground truth distances d.npy: expected floating-point distances, got int32"
    with pytest.raises(GroundTruthError, match=r"^ground truth ids\.npy: "):  # an ids problem still names the ids
        validate_ground_truth(DISTINCT[:2], SORTED, n_base=7, n_queries=10, source="ids.npy", dists_source="d.npy")
    with pytest.raises(ValueError, match="metric"):
        validate_ground_truth(DISTINCT, SORTED, n_base=7, n_queries=10, source="ids.npy", metric="cosine")


@st.composite
def sorted_gt(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Distinct ids per row and best-first distances with ties (a few distinct values)."""
    nq, k = draw(st.integers(1, 8)), draw(st.integers(1, 12))
    n = k + draw(st.integers(0, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = np.stack([rng.permutation(n)[:k] for _ in range(nq)])
    dists = np.sort(rng.integers(0, 4, (nq, k)).astype(np.float32) + rng.random((nq, 1), dtype=np.float32), axis=1)
    metric = draw(st.sampled_from(["l2", "ip"]))
    return ids, dists if metric == "l2" else dists[:, ::-1], n, metric


@settings(max_examples=80, deadline=None)
@given(case=sorted_gt())
def test_sorted_random_ground_truth_is_accepted(case: tuple) -> None:
    ids, dists, n, metric = case
    validate_ground_truth(ids, dists, n_base=n, n_queries=len(ids), source="g", metric=metric)


@settings(max_examples=80, deadline=None)
@given(case=sorted_gt(), data=st.data())
def test_duplicated_id_in_a_random_row_is_refused(case: tuple, data: st.DataObject) -> None:
    ids, dists, n, metric = case
    k = ids.shape[1]
    if k < 2:
        return
    r = data.draw(st.integers(0, len(ids) - 1))
    c0, c1 = sorted(data.draw(st.lists(st.integers(0, k - 1), min_size=2, max_size=2, unique=True)))
    ids[r, c1] = ids[r, c0]
    with pytest.raises(GroundTruthError) as info:
        validate_ground_truth(ids, dists, n_base=n, n_queries=len(ids), source="g", metric=metric)
    assert str(info.value).endswith(f"got id {ids[r, c0]} twice in row {r} (columns {c0} and {c1})")


@settings(max_examples=80, deadline=None)
@given(case=sorted_gt(), data=st.data())
def test_inverted_pair_is_refused_at_its_position(case: tuple, data: st.DataObject) -> None:
    ids, dists, n, metric = case
    step = np.diff(dists, axis=1)
    strict = np.argwhere(step != 0)
    if len(strict) == 0:
        return
    r, c = strict[data.draw(st.integers(0, len(strict) - 1))]
    dists[r, [c, c + 1]] = dists[r, [c + 1, c]]
    with pytest.raises(GroundTruthError) as info:
        validate_ground_truth(ids, dists, n_base=n, n_queries=len(ids), source="g", metric=metric)
    assert str(info.value).endswith(f"at row {r}, column {c + 1}")  # swapping neighbours inverts only that pair


def test_validate_ground_truth_source_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(GroundTruthError) as info:
        validate_ground_truth(GOOD_IDS[:3], None, n_base=7, n_queries=10, source=tmp_path / "a\nb.ivecs")
    assert "\n" not in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_validate_ground_truth_accepts_good_input() -> None:
    validate_ground_truth(GOOD_IDS, None, n_base=7, n_queries=10, source="x")
    validate_ground_truth(GOOD_IDS.astype(np.uint64), np.ones((10, 4), np.float32), n_base=7, n_queries=10, source="x")
    base, queries = make_data("normal", 100, 5, 4, seed=0)
    dists, ids = exact_knn(base, queries, 10, "l2")
    validate_ground_truth(ids, dists, n_base=100, n_queries=5, source="synthetic")


# ------------------------------------------------------------------------------------------------------------
# cache and atomic writes
# ------------------------------------------------------------------------------------------------------------

FP = "0123abcdef"


def _gt(k: int, nq: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 10**9, (nq, k), dtype=np.int64)
    dists = np.sort(rng.random((nq, k), dtype=np.float32), axis=1)
    return ids, dists


def test_cache_roundtrip(tmp_path: Path) -> None:
    ids, dists = _gt(10)
    path = save_cached_gt(tmp_path / "cache", FP, ids, dists)
    assert path == tmp_path / "cache" / f"gt-{FP}-k10.npz"
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temp file left behind
    got = load_cached_gt(tmp_path / "cache", FP, 10)
    assert got is not None
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_array_equal(got.dists, dists)
    assert got.ids.dtype == ids.dtype and got.dists.dtype == dists.dtype
    got_i, got_d = got  # unpacks in save_cached_gt's argument order
    assert got_i is got.ids and got_d is got.dists


def test_cache_larger_k_serves_smaller_k(tmp_path: Path) -> None:
    ids50, d50 = _gt(50, seed=1)
    ids20, d20 = _gt(20, seed=2)
    save_cached_gt(tmp_path, FP, ids50, d50)
    got = load_cached_gt(tmp_path, FP, 30)
    assert got is not None
    np.testing.assert_array_equal(got.ids, ids50[:, :30])
    np.testing.assert_array_equal(got.dists, d50[:, :30])
    save_cached_gt(tmp_path, FP, ids20, d20)
    got = load_cached_gt(tmp_path, FP, 5)  # the smallest sufficient file is used
    assert got is not None
    np.testing.assert_array_equal(got.ids, ids20[:, :5])
    assert load_cached_gt(tmp_path, FP, 51) is None
    assert load_cached_gt(tmp_path, "fedcba", 5) is None
    assert load_cached_gt(tmp_path / "missing", FP, 5) is None


def test_cache_ignores_corrupt_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / f"gt-{FP}-k10.npz").write_bytes(rng.bytes(4096))
    assert load_cached_gt(tmp_path, FP, 10) is None
    ids, dists = _gt(40)
    good = save_cached_gt(tmp_path, FP, ids, dists)
    truncated = tmp_path / f"gt-{FP}-k20.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    got = load_cached_gt(tmp_path, FP, 10)  # k10 and k20 files are unreadable: falls through to k40
    assert got is not None
    np.testing.assert_array_equal(got.ids, ids[:, :10])
    np.savez(tmp_path / f"gt-{FP}-k60.npz", ids=ids, dists=dists)  # claims k=60 but holds 40 columns
    assert load_cached_gt(tmp_path, FP, 50) is None


def test_cache_rejects_non_hex_fingerprint(tmp_path: Path) -> None:
    ids, dists = _gt(3)
    with pytest.raises(ValueError, match="hex"):
        save_cached_gt(tmp_path, "../evil", ids, dists)
    with pytest.raises(ValueError, match="hex"):
        load_cached_gt(tmp_path, "not hex", 3)


def test_atomic_open_keeps_old_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"new, half written")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_atomic_open_replaces_and_respects_umask(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with atomic_open(path, "w") as f:
        f.write("héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["out.txt"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600
    with pytest.raises(ValueError, match="mode"):
        atomic_open(path, "ab").__enter__()
