"""Tests for vq_cases.metrics against independent brute-force loops, faiss's helpers and constructed ties."""

from __future__ import annotations

import itertools
import math
import warnings

import faiss
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vq_benchmark.fixtures import ground_truth
from vq_benchmark.vq_cases.metrics import (
    RECALL_KS,
    TIE_RTOL,
    MSEAccumulator,
    distance_recalls,
    exact_distances,
    k_recall_at_k,
    k_recall_at_k_by_distance,
    one_recall_at_r,
    one_recall_at_r_by_distance,
    reconstruction_mse,
)

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


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    d=st.integers(1, 10),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_accumulator_conventions_chunked_equal_loops(seed, n, d, cuts):
    """mse_per_dim (the seeds' per-element MSE) and mean_l2_error (faiss codec wiki) on the same streaming pass."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x_hat = (x + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    acc = MSEAccumulator()
    for lo, hi in itertools.pairwise([0, *sorted(c for c in cuts if c <= n), n]):
        acc.add(x[lo:hi], x_hat[lo:hi])
    elems = [(float(a) - float(b)) ** 2 for a, b in zip(x.ravel(), x_hat.ravel(), strict=True)]
    assert acc.mse_per_dim == pytest.approx(math.fsum(elems) / (n * d), rel=1e-12)
    norms = [math.sqrt(math.fsum(elems[i * d : (i + 1) * d])) for i in range(n)]
    assert acc.mean_l2_error == pytest.approx(math.fsum(norms) / n, rel=1e-12)
    assert acc.mean_l2_error**2 <= acc.mse * (1 + 1e-12)


def test_every_metric_is_documented():
    """The registry is the list: each metric is declared once and documented in docs/METRICS.md."""
    from pathlib import Path

    from vq_benchmark.reports.schema import METRIC_NAMES, METRICS

    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    assert all(m.unit is not None and m.description for m in METRICS)
    text = (Path(__file__).resolve().parent.parent / "docs" / "METRICS.md").read_text()
    missing = [name for name in METRIC_NAMES if f"`{name}`" not in text]
    assert not missing, f"metrics not documented in docs/METRICS.md: {missing}"


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


# ---------------------------------------------------------------- recall by exact distance (the row's columns)


def ref_exact_dist(base, query, i, metric):
    """One exact distance, summed with math.fsum over the float32 values the index sees."""
    x = [float(v) for v in np.asarray(base[i]).astype(np.float32)]
    y = [float(v) for v in np.asarray(query).astype(np.float32)]
    if metric == "l2":
        return math.fsum((a - b) ** 2 for a, b in zip(x, y, strict=True))
    return math.fsum(a * b for a, b in zip(x, y, strict=True))


def ref_recalls_by_distance(base, queries, res, gt, metric, k, rtol=TIE_RTOL):
    """(k-recall@k, 1-recall@k) by exact distance, the definition written out per query with Python sets."""

    def good(i, j, t):
        if j < 0:
            return False
        d, tol = ref_exact_dist(base, queries[i], j, metric), rtol * max(1.0, abs(t))
        return d <= t + tol if metric == "l2" else d >= t - tol

    total_k = total_one = 0.0
    for i in range(res.shape[0]):
        tk = ref_exact_dist(base, queries[i], int(gt[i, k - 1]), metric)
        t1 = ref_exact_dist(base, queries[i], int(gt[i, 0]), metric)
        total_k += len({int(j) for j in res[i, :k] if good(i, int(j), tk)}) / k
        total_one += any(good(i, int(j), t1) for j in res[i, :k])
    return total_k / res.shape[0], total_one / res.shape[0]


def ref_knn(base, queries, k, metric):
    """Ground truth by a plain Python loop: sort every id by (distance, id)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    sign = 1.0 if metric == "l2" else -1.0
    for i, q in enumerate(queries):
        order = sorted(range(len(base)), key=lambda j: (sign * ref_exact_dist(base, q, j, metric), j))
        out[i] = order[:k]
    return out


def brute_force_reversed_ties(base, queries, k, metric):
    """numpy brute force in float64 breaking ties by the LARGER id (the GT breaks them by the smaller)."""
    x = base.astype(np.float32).astype(np.float64)[None, :, :]
    q = queries.astype(np.float32).astype(np.float64)[:, None, :]
    key = ((q - x) ** 2).sum(axis=2) if metric == "l2" else -(q * x).sum(axis=2)
    neg_ids = np.broadcast_to(-np.arange(x.shape[1]), key.shape)
    return np.lexsort((neg_ids, key), axis=1)[:, :k].astype(np.int64)


