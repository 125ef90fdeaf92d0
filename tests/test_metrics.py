"""Tests for vq_cases.metrics against independent brute-force loops, faiss's helpers and constructed ties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vq_benchmark.vq_cases.metrics import MSEAccumulator, k_recall_at_k, one_recall_at_r, reconstruction_mse

pytestmark = pytest.mark.smoke

# No example database (runs stay independent of saved failures); no deadline, since CI load varies.
_HYP = settings(max_examples=60, deadline=None, database=None)


# ---------------------------------------------------------------- independent reference implementations


def ref_k_recall(res, gt, gt_dists, k, tol=1e-6):
    """Per-query Python sets: the definition written out literally."""
    total = 0.0
    for i in range(res.shape[0]):
        truth = {int(g) for g in gt[i, :k]}
        if gt_dists is not None:
            t = float(gt_dists[i, k - 1])
            truth |= {int(gt[i, j]) for j in range(gt.shape[1]) if abs(float(gt_dists[i, j]) - t) <= tol}
        found = {int(r) for r in res[i, :k]} - {-1}
        total += len((truth - {-1}) & found) / k
    return total / res.shape[0]


def ref_one_recall(res, gt, r):
    hits = 0
    for i in range(res.shape[0]):
        nn = int(gt[i, 0])
        if nn != -1 and nn in [int(x) for x in res[i, :r]]:
            hits += 1
    return hits / res.shape[0]


def ref_mse(x, x_hat):
    per_vector = [
        math.fsum((float(a) - float(b)) ** 2 for a, b in zip(u, v, strict=True)) for u, v in zip(x, x_hat, strict=True)
    ]
    return math.fsum(per_vector) / len(per_vector)


def exact_knn(base, queries, k, metric="l2"):
    """numpy brute force with a stable sort, so tied ids come out in id order.

    Row-wise reductions (not BLAS) keep identical base vectors at bit-identical distances.
    """
    if metric == "l2":
        d = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(axis=2)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
    else:
        d = (queries[:, None, :] * base[None, :, :]).sum(axis=2)
        order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(d, order, axis=1)


def random_ids(rng, nq, k, n_ids, p_missing=0.0):
    ids = rng.integers(0, n_ids, size=(nq, k), dtype=np.int64)
    ids[rng.random((nq, k)) < p_missing] = -1
    return ids


# ---------------------------------------------------------------- k-recall@k


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 5, 10])
def test_k_recall_matches_set_loop_without_ties(seed, k):
    rng = np.random.default_rng(seed)
    # Small id range: many overlaps, duplicated ids inside GT and result rows, and some -1 padding.
    res = random_ids(rng, 200, 12, 30, p_missing=0.1)
    gt = random_ids(rng, 200, 15, 30, p_missing=0.05)
    got = k_recall_at_k(res, gt, None, k)
    assert got == pytest.approx(ref_k_recall(res, gt, None, k), abs=1e-12)
    assert 0.0 < got < 1.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 4, 10])
def test_k_recall_matches_set_loop_with_ties(seed, k):
    rng = np.random.default_rng(seed)
    nq, kgt = 150, 20
    res = random_ids(rng, nq, 10, 40, p_missing=0.1)
    gt = random_ids(rng, nq, kgt, 40)
    # Distances on a coarse grid so exact ties around the k-th column are frequent.
    dists = np.sort(rng.integers(0, 6, size=(nq, kgt)), axis=1).astype(np.float32)
    got = k_recall_at_k(res, gt, dists, k)
    assert got == pytest.approx(ref_k_recall(res, gt, dists, k), abs=1e-12)
    # The grid must actually produce extra credit, or this test would not exercise the tie rule.
    assert got > k_recall_at_k(res, gt, None, k)


def test_k_recall_equals_faiss_knn_intersection_measure_on_real_search():
    faiss = pytest.importorskip("faiss")
    from faiss.contrib.evaluation import knn_intersection_measure

    rng = np.random.default_rng(1)
    d, k = 16, 10
    xb = rng.standard_normal((2000, d)).astype(np.float32)
    xq = rng.standard_normal((300, d)).astype(np.float32)
    flat = faiss.IndexFlatL2(d)
    flat.add(xb)
    _, gt = flat.search(xq, k)
    pq = faiss.IndexPQ(d, 4, 4)
    pq.train(xb)
    pq.add(xb)
    _, approx = pq.search(xq, k)
    assert (approx >= 0).all()
    # knn_intersection_measure = sum_i |intersect1d(I1[i], I2[i])| / I1.size: plain k-recall@k, set semantics.
    expected = knn_intersection_measure(approx, gt)
    got = k_recall_at_k(approx, gt, None, k)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.05 < got < 0.95  # a lossy 16-bit code: neither trivially 0 nor perfect


@pytest.mark.parametrize("seed", range(3))
def test_k_recall_equals_faiss_knn_intersection_measure_with_duplicate_ids(seed):
    pytest.importorskip("faiss")
    from faiss.contrib.evaluation import knn_intersection_measure

    rng = np.random.default_rng(seed)
    # No -1 here: faiss's helper would count a shared -1, ours never does.
    res = random_ids(rng, 100, 8, 12)
    gt = random_ids(rng, 100, 8, 12)
    assert k_recall_at_k(res, gt, None, 8) == pytest.approx(knn_intersection_measure(res, gt), abs=1e-12)


def test_k_recall_counts_each_result_id_once_and_ignores_minus_one():
    gt = np.array([[1, 2, 3, 4], [-1, -1, 5, 6]])
    res = np.array([[1, 1, 1, 1], [-1, -1, 5, 7]])
    # row 0: {1} -> 1/4; row 1: -1 is shared but not credited, 5 is -> 1/4
    assert k_recall_at_k(res, gt, None, 4) == pytest.approx(0.25)
    assert k_recall_at_k(np.full((2, 4), -1), gt, None, 4) == 0.0


def test_k_recall_uses_only_first_k_result_columns():
    gt = np.array([[0, 1, 2]])
    res = np.array([[9, 8, 0, 1, 2]])
    assert k_recall_at_k(res, gt, None, 2) == 0.0
    assert k_recall_at_k(res, gt, None, 3) == pytest.approx(1 / 3)


def test_k_recall_large_input_matches_reference_on_sample():
    rng = np.random.default_rng(7)
    nq, k = 2000, 100
    gt = np.argsort(rng.random((nq, 300)), axis=1)[:, :k]
    res = gt.copy()
    swap = rng.random((nq, k)) < 0.3
    res[swap] = 1000 + rng.integers(0, 50, size=int(swap.sum()))
    got = k_recall_at_k(res, gt, None, k)
    assert got == pytest.approx(ref_k_recall(res, gt, None, k), abs=1e-12)


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 20),
    k=st.integers(1, 8),
    extra_res=st.integers(0, 4),
    extra_gt=st.integers(0, 4),
    n_ids=st.integers(1, 30),
    with_dists=st.booleans(),
)
def test_k_recall_in_unit_interval_and_matches_reference(seed, nq, k, extra_res, extra_gt, n_ids, with_dists):
    rng = np.random.default_rng(seed)
    res = random_ids(rng, nq, k + extra_res, n_ids, p_missing=0.2)
    gt = random_ids(rng, nq, k + extra_gt, n_ids, p_missing=0.1)
    dists = np.sort(rng.integers(0, 4, size=gt.shape), axis=1).astype(np.float64) if with_dists else None
    got = k_recall_at_k(res, gt, dists, k)
    assert isinstance(got, float)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(ref_k_recall(res, gt, dists, k), abs=1e-12)


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(10, 60),
    d=st.integers(1, 8),
    k=st.integers(1, 10),
    metric=st.sampled_from(["l2", "ip"]),
)
def test_exact_search_has_full_recall(seed, n, d, k, metric):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d))
    queries = rng.standard_normal((7, d))
    ids, dists = exact_knn(base, queries, k, metric)
    assert k_recall_at_k(ids, ids, dists, k) == 1.0
    assert k_recall_at_k(ids, ids, None, k) == 1.0
    assert one_recall_at_r(ids, ids, 1) == 1.0


def _tied_base(rng, n, d, k, copies, metric):
    """Base where the query's k-th neighbour has `copies` exact duplicates appended as new ids."""
    base = rng.standard_normal((n, d))
    query = rng.standard_normal((1, d))
    kth = int(exact_knn(base, query, k, metric)[0][0, k - 1])
    return np.vstack([base, np.repeat(base[kth : kth + 1], copies, axis=0)]), query


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 8),
    copies=st.integers(1, 4),
    metric=st.sampled_from(["l2", "ip"]),
)
def test_tied_id_gets_credit_only_with_gt_dists(seed, k, copies, metric):
    rng = np.random.default_rng(seed)
    base, query = _tied_base(rng, 30, 4, k, copies, metric)
    kgt = k + copies + 3
    gt, gd = exact_knn(base, query, kgt, metric)
    t = gd[0, k - 1]
    # Stable sort puts the original id at column k-1 and its copies right after it, all at exactly t.
    tied_cols = np.flatnonzero(gd[0] == t)
    assert tied_cols.tolist() == list(range(k - 1, k + copies))
    beyond = [j for j in range(k + copies, kgt) if abs(gd[0, j] - t) > 1e-6]
    assume(beyond)  # random data essentially never has a second near-tie, but do not rely on it

    # Swap the GT's k-th id for a copy at exactly the same distance: full credit only with gt_dists.
    res = gt[:, :k].copy()
    res[0, k - 1] = gt[0, k + copies - 1]
    assert k_recall_at_k(res, gt, gd, k) == 1.0
    assert k_recall_at_k(res, gt, None, k) == pytest.approx((k - 1) / k)

    # An id beyond the tie tolerance is not credited, even though it is in the GT row.
    res_far = gt[:, :k].copy()
    res_far[0, k - 1] = gt[0, beyond[0]]
    assert k_recall_at_k(res_far, gt, gd, k) == pytest.approx((k - 1) / k)


