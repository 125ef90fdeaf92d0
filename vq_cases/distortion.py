"""Distortion beyond MSE: how a codec bends distances between vectors and the ranking of each query's neighbours.

Both are measured on a fixed, seeded sample gathered during the streaming encode pass (no second read of the
base, no random access into a memory-mapped file), so they cost a few milliseconds per case:

- pairwise distance distortion (the seeds' definition): over PAIR_COUNT pairs (a, b), a != b, drawn from a seeded
  sample of PAIR_ROWS base rows, r = | ||x_hat_a - x_hat_b|| / ||x_a - x_b|| - 1 |; pairs with ||x_a - x_b|| = 0
  are skipped. Reported: mean, median and max of r (lower is better, 0 for an exact codec).
- rank-order distortion: for up to RANK_QUERIES queries (evenly spaced), the true top-RANK_K neighbours (ground
  truth ids) are ranked twice, by their exact distance to the query and by the distance of their decoded vectors;
  Spearman's rho between the two rankings (ties get average ranks), averaged over queries. 1 = the codec keeps the
  order of the true neighbours, whatever it does to the rest of the base; this is not 1 - recall (the seeds'
  "rank distortion@k", which is exactly 1 - recall@k, is not stored twice).

Distances are computed in float64 from the float32 values the codec sees. Everything here is numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "PAIR_COUNT",
    "PAIR_ROWS",
    "PAIR_SEED",
    "RANK_K",
    "RANK_QUERIES",
    "DistortionPlan",
    "DistortionSampler",
    "average_ranks",
    "pairwise_distortion",
    "plan_distortion",
    "spearman_rows",
]

PAIR_SEED = 20240811
"""Seed of the pair sample: fixed, so every codec (and every training seed) is measured on the same pairs."""
PAIR_COUNT = 10_000
PAIR_ROWS = 2_000
RANK_K = 10
RANK_QUERIES = 1_000

PAIR_METRICS = ("pair_distortion_mean", "pair_distortion_median", "pair_distortion_max")
RANK_METRIC = f"rank_spearman_at_{RANK_K}"


@dataclass(frozen=True)
class DistortionPlan:
    """Which base rows and queries the sample uses; `null` holds the parts that cannot be measured, with why."""

    pair_rows: np.ndarray  # sorted distinct base rows of the pair sample
    pair_a: np.ndarray  # positions into pair_rows
    pair_b: np.ndarray
    rank_queries: np.ndarray  # query indices
    rank_ids: np.ndarray  # len(rank_queries) x rank_k ground-truth ids
    null: dict[str, str]


def plan_distortion(
    n_base: int,
    gt_ids: np.ndarray,
    *,
    pairs: int = PAIR_COUNT,
    pair_rows: int = PAIR_ROWS,
    rank_k: int = RANK_K,
    rank_queries: int = RANK_QUERIES,
    seed: int = PAIR_SEED,
) -> DistortionPlan:
    """The sample: min(n_base, pair_rows) distinct rows drawn with `seed`, `pairs` pairs of distinct rows among
    them (uniform, with replacement), and min(nq, rank_queries) evenly spaced queries with their true top-k."""
    null: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    m = min(int(n_base), int(pair_rows))
    if m < 2:
        null.update(dict.fromkeys(PAIR_METRICS, f"pairwise distortion needs 2 base vectors, the base has {n_base}"))
        rows = np.empty(0, dtype=np.int64)
        a = b = np.empty(0, dtype=np.int64)
    else:
        rows = np.sort(rng.choice(int(n_base), size=m, replace=False)).astype(np.int64)
        a = rng.integers(0, m, size=pairs, dtype=np.int64)
        b = (a + rng.integers(1, m, size=pairs, dtype=np.int64)) % m  # never a itself
    gt = np.asarray(gt_ids)
    name = f"rank_spearman_at_{rank_k}"
    if gt.ndim != 2 or gt.shape[1] < rank_k:
        cols = gt.shape[1] if gt.ndim == 2 else 0
        null[name] = f"ground truth holds {cols} neighbours per query, fewer than k={rank_k}"
        qsel = np.empty(0, dtype=np.int64)
        ids = np.empty((0, rank_k), dtype=np.int64)
    else:
        nq = gt.shape[0]
        count = min(nq, int(rank_queries))
        qsel = np.unique(np.linspace(0, nq - 1, count).round().astype(np.int64)) if count else np.empty(0, np.int64)
        ids = np.ascontiguousarray(gt[qsel, :rank_k], dtype=np.int64)
    return DistortionPlan(rows, a, b, qsel, ids, null)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties sharing their average rank (as scipy.stats.rankdata 'average')."""
    v = np.asarray(values, dtype=np.float64)
    less = (v[..., None, :] < v[..., :, None]).sum(axis=-1)
    equal = (v[..., None, :] == v[..., :, None]).sum(axis=-1)  # counts the element itself
    return less + (equal + 1) / 2.0