def faiss_flat(base, queries, k, metric):
    index = faiss.IndexFlatL2(base.shape[1]) if metric == "l2" else faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def test_recall_depths_live_with_the_metrics():
    assert RECALL_KS == (1, 10, 100) and TIE_RTOL == 1e-6


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    n_distinct=st.integers(1, 6),
    n=st.integers(100, 240),
    d=st.integers(1, 6),
    metric=st.sampled_from(["l2", "ip"]),
    grid=st.booleans(),
)
def test_exact_search_scores_one_on_data_full_of_duplicates(seed, n_distinct, n, d, metric, grid):
    rng = np.random.default_rng(seed)
    # Integer grid: float32 is exact, so faiss's |q|^2 - 2q.x + |x|^2 ties exactly too (and distinct vectors
    # tie with each other). Continuous values: only the float64 brute force (copies get equal distances).
    distinct = rng.integers(-3, 4, size=(n_distinct, d)) if grid else rng.standard_normal((n_distinct, d))
    base = rng.permutation(np.resize(distinct.astype(np.float32), (n, d)))
    fresh = rng.integers(-3, 4, size=(6, d)) if grid else rng.standard_normal((6, d))
    queries = np.vstack([fresh.astype(np.float32), base[rng.integers(0, n, size=4)]])  # copies: distance 0
    gt_ids = ground_truth.exact_knn(base, queries, 100, metric)[1]
    searches = [brute_force_reversed_ties(base, queries, 100, metric)]
    if grid:
        searches.append(faiss_flat(base, queries, 100, metric))
    for res in searches:
        assert set(distance_recalls(base, queries, res, gt_ids, metric).values()) == {1.0}
        # The roles are symmetric: any exact search serves as ground truth for any other.
        assert set(distance_recalls(base, queries, gt_ids, res, metric).values()) == {1.0}


def test_id_rule_fails_a_lossless_search_on_duplicates_but_distance_rule_does_not():
    rng = np.random.default_rng(0)
    base = rng.permutation(np.repeat(rng.standard_normal((10, 8)).astype(np.float32), 30, axis=0))
    queries = rng.standard_normal((40, 8)).astype(np.float32)
    gt_dists, gt_ids = ground_truth.exact_knn(base, queries, 100, "l2")
    res = brute_force_reversed_ties(base, queries, 100, "l2")
    assert k_recall_at_k(res, gt_ids, gt_dists, 100) < 1.0
    assert one_recall_at_r(res, gt_ids, 1) == 0.0  # the GT holds the smallest copy, the search the largest
    assert set(distance_recalls(base, queries, res, gt_ids, "l2").values()) == {1.0}


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("seed", range(3))
def test_distance_recall_equals_id_recall_without_ties(seed, metric):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((300, 6)).astype(np.float32)
    queries = rng.standard_normal((15, 6)).astype(np.float32)
    gt = ref_knn(base, queries, 101, metric)
    sign = 1.0 if metric == "l2" else -1.0
    for i, q in enumerate(queries):  # no tie at any scored depth, or the two rules may rightly differ
        d = [sign * ref_exact_dist(base, q, int(j), metric) for j in gt[i]]
        assert all(d[k] - d[k - 1] > 2 * TIE_RTOL * max(1.0, abs(d[k - 1])) for k in RECALL_KS)
    gt = gt[:, :100]
    # An approximate search: the neighbours of perturbed queries, with some results missing.
    res = ref_knn(base, queries + 0.3 * rng.standard_normal(queries.shape).astype(np.float32), 100, metric)
    res[rng.random(res.shape) < 0.05] = -1
    got = distance_recalls(base, queries, res, gt, metric)
    for k in RECALL_KS:
        ref_k, ref_one = ref_recalls_by_distance(base, queries, res, gt, metric, k)
        assert got[f"recall_at_{k}"] == pytest.approx(k_recall_at_k(res, gt, None, k), abs=1e-12)
        assert got[f"recall_at_{k}"] == pytest.approx(ref_k, abs=1e-12)
        assert got[f"one_recall_at_{k}"] == pytest.approx(one_recall_at_r(res, gt, k), abs=1e-12)
        assert got[f"one_recall_at_{k}"] == pytest.approx(ref_one, abs=1e-12)
    assert 0.0 < got["recall_at_10"] < 1.0 and 0.0 < got["one_recall_at_1"] < 1.0


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_wrong_neighbours_score_below_one(metric):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((30, 8)).astype(np.float32)
    gt = ground_truth.exact_knn(base, queries, 100, metric)[1]
    pq = faiss.IndexPQ(8, 2, 4, faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    pq.train(base)
    pq.add(base)
    got = distance_recalls(base, queries, pq.search(queries, 100)[1], gt, metric)
    assert all(0.0 < v <= 1.0 for v in got.values())
    assert got["recall_at_1"] < 1.0 and got["recall_at_10"] < 1.0 and got["one_recall_at_1"] < 1.0
    farthest = brute_force_reversed_ties(base, queries, 500, metric)[:, -100:]  # the 100 worst
    assert set(distance_recalls(base, queries, farthest, gt, metric).values()) == {0.0}


def test_wrong_copy_group_on_duplicates_scores_zero_at_one():
    # Every result is an exact copy of *some* base vector, but of the second-nearest group: no credit.
    base = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]], dtype=np.float32), 40, axis=0)
    queries = np.array([[0.1, 0.0]], dtype=np.float32)
    gt = ground_truth.exact_knn(base, queries, 100, "l2")[1]
    second = np.arange(40, 50)[None, :]
    assert (
        k_recall_at_k_by_distance(
            second, exact_distances(base, queries, second, "l2"), exact_distances(base, queries, gt, "l2"), 1, "l2"
        )
        == 0.0
    )
    assert distance_recalls(base, queries, np.arange(39, -1, -1)[None, :], gt, "l2", ks=(1, 10, 40), rs=(1,)) == {
        "recall_at_1": 1.0,
        "recall_at_10": 1.0,
        "recall_at_40": 1.0,
        "one_recall_at_1": 1.0,
    }


