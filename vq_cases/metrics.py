"""Accuracy metrics for vector-quantization benchmark cases (pure numpy, no faiss).

Rows store the exact-distance recalls (ann-benchmarks rule); the id-based ones stay as library functions:

- exact distances: squared L2 or inner product of each query with base[id], recomputed in float64 from the raw
  vectors (cast to float32 first, as the index sees them), as differences so near-duplicates stay tiny.
- k-recall@k by distance: mean_i |{distinct valid ids in res_i[:k] whose exact distance is within the tie
  tolerance of t_k}| / k, t_k = exact distance of gt_i[k-1]. Any tied vector (duplicates!) is a correct answer.
- 1-recall@R by distance: fraction of queries with one of res_i[:R] within the tie tolerance of t_1.
- k-recall@k by id: mean_i |set(gt_ext_i) & set(res_i[:k])| / k, where gt_ext_i = gt_i[:k] plus every GT id
  whose GT distance is within ``tie_tol`` of the k-th GT distance (big-ann-benchmarks, ties credited).
- 1-recall@R by id: fraction of queries whose true nearest neighbour gt_i[0] appears in res_i[:R] (PQ paper).
- reconstruction MSE: mean over vectors of ||x - x_hat||^2, summed over dims (faiss bench_quantizer).
- relative MSE: reconstruction MSE / mean ||x||^2, so distortion is comparable across datasets.
- per-element MSE: reconstruction MSE / d (the seeds' study convention).
- mean L2 error: mean over vectors of ||x - x_hat|| (faiss codec wiki convention); its square is <= the MSE.

-1 ids never count as hits; ids are compared with set semantics (each distinct id credited once).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RECALL_KS",
    "TIE_RTOL",
    "MSEAccumulator",
    "distance_recalls",
    "exact_distances",
    "k_recall_at_k",
    "k_recall_at_k_by_distance",
    "one_recall_at_r",
    "one_recall_at_r_by_distance",
    "reconstruction_mse",
]

RECALL_KS: tuple[int, ...] = (1, 10, 100)
"""k of k-recall@k and R of 1-recall@R stored in every row; the ground truth must hold max(RECALL_KS) columns."""

TIE_RTOL = 1e-6
"""Relative tie tolerance: d ties or beats t when d <= t + TIE_RTOL * max(1, |t|) (l2; ip: d >= t - ...)."""

_METRIC_TYPES = ("l2", "ip")

# Rows per block in k_recall_at_k: bounds the (rows, k, k_gt) boolean temporary to a few MB.
_RECALL_BLOCK_ELEMS = 1 << 22
# Elements per block in MSEAccumulator.add: bounds the float64 copies of a large chunk.
_MSE_BLOCK_ELEMS = 1 << 21
# float64 elements of the (queries, k, d) temporary in exact_distances: 16 MiB.
_DIST_BLOCK_ELEMS = 1 << 21


def _as_2d(name: str, a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (nq, k), got shape {arr.shape}")
    return arr


def k_recall_at_k(
    result_ids: np.ndarray,
    gt_ids: np.ndarray,
    gt_dists: np.ndarray | None,
    k: int,
    *,
    tie_tol: float = 1e-6,
) -> float:
    """Mean k-recall@k with ties at the k-th GT distance credited (big-ann-benchmarks rule).

    Ties matter because with duplicated or equidistant base vectors any of the tied ids is a
    correct k-th neighbour; without crediting them an exact search can score below 1.0.
    The tolerance test is symmetric, so it works for both L2 and inner-product GT.
    Pass ``gt_dists=None`` for the plain definition without tie extension.
    """
    res = _as_2d("result_ids", result_ids)
    gt = _as_2d("gt_ids", gt_ids)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if res.shape[0] != gt.shape[0]:
        raise ValueError(f"row count mismatch: result_ids has {res.shape[0]} rows, gt_ids has {gt.shape[0]}")
    if res.shape[0] == 0:
        raise ValueError("recall over zero queries is undefined")
    if k > res.shape[1]:
        raise ValueError(f"k={k} exceeds the number of result columns ({res.shape[1]})")
    if k > gt.shape[1]:
        raise ValueError(f"k={k} exceeds the number of ground-truth columns ({gt.shape[1]})")

    if gt_dists is None:
        gt_ext = gt[:, :k]
    else:
        dist = _as_2d("gt_dists", gt_dists)
        if dist.shape != gt.shape:
            raise ValueError(f"gt_dists shape {dist.shape} does not match gt_ids shape {gt.shape}")
        dist = dist.astype(np.float64, copy=False)
        kth = dist[:, k - 1 : k]
        # inf - inf is nan (compares False), so padded "no result" GT entries never become ties.
        with np.errstate(invalid="ignore"):
            keep = np.abs(dist - kth) <= tie_tol
        keep[:, :k] = True
        # Only columns that hold a tie in some row can matter; drop the rest to save compares.
        ncols = int(np.flatnonzero(keep.any(axis=0))[-1]) + 1
        keep = keep[:, :ncols]
        # Excluded entries are replaced by gt[:, 0], which is always in the set, so the set is unchanged
        # and no sentinel id (that might collide with a real id) is needed.
        gt_ext = np.where(keep, gt[:, :ncols], gt[:, :1])

    # Sorting each result row lets duplicates be found by comparing neighbours; membership does not
    # depend on order, so the sorted rows can be tested directly.
    res_sorted = np.sort(res[:, :k], axis=1)
    counted = res_sorted != -1
    counted[:, 1:] &= res_sorted[:, 1:] != res_sorted[:, :-1]

    nq = res.shape[0]
    hits = np.empty(nq, dtype=np.int64)
    block = max(1, _RECALL_BLOCK_ELEMS // (k * gt_ext.shape[1]))
    for start in range(0, nq, block):
        stop = start + block
        r = res_sorted[start:stop]
        in_gt = (r[:, :, None] == gt_ext[start:stop, None, :]).any(axis=2)
        hits[start:stop] = np.count_nonzero(in_gt & counted[start:stop], axis=1)
    return float(hits.mean() / k)


def one_recall_at_r(result_ids: np.ndarray, gt_ids: np.ndarray, r: int) -> float:
    """Fraction of queries whose true nearest neighbour gt_ids[i, 0] is among result_ids[i, :r].

    This is the 1-recall@R of the PQ paper and faiss benchs; it only needs GT's first column,
    so ``gt_ids`` may also be 1-D (one nearest-neighbour id per query).
    """
    res = _as_2d("result_ids", result_ids)
    gt = np.asarray(gt_ids)
    if gt.ndim == 1:
        gt = gt[:, None]
    gt = _as_2d("gt_ids", gt)
    if r < 1:
        raise ValueError(f"r must be >= 1, got {r}")
    if r > res.shape[1]:
        raise ValueError(f"r={r} exceeds the number of result columns ({res.shape[1]})")
    if gt.shape[1] < 1:
        raise ValueError("gt_ids has no columns")
    if res.shape[0] != gt.shape[0]:
        raise ValueError(f"row count mismatch: result_ids has {res.shape[0]} rows, gt_ids has {gt.shape[0]}")
    if res.shape[0] == 0:
        raise ValueError("recall over zero queries is undefined")
    nn = gt[:, :1]
    found = (res[:, :r] == nn).any(axis=1) & (nn[:, 0] != -1)
    return float(found.mean())


def _check_metric(metric: str) -> None:
    if metric not in _METRIC_TYPES:
        raise ValueError(f"metric must be one of {_METRIC_TYPES}, got {metric!r}")


def exact_distances(
    base: np.ndarray, queries: np.ndarray, ids: np.ndarray, metric: str, *, block: int | None = None
) -> np.ndarray:
    """Float64 squared L2 (``l2``) or inner product (``ip``) of query i with base[ids[i, j]]; NaN where ids is -1.

    Rows are cast to float32 first (what the index saw), then to float64, and L2 is summed over differences, not
    expanded as |q|^2 - 2q.x + |x|^2, so copies get equal distances and near-duplicates tiny ones.
    ``base`` may be a read-only memmap of any numeric dtype; each block of ``block`` queries reads only its
    distinct ids, in ascending order, which bounds memory and keeps memmap reads sequential.
    """
    _check_metric(metric)
    idx = _as_2d("ids", ids)
    q = _as_2d("queries", queries)
    if np.ndim(base) != 2:
        raise ValueError(f"base must be 2-D (n, d), got shape {np.shape(base)}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {idx.dtype}")
    if q.shape[0] != idx.shape[0]:
        raise ValueError(f"row count mismatch: queries has {q.shape[0]} rows, ids has {idx.shape[0]}")
    if q.shape[1] != base.shape[1]:
        raise ValueError(f"dimension mismatch: queries have d={q.shape[1]}, base has d={base.shape[1]}")
    n = int(base.shape[0])
    if idx.size and (int(idx.min()) < -1 or int(idx.max()) >= n):
        raise ValueError(f"ids must lie in [-1, {n}), got [{int(idx.min())}, {int(idx.max())}]")
    nq, k = idx.shape
    step = block if block is not None else max(1, _DIST_BLOCK_ELEMS // max(1, k * base.shape[1]))
    if step < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    out = np.full((nq, k), np.nan)
    with np.errstate(all="ignore"):  # inf/NaN vectors give inf/NaN distances, never a warning
        for q0 in range(0, nq, step):
            blk = idx[q0 : q0 + step]
            valid = blk >= 0
            if not valid.any():
                continue
            uniq, inv = np.unique(np.where(valid, blk, blk[valid][0]).ravel(), return_inverse=True)
            rows = np.asarray(base[uniq]).astype(np.float32, copy=False).astype(np.float64)
            x = rows[inv].reshape(*blk.shape, -1)
            qb = q[q0 : q0 + step].astype(np.float32, copy=False).astype(np.float64)
            if metric == "l2":
                x -= qb[:, None, :]
                dist = np.einsum("ijk,ijk->ij", x, x)
            else:
                dist = np.einsum("ijk,ik->ij", x, qb)
            out[q0 : q0 + step] = np.where(valid, dist, np.nan)
    return out


def _ties(dists: np.ndarray, true: np.ndarray, metric: str, rtol: float) -> np.ndarray:
    """True where a distance is as good as ``true`` up to rtol * max(1, |true|); NaN never ties."""
    with np.errstate(all="ignore"):
        tol = rtol * np.maximum(1.0, np.abs(true))
        return dists <= true + tol if metric == "l2" else dists >= true - tol


def _check_by_distance(
    result_ids: np.ndarray, result_dists: np.ndarray, gt_dists: np.ndarray, k: int, what: str, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_metric(metric)
    res = _as_2d("result_ids", result_ids)
    dist = _as_2d("result_dists", result_dists)
    gt = np.asarray(gt_dists, dtype=np.float64)
    gt = _as_2d("gt_dists", gt[:, None] if gt.ndim == 1 else gt)
    if dist.shape != res.shape:
        raise ValueError(f"result_dists shape {dist.shape} does not match result_ids shape {res.shape}")
    if k < 1:
        raise ValueError(f"{what} must be >= 1, got {k}")
    if k > res.shape[1]:
        raise ValueError(f"{what}={k} exceeds the number of result columns ({res.shape[1]})")
    if res.shape[0] != gt.shape[0]:
        raise ValueError(f"row count mismatch: result_ids has {res.shape[0]} rows, gt_dists has {gt.shape[0]}")
    if res.shape[0] == 0:
        raise ValueError("recall over zero queries is undefined")
    return res, dist.astype(np.float64, copy=False), gt


def k_recall_at_k_by_distance(
    result_ids: np.ndarray,
    result_dists: np.ndarray,
    gt_dists: np.ndarray,
    k: int,
    metric: str,
    *,
    rtol: float = TIE_RTOL,
) -> float:
    """Mean k-recall@k crediting every returned id whose exact distance ties or beats the k-th true one.

    ``result_dists`` and ``gt_dists`` must both come from :func:`exact_distances` (of the result ids and of the
    GT ids), so both sides are computed identically; t_k = gt_dists[:, k-1]. With duplicate vectors any copy is
    a correct neighbour, so an exact search scores 1 whichever copy it returns (ann-benchmarks' rule). A repeated
    id counts once and ids < 0 never count, so the value stays in [0, 1].
    """
    res, dist, gt = _check_by_distance(result_ids, result_dists, gt_dists, k, "k", metric)
    if k > gt.shape[1]:
        raise ValueError(f"k={k} exceeds the number of ground-truth columns ({gt.shape[1]})")
    ok = (res[:, :k] >= 0) & _ties(dist[:, :k], gt[:, k - 1 : k], metric, rtol)
    credited = np.sort(np.where(ok, res[:, :k], -1), axis=1)
    distinct = credited >= 0
    distinct[:, 1:] &= credited[:, 1:] != credited[:, :-1]
    return float(np.count_nonzero(distinct, axis=1).mean() / k)


def one_recall_at_r_by_distance(
    result_ids: np.ndarray,
    result_dists: np.ndarray,
    gt_dists: np.ndarray,
    r: int,
    metric: str,
    *,
    rtol: float = TIE_RTOL,
) -> float:
    """Fraction of queries where one of the first r results is as close as the true nearest neighbour (t_1).

    Distances as in :func:`k_recall_at_k_by_distance`; ``gt_dists`` may be 1-D (t_1 per query) or 2-D (column 0).
    """
    res, dist, gt = _check_by_distance(result_ids, result_dists, gt_dists, r, "r", metric)
    ok = (res[:, :r] >= 0) & _ties(dist[:, :r], gt[:, :1], metric, rtol)
    return float(ok.any(axis=1).mean())


def distance_recalls(
    base: np.ndarray,
    queries: np.ndarray,
    result_ids: np.ndarray,
    gt_ids: np.ndarray,
    metric: str,
    *,
    ks: tuple[int, ...] = RECALL_KS,
    rs: tuple[int, ...] = RECALL_KS,
    rtol: float = TIE_RTOL,
) -> dict[str, float]:
    """``recall_at_{k}`` and ``one_recall_at_{r}`` by exact distance, as the row columns store them.

    Only the result columns that are scored and the GT columns that give t_1 and t_k are rescored.
    """
    res = _as_2d("result_ids", result_ids)
    gt = _as_2d("gt_ids", gt_ids)
    if ks and max(ks) > gt.shape[1]:
        raise ValueError(f"k={max(ks)} exceeds the number of ground-truth columns ({gt.shape[1]})")
    depth = max((*ks, *rs), default=1)
    if depth > res.shape[1]:
        raise ValueError(f"k or r={depth} exceeds the number of result columns ({res.shape[1]})")
    res = res[:, :depth]
    res_d = exact_distances(base, queries, res, metric)
    cols = sorted({0, *(k - 1 for k in ks)})
    gt_d = np.full((gt.shape[0], cols[-1] + 1), np.nan)  # only t_1 and the t_k are needed
    gt_d[:, cols] = exact_distances(base, queries, gt[:, cols], metric)
    out = {f"recall_at_{k}": k_recall_at_k_by_distance(res, res_d, gt_d, k, metric, rtol=rtol) for k in ks}
    out.update({f"one_recall_at_{r}": one_recall_at_r_by_distance(res, res_d, gt_d, r, metric, rtol=rtol) for r in rs})
    return out


class MSEAccumulator:
    """Streaming reconstruction error, so the base can be encoded/decoded chunk by chunk.

    Sums are kept in float64 because summing millions of float32 squared errors loses digits.
    """

    def __init__(self) -> None:
        self._n = 0
        self._dim: int | None = None
        self._sq_err = 0.0
        self._sq_norm = 0.0
        self._l2_err = 0.0

    def add(self, x_chunk: np.ndarray, x_hat_chunk: np.ndarray) -> None:
        """Accumulate one chunk of original vectors and their reconstructions."""
        x = _as_2d("x_chunk", x_chunk)
        x_hat = _as_2d("x_hat_chunk", x_hat_chunk)
        if x.shape != x_hat.shape:
            raise ValueError(f"shape mismatch: x {x.shape} vs x_hat {x_hat.shape}")
        if self._dim is None:
            self._dim = x.shape[1]
        elif x.shape[1] != self._dim:
            raise ValueError(f"dimension changed between chunks: {self._dim} then {x.shape[1]}")
        rows = max(1, _MSE_BLOCK_ELEMS // max(1, x.shape[1]))
        # A codec that overflows (e.g. float16 beyond 65504 decodes to inf) gives an inf MSE, not a warning:
        # callers store non-finite values as NULL with a reason.
        with np.errstate(all="ignore"):
            for start in range(0, x.shape[0], rows):
                xb = x[start : start + rows].astype(np.float64)
                diff = xb - x_hat[start : start + rows].astype(np.float64)
                per_row = np.einsum("ij,ij->i", diff, diff)
                self._sq_err += float(per_row.sum())
                self._l2_err += float(np.sqrt(per_row).sum())
                self._sq_norm += float(np.einsum("ij,ij->", xb, xb))
        self._n += x.shape[0]

    @property
    def n(self) -> int:
        """Number of vectors accumulated so far."""
        return self._n

    def _require_data(self) -> None:
        if self._n == 0:
            raise ValueError("no vectors accumulated")

    @property
    def mse(self) -> float:
        """Mean over vectors of ||x - x_hat||^2."""
        self._require_data()
        return self._sq_err / self._n

    @property
    def mse_per_dim(self) -> float:
        """mse / d: the mean squared error per vector element."""
        self._require_data()
        return self.mse / max(1, self._dim or 1)

    @property
    def mean_l2_error(self) -> float:
        """Mean over vectors of ||x - x_hat|| (not squared)."""
        self._require_data()
        return self._l2_err / self._n

    @property
    def mean_sq_norm(self) -> float:
        """Mean over vectors of ||x||^2."""
        self._require_data()
        return self._sq_norm / self._n

    @property
    def relative_mse(self) -> float | None:
        """mse / mean ||x||^2, or None when every vector is zero (ratio undefined)."""
        norm = self.mean_sq_norm
        if norm == 0.0:
            return None
        return self.mse / norm


def reconstruction_mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean over vectors of ||x - x_hat||^2 (sum over dims), accumulated in float64."""
    acc = MSEAccumulator()
    acc.add(x, x_hat)
    return acc.mse