def spearman_rows(exact: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (Pearson correlation of average ranks); NaN where a row is constant or
    holds a non-finite value (rho is undefined there)."""
    a = np.asarray(exact, dtype=np.float64)
    b = np.asarray(approx, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"spearman_rows needs two arrays of one 2-D shape, got {a.shape} and {b.shape}")
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    ra = average_ranks(np.where(np.isfinite(a), a, 0.0))
    rb = average_ranks(np.where(np.isfinite(b), b, 0.0))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    ss_a = np.einsum("ij,ij->i", ra, ra)
    ss_b = np.einsum("ij,ij->i", rb, rb)
    ok = finite & (ss_a > 0) & (ss_b > 0)
    rho = np.full(a.shape[0], np.nan)
    rho[ok] = np.einsum("ij,ij->i", ra[ok], rb[ok]) / np.sqrt(ss_a[ok] * ss_b[ok])
    return np.clip(rho, -1.0, 1.0)


def pairwise_distortion(
    x: np.ndarray, x_hat: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[dict[str, float], dict[str, str]]:
    """mean / median / max of | ||x_hat_a - x_hat_b|| / ||x_a - x_b|| - 1 | over the pairs (a[i], b[i]) whose
    true distance is not 0; returns (values, null reasons)."""
    x64 = np.asarray(x, dtype=np.float64)
    h64 = np.asarray(x_hat, dtype=np.float64)
    with np.errstate(all="ignore"):  # an overflowing decode gives inf/nan: the row stores those as NULL
        true = np.linalg.norm(x64[a] - x64[b], axis=1)
        approx = np.linalg.norm(h64[a] - h64[b], axis=1)
        keep = true > 0
        if not keep.any():
            reason = f"all {len(a)} sampled pairs are duplicates (||x_a - x_b|| = 0)" if len(a) else "no pairs"
            return {}, dict.fromkeys(PAIR_METRICS, reason)
        r = np.abs(approx[keep] / true[keep] - 1.0)
        values = {"pair_distortion_mean": float(r.mean())}
        values["pair_distortion_median"] = float(np.median(r))
        values["pair_distortion_max"] = float(r.max())
    return values, {}


def _distances(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise squared L2 (l2) or inner product (ip) of q[i] and x[i], float64."""
    q64 = q.astype(np.float64)
    x64 = x.astype(np.float32).astype(np.float64)
    if metric == "l2":
        diff = x64 - q64
        return np.einsum("ij,ij->i", diff, diff)
    return np.einsum("ij,ij->i", x64, q64)


class DistortionSampler:
    """Fed every (first row, x, x_hat) chunk of the encode pass; keeps the sampled pair rows and the distances of
    each sampled query's true top-k, then computes pairwise and rank-order distortion."""

    def __init__(self, plan: DistortionPlan, queries: np.ndarray, metric: str, dim: int) -> None:
        if metric not in ("l2", "ip"):
            raise ValueError(f"metric must be l2 or ip, got {metric!r}")
        self.plan, self.metric = plan, metric
        self._queries = np.asarray(queries, dtype=np.float32)
        self._px = np.zeros((len(plan.pair_rows), dim), dtype=np.float32)
        self._pxh = np.zeros((len(plan.pair_rows), dim), dtype=np.float32)
        k = plan.rank_ids.shape[1]
        flat = plan.rank_ids.ravel()
        self._order = np.argsort(flat, kind="stable")
        self._sorted_ids = flat[self._order]
        self._exact = np.full((len(plan.rank_queries), k), np.nan)
        self._approx = np.full((len(plan.rank_queries), k), np.nan)
        self._pairs_seen = 0

    def add(self, start: int, x: np.ndarray, x_hat: np.ndarray) -> None:
        stop = start + x.shape[0]
        lo, hi = np.searchsorted(self.plan.pair_rows, [start, stop])
        if hi > lo:
            local = self.plan.pair_rows[lo:hi] - start
            self._px[lo:hi] = x[local]
            self._pxh[lo:hi] = x_hat[local]
            self._pairs_seen += int(hi - lo)
        lo, hi = np.searchsorted(self._sorted_ids, [start, stop])
        if hi > lo:
            local = self._sorted_ids[lo:hi] - start
            qpos, slot = np.divmod(self._order[lo:hi], self._exact.shape[1])
            q = self._queries[self.plan.rank_queries[qpos]]
            with np.errstate(all="ignore"):
                self._exact[qpos, slot] = _distances(q, x[local], self.metric)
                self._approx[qpos, slot] = _distances(q, x_hat[local], self.metric)

    def results(self) -> tuple[dict[str, float], dict[str, str]]:
        """(metric values, metric -> why NULL) once every chunk was added."""
        plan = self.plan
        values: dict[str, float] = {}
        null = dict(plan.null)
        if not any(name in null for name in PAIR_METRICS):
            if self._pairs_seen != len(plan.pair_rows):
                raise ValueError(f"pair sample incomplete: {self._pairs_seen} of {len(plan.pair_rows)} rows added")
            got, why = pairwise_distortion(self._px, self._pxh, plan.pair_a, plan.pair_b)
            values.update(got)
            null.update(why)
        name = f"rank_spearman_at_{plan.rank_ids.shape[1]}"
        if name not in null:
            rho = spearman_rows(self._exact, self._approx)
            defined = ~np.isnan(rho)
            if defined.any():
                values[name] = float(rho[defined].mean())
            elif len(rho):
                null[name] = f"rank correlation undefined for all {len(rho)} sampled queries (tied or non-finite)"
            else:
                null[name] = "no queries"
        return values, null