def test_minus_one_and_repeated_ids_never_inflate():
    base = np.ones((50, 4), dtype=np.float32)  # every vector ties with every other
    queries = np.zeros((4, 4), dtype=np.float32)
    gt = np.tile(np.arange(10), (4, 1))
    res = np.array([[7] * 10, [-1] * 10, [7, -1, 7, 3, -1, 3, 7, 7, 7, 7], [*range(20, 29), 20]])
    got = distance_recalls(base, queries, res, gt, "l2", ks=(1, 10), rs=(1, 10))
    assert got["recall_at_10"] == pytest.approx((1 + 0 + 2 + 9) / 10 / 4)
    assert got["recall_at_1"] == pytest.approx(3 / 4)
    assert got["one_recall_at_1"] == pytest.approx(3 / 4) and got["one_recall_at_10"] == pytest.approx(3 / 4)
    # The -1 entries get NaN distances; even a (bogus) perfect distance next to a -1 id is not credited.
    d = exact_distances(base, queries, res, "l2")
    assert np.isnan(d[1]).all() and np.isnan(d[2, [1, 4]]).all() and (d[0] == 4.0).all()
    zeros = np.zeros(res.shape)
    assert k_recall_at_k_by_distance(res[1:2], zeros[1:2], zeros[1:2], 10, "l2") == 0.0
    assert one_recall_at_r_by_distance(res[1:2], zeros[1:2], zeros[1:2, 0], 10, "ip") == 0.0


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 8),
    k=st.integers(1, 6),
    extra=st.integers(0, 3),
    n=st.integers(1, 20),
    d=st.integers(1, 4),
    metric=st.sampled_from(["l2", "ip"]),
    grid=st.booleans(),
)
def test_recall_by_distance_in_unit_interval_and_matches_reference(seed, nq, k, extra, n, d, metric, grid):
    rng = np.random.default_rng(seed)
    base = rng.integers(-2, 3, size=(n, d)) if grid else rng.standard_normal((n, d))
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    res = random_ids(rng, nq, k + extra, n, p_missing=0.2)
    gt = rng.integers(0, n, size=(nq, k))  # any ids at all, not necessarily a true ground truth
    got = distance_recalls(base, queries, res, gt, metric, ks=(k,), rs=(k,))
    ref_k, ref_one = ref_recalls_by_distance(base, queries, res, gt, metric, k)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in got.values())
    assert got[f"recall_at_{k}"] == pytest.approx(ref_k, abs=1e-12)
    assert got[f"one_recall_at_{k}"] == pytest.approx(ref_one, abs=1e-12)