def test_tie_tolerance_boundary_is_absolute_and_symmetric():
    gt = np.array([[10, 11, 12, 13, 14]])
    tol = 1e-3
    # L2: smaller is better; IP: larger is better. The rule is |d - t| <= tol either way.
    l2 = np.array([[0.5, 1.0, 1.0 + 0.5 * tol, 1.0 + 2 * tol, 1.0 - 0.5 * tol]])
    ip = -l2
    for dists in (l2, ip):
        assert k_recall_at_k(np.array([[10, 12]]), gt, dists, 2, tie_tol=tol) == 1.0  # within tol
        assert k_recall_at_k(np.array([[10, 14]]), gt, dists, 2, tie_tol=tol) == 1.0  # within tol, other side
        assert k_recall_at_k(np.array([[10, 13]]), gt, dists, 2, tie_tol=tol) == 0.5  # beyond tol
        assert k_recall_at_k(np.array([[10, 13]]), gt, dists, 2, tie_tol=3 * tol) == 1.0
    # Exactly representable values: |1.25 - 1.0| == 0.25 sits on the boundary and is inclusive.
    on_boundary = np.array([[0.5, 1.0, 1.25]])
    assert k_recall_at_k(np.array([[10, 12]]), gt[:, :3], on_boundary, 2, tie_tol=0.25) == 1.0
    assert k_recall_at_k(np.array([[10, 12]]), gt[:, :3], on_boundary, 2, tie_tol=0.125) == 0.5


