"""Accuracy metrics for vector-quantization benchmark cases (pure numpy, no faiss).

Definitions (``res`` = search result ids, ``gt`` = ground-truth ids, both nq x k, -1 = "no result"):

- k-recall@k: mean_i |set(gt_ext_i) & set(res_i[:k])| / k, where gt_ext_i = gt_i[:k] plus every GT id
  whose GT distance is within ``tie_tol`` of the k-th GT distance (big-ann-benchmarks, ties credited).
- 1-recall@R: fraction of queries whose true nearest neighbour gt_i[0] appears in res_i[:R] (PQ paper).
- reconstruction MSE: mean over vectors of ||x - x_hat||^2, summed over dims (faiss bench_quantizer).
- relative MSE: reconstruction MSE / mean ||x||^2, so distortion is comparable across datasets.

-1 ids never count as hits; ids are compared with set semantics (each distinct id credited once).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MSEAccumulator",
    "k_recall_at_k",
    "one_recall_at_r",
    "reconstruction_mse",
]

# Rows per block in k_recall_at_k: bounds the (rows, k, k_gt) boolean temporary to a few MB.
_RECALL_BLOCK_ELEMS = 1 << 22
# Elements per block in MSEAccumulator.add: bounds the float64 copies of a large chunk.
_MSE_BLOCK_ELEMS = 1 << 21


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


class MSEAccumulator:
    """Streaming reconstruction error, so the base can be encoded/decoded chunk by chunk.

    Sums are kept in float64 because summing millions of float32 squared errors loses digits.
    """

    def __init__(self) -> None:
        self._n = 0
        self._dim: int | None = None
        self._sq_err = 0.0
        self._sq_norm = 0.0

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
        for start in range(0, x.shape[0], rows):
            xb = x[start : start + rows].astype(np.float64)
            diff = xb - x_hat[start : start + rows].astype(np.float64)
            self._sq_err += float(np.einsum("ij,ij->", diff, diff))
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