_ANY_FLOAT = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-7, 3.5, -2.0, 1e30, -1e30, np.inf, -np.inf, np.nan])


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    values=st.lists(_ANY_FLOAT, min_size=72, max_size=72),
    metric=st.sampled_from(["l2", "ip"]),
    rtol=st.sampled_from([0.0, TIE_RTOL, 0.5]),
)
def test_recall_by_distance_in_unit_interval_for_any_distances(seed, shape, values, metric, rtol):
    rng = np.random.default_rng(seed)
    nq, k = shape
    vals = np.array(values).reshape(2, 6, 6)[:, :nq, :k]
    res = random_ids(rng, nq, k, 4, p_missing=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN and inf never raise or warn
        for kk in range(1, k + 1):
            a = k_recall_at_k_by_distance(res, vals[0], vals[1], kk, metric, rtol=rtol)
            b = one_recall_at_r_by_distance(res, vals[0], vals[1], kk, metric, rtol=rtol)
            assert isinstance(a, float) and isinstance(b, float) and 0.0 <= a <= 1.0 and 0.0 <= b <= 1.0


@pytest.mark.parametrize(
    ("metric", "t", "d", "tied"),
    [
        ("l2", 2.0**20, 2.0**20 + 1.0, True),  # tol = 1e-6 * 2^20 ~ 1.05: relative to the distance
        ("l2", 2.0**20, 2.0**20 + 2.0, False),
        ("l2", 2.0**20, 0.0, True),  # closer than t is always fine
        ("l2", 1e-3, 1e-3 + 5e-7, True),  # near zero the tolerance is floored at 1e-6 (absolute)
        ("l2", 1e-3, 1e-3 + 2e-6, False),
        ("ip", 2.0**20, 2.0**20 - 1.0, True),  # larger is better for inner products
        ("ip", 2.0**20, 2.0**20 - 2.0, False),
        ("ip", -(2.0**20), -(2.0**20) - 1.0, True),  # |t| scales the tolerance for negative t too
        ("ip", -(2.0**20), -(2.0**20) - 2.0, False),
        ("ip", 0.5, 7.0, True),
    ],
)
def test_tie_tolerance_is_relative_with_floor(metric, t, d, tied):
    ids = np.array([[3]])
    expected = 1.0 if tied else 0.0
    assert k_recall_at_k_by_distance(ids, np.array([[d]]), np.array([[t]]), 1, metric) == expected
    assert one_recall_at_r_by_distance(ids, np.array([[d]]), np.array([t]), 1, metric) == expected


def test_exact_distances_match_loop_on_readonly_uint8_memmap(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "base.npy", rng.integers(0, 256, size=(40, 5), dtype=np.uint8))
    base = np.load(tmp_path / "base.npy", mmap_mode="r", allow_pickle=False)
    queries = rng.uniform(0, 255, size=(7, 5)).astype(np.float32)
    ids = random_ids(rng, 7, 9, 40, p_missing=0.2)
    for metric in ("l2", "ip"):
        want = np.array([[ref_exact_dist(base, queries[i], j, metric) if j >= 0 else np.nan for j in row]
                         for i, row in enumerate(ids)])  # fmt: skip
        for block in (1, 3, None):
            got = exact_distances(base, queries, ids, metric, block=block)
            assert got.dtype == np.float64 and got.shape == ids.shape
            np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


def test_exact_distances_cast_to_float32_first_and_keep_near_duplicates_tiny():
    base64 = np.array([[1.0 + 1e-10, 0.0]])  # float32 sees 1.0
    assert exact_distances(base64, np.array([[1.0, 0.0]], dtype=np.float32), np.array([[0]]), "l2")[0, 0] == 0.0
    # Far from the origin a norm expansion in float32 loses everything; differences keep the tiny distance.
    x = np.full((1, 64), 3000.0, dtype=np.float32)
    near = x.copy()
    near[0, 0] = np.nextafter(np.float32(3000.0), np.float32(4000.0))
    step = float(near[0, 0]) - 3000.0
    got = exact_distances(np.vstack([x, near]), x, np.array([[0, 1]]), "l2")
    assert got[0, 0] == 0.0 and got[0, 1] == step**2


def test_exact_distances_value_errors():
    base, q = np.zeros((5, 3)), np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="metric"):
        exact_distances(base, q, np.zeros((2, 1), dtype=np.int64), "cos")
    with pytest.raises(ValueError, match=r"ids must lie in \[-1, 5\)"):
        exact_distances(base, q, np.array([[0], [5]]), "l2")
    with pytest.raises(ValueError, match=r"ids must lie"):
        exact_distances(base, q, np.array([[-2], [0]]), "l2")
    with pytest.raises(ValueError, match="integers"):
        exact_distances(base, q, np.zeros((2, 1)), "l2")
    with pytest.raises(ValueError, match="row count"):
        exact_distances(base, q, np.zeros((3, 1), dtype=np.int64), "l2")
    with pytest.raises(ValueError, match="dimension"):
        exact_distances(base, np.zeros((2, 4)), np.zeros((2, 1), dtype=np.int64), "l2")
    with pytest.raises(ValueError, match="block"):
        exact_distances(base, q, np.zeros((2, 1), dtype=np.int64), "l2", block=0)
    ids, dists = np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3))
    with pytest.raises(ValueError, match="result_dists shape"):
        k_recall_at_k_by_distance(ids, dists[:, :2], dists, 1, "l2")
    with pytest.raises(ValueError, match="ground-truth columns"):
        k_recall_at_k_by_distance(ids, dists, dists[:, :1], 2, "l2")
    with pytest.raises(ValueError, match="result columns"):
        one_recall_at_r_by_distance(ids, dists, dists, 4, "l2")
    with pytest.raises(ValueError, match="ground-truth columns"):
        distance_recalls(base, q, ids, ids[:, :2], "l2", ks=(3,), rs=())
    with pytest.raises(ValueError, match="result columns"):
        distance_recalls(base, q, ids, ids, "l2", ks=(1,), rs=(4,))