def test_padded_gt_with_infinite_distances_is_not_a_tie():
    # faiss pads missing neighbours with id -1 and distance inf (L2) / -inf (IP).
    gt = np.array([[3, -1, -1]])
    dists = np.array([[0.2, np.inf, np.inf]])
    assert k_recall_at_k(np.array([[3, -1]]), gt, dists, 2) == 0.5
    assert k_recall_at_k(np.array([[3, 7]]), gt, dists, 2) == 0.5


# ---------------------------------------------------------------- 1-recall@R


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("r", [1, 3, 10])
def test_one_recall_matches_loop(seed, r):
    rng = np.random.default_rng(seed)
    res = random_ids(rng, 300, 10, 25, p_missing=0.1)
    gt = random_ids(rng, 300, 5, 25, p_missing=0.05)
    got = one_recall_at_r(res, gt, r)
    assert got == pytest.approx(ref_one_recall(res, gt, r), abs=1e-12)
    assert one_recall_at_r(res, gt[:, 0], r) == got  # 1-D GT (nearest neighbour only)


def test_one_recall_is_monotone_in_r_and_ignores_missing():
    gt = np.array([[5, 1], [6, 2], [-1, 3]])
    res = np.array([[5, 0, 0], [0, 6, 0], [-1, -1, -1]])
    assert one_recall_at_r(res, gt, 1) == pytest.approx(1 / 3)
    assert one_recall_at_r(res, gt, 2) == pytest.approx(2 / 3)
    assert one_recall_at_r(res, gt, 3) == pytest.approx(2 / 3)


# ---------------------------------------------------------------- errors


