"""The synthetic dataset must look like embeddings (clustered, low-rank, offset), not like iid noise."""

from __future__ import annotations

import time

import faiss
import numpy as np
import pytest

from vq_benchmark.fixtures.synthetic import make_low_rank_dataset

pytestmark = pytest.mark.smoke

SHAPE = {"n_base": 5000, "n_queries": 200, "dim": 64}
MODEL = {"intrinsic_dim": 16, "n_clusters": 20}


def explained(x: np.ndarray, top: int) -> float:
    """Fraction of the total variance carried by the top principal components."""
    ev = np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False))[::-1]
    return float(ev[:top].sum() / ev.sum())


def test_shapes_and_dtypes() -> None:
    base, queries = make_low_rank_dataset(**SHAPE, **MODEL, seed=0)
    for arr, n in ((base, 5000), (queries, 200)):
        assert arr.shape == (n, 64)
        assert arr.dtype == np.float32
        assert arr.flags.c_contiguous
        assert np.isfinite(arr).all()
    empty = make_low_rank_dataset(3, 0, 5, intrinsic_dim=5, n_clusters=1, seed=0)[1]
    assert empty.shape == (0, 5)


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    a_base, a_q = make_low_rank_dataset(**SHAPE, **MODEL, seed=42)
    b_base, b_q = make_low_rank_dataset(**SHAPE, **MODEL, seed=42)
    np.testing.assert_array_equal(a_base, b_base)
    np.testing.assert_array_equal(a_q, b_q)
    c_base, c_q = make_low_rank_dataset(**SHAPE, **MODEL, seed=43)
    assert not np.allclose(a_base, c_base)
    assert not np.allclose(a_q, c_q)


def test_queries_are_an_independent_stream() -> None:
    """Same distribution, different points; growing the base leaves the queries alone."""
    base, queries = make_low_rank_dataset(**SHAPE, **MODEL, seed=1)
    _, queries_big_base = make_low_rank_dataset(8000, 200, 64, **MODEL, seed=1)
    np.testing.assert_array_equal(queries, queries_big_base)
    assert not np.isin(queries[:, 0], base[:, 0]).any()
    # Same distribution: the means and total variances agree to sampling error.
    spread = np.sqrt(base.var(axis=0).sum())
    assert np.linalg.norm(base.mean(0) - queries.mean(0)) < 0.3 * spread
    assert 0.7 < queries.var(axis=0).sum() / base.var(axis=0).sum() < 1.4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_low_intrinsic_dimension(seed: int) -> None:
    base, _ = make_low_rank_dataset(**SHAPE, **MODEL, seed=seed)
    iid = np.random.default_rng(seed).standard_normal(base.shape).astype(np.float32)
    assert explained(base, 16) > 0.9
    assert explained(iid, 16) < 0.4  # ~16/64 plus sampling noise
    # A decaying spectrum: the leading direction dominates the 16th, unlike for isotropic data.
    ev = np.linalg.eigvalsh(np.cov(base, rowvar=False))[::-1]
    assert ev[0] / ev[15] > 10


def test_nonzero_mean_offset() -> None:
    base, _ = make_low_rank_dataset(**SHAPE, **MODEL, seed=5)
    per_coord_std = np.sqrt(base.var(axis=0).mean())
    assert np.linalg.norm(base.mean(axis=0)) > 1.0 * per_coord_std


@pytest.mark.parametrize("seed", [0, 3])
def test_clustered_not_gaussian(seed: int) -> None:
    """k-means explains much more of the variance than on a Gaussian with the very same covariance."""
    base, _ = make_low_rank_dataset(5000, 1, 32, intrinsic_dim=8, n_clusters=10, seed=seed)
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(np.cov(base, rowvar=False) + 1e-9 * np.eye(32))
    gauss = (rng.standard_normal(base.shape) @ chol.T + base.mean(0)).astype(np.float32)

    def residual(x: np.ndarray) -> float:
        km = faiss.Kmeans(32, 10, niter=20, seed=1)
        km.train(x)
        d, _ = km.index.search(x, 1)
        return float(d.mean() / ((x - x.mean(0)) ** 2).sum(1).mean())

    assert residual(base) < 0.7 * residual(gauss)


def test_fast() -> None:
    make_low_rank_dataset(100, 10, 8, intrinsic_dim=2, n_clusters=2, seed=0)  # warm-up imports/BLAS
    t0 = time.perf_counter()
    make_low_rank_dataset(10_000, 100, 64, intrinsic_dim=16, n_clusters=32, seed=0)
    assert time.perf_counter() - t0 < 1.0  # ~10 ms in practice; generous for loaded CI machines


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"intrinsic_dim": 0, "n_clusters": 3}, "intrinsic_dim"),
        ({"intrinsic_dim": 65, "n_clusters": 3}, "intrinsic_dim"),
        ({"intrinsic_dim": 4, "n_clusters": 0}, "n_clusters"),
    ],
)
def test_rejects_bad_arguments(args: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_low_rank_dataset(10, 1, 64, **args, seed=0)