def test_recall_value_errors():
    res = np.zeros((4, 5), dtype=np.int64)
    gt = np.zeros((4, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="result columns"):
        k_recall_at_k(res, np.zeros((4, 10), dtype=np.int64), None, 6)
    with pytest.raises(ValueError, match="ground-truth columns"):
        k_recall_at_k(res, gt, None, 4)
    with pytest.raises(ValueError, match="row count"):
        k_recall_at_k(res, np.zeros((3, 5), dtype=np.int64), None, 2)
    with pytest.raises(ValueError, match="gt_dists shape"):
        k_recall_at_k(res, gt, np.zeros((4, 2)), 2)
    with pytest.raises(ValueError, match="k must be"):
        k_recall_at_k(res, gt, None, 0)
    with pytest.raises(ValueError, match="result columns"):
        one_recall_at_r(res, gt, 6)
    with pytest.raises(ValueError, match="row count"):
        one_recall_at_r(res, np.zeros((5, 3), dtype=np.int64), 1)


# ---------------------------------------------------------------- reconstruction MSE


def test_mse_zero_when_lossless():
    x = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    assert reconstruction_mse(x, x.copy()) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_matches_hand_loop(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 9)).astype(dtype)
    x_hat = (x + 0.1 * rng.standard_normal(x.shape)).astype(dtype)
    assert reconstruction_mse(x, x_hat) == pytest.approx(ref_mse(x, x_hat), rel=1e-12)


def test_mse_accumulates_in_float64():
    # Large offset + many vectors: a float32 sum would be off around 1e-7 relative, float64 is not.
    rng = np.random.default_rng(4)
    x = (1000 + rng.standard_normal((20000, 8))).astype(np.float32)
    x_hat = (x + rng.standard_normal(x.shape).astype(np.float32)).astype(np.float32)
    acc = MSEAccumulator()
    acc.add(x, x_hat)
    exact_norm = math.fsum(float(v) ** 2 for v in x.ravel()) / len(x)
    assert acc.mean_sq_norm == pytest.approx(exact_norm, rel=1e-12)
    diff = x.astype(np.float64) - x_hat.astype(np.float64)
    assert acc.mse == pytest.approx(math.fsum((diff * diff).ravel()) / len(x), rel=1e-12)


def test_mse_uint8_does_not_wrap():
    # SIFT1B-style uint8 vectors: subtracting in uint8 would wrap 0 - 1 to 255.
    x = np.array([[0, 255], [10, 20]], dtype=np.uint8)
    x_hat = np.array([[1, 250], [10, 22]], dtype=np.uint8)
    assert reconstruction_mse(x, x_hat) == pytest.approx((1 + 25 + 0 + 4) / 2)


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    d=st.integers(1, 10),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_accumulator_chunking_equals_one_shot(seed, n, d, cuts):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x_hat = (x + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    acc = MSEAccumulator()
    for lo, hi in itertools.pairwise(bounds):
        acc.add(x[lo:hi], x_hat[lo:hi])  # empty chunks included on purpose
    assert acc.n == n
    assert acc.mse == pytest.approx(reconstruction_mse(x, x_hat), rel=1e-12)
    assert acc.mse == pytest.approx(ref_mse(x, x_hat), rel=1e-12)
    assert acc.relative_mse == pytest.approx(acc.mse / acc.mean_sq_norm, rel=1e-15)
    exact_norm = math.fsum(float(v) ** 2 for v in x.ravel()) / n
    assert acc.mean_sq_norm == pytest.approx(exact_norm, rel=1e-12)


def test_relative_mse_value_and_zero_norm():
    acc = MSEAccumulator()
    acc.add(np.array([[3.0, 4.0], [0.0, 0.0]]), np.array([[3.0, 3.0], [1.0, 0.0]]))
    assert acc.mse == pytest.approx(1.0)  # (1 + 1) / 2
    assert acc.mean_sq_norm == pytest.approx(12.5)  # (25 + 0) / 2
    assert acc.relative_mse == pytest.approx(1.0 / 12.5)

    zeros = MSEAccumulator()
    zeros.add(np.zeros((3, 2)), np.ones((3, 2)))
    assert zeros.mse == pytest.approx(2.0)
    assert zeros.relative_mse is None


def test_accumulator_errors():
    acc = MSEAccumulator()
    with pytest.raises(ValueError, match="no vectors"):
        _ = acc.mse
    with pytest.raises(ValueError, match="shape mismatch"):
        acc.add(np.zeros((2, 3)), np.zeros((2, 4)))
    acc.add(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dimension changed"):
        acc.add(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="shape mismatch"):
        reconstruction_mse(np.zeros((2, 3)), np.zeros((3, 3)))
