"""Distortion metrics (vq_cases/distortion.py and the MSE conventions): equal to brute-force loops on saved arrays,
hypothesis properties, the streaming sample equal to a one-shot computation, and NULL exactly where a codec
cannot decode faithfully."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.vq_cases.distortion import (
    PAIR_METRICS,
    DistortionSampler,
    average_ranks,
    pairwise_distortion,
    plan_distortion,
    spearman_rows,
)
from vq_benchmark.vq_cases.metrics import MSEAccumulator
from vq_benchmark.vq_cases.phases import DECODE_METRICS
from vq_benchmark.vq_cases.runner import CaseOutputs, run_case
from vq_benchmark.vq_cases.sweep import Case

_HYP = settings(max_examples=50, deadline=None, database=None)


# ---------------------------------------------------------------- independent references (plain loops)


def ref_pairwise(x, x_hat, a, b):
    ratios = []
    for i, j in zip(a, b, strict=True):
        true = math.sqrt(math.fsum((float(p) - float(q)) ** 2 for p, q in zip(x[i], x[j], strict=True)))
        if true == 0:
            continue
        approx = math.sqrt(math.fsum((float(p) - float(q)) ** 2 for p, q in zip(x_hat[i], x_hat[j], strict=True)))
        ratios.append(abs(approx / true - 1))
    return ratios


def ref_spearman(u, v):
    """Pearson correlation of average ranks, by loops."""

    def ranks(w):
        return [sum(1 for y in w if y < x) + (sum(1 for y in w if y == x) + 1) / 2 for x in w]

    ru, rv = ranks(list(u)), ranks(list(v))
    mu, mv = sum(ru) / len(ru), sum(rv) / len(rv)
    num = sum((p - mu) * (q - mv) for p, q in zip(ru, rv, strict=True))
    den = math.sqrt(sum((p - mu) ** 2 for p in ru) * sum((q - mv) ** 2 for q in rv))
    return num / den if den else math.nan


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    ds = open_dataset(BUILTIN["dummy-small"], tmp_path_factory.mktemp("cache"))
    return ds, training_sample(ds, 100_000, seed=0)


# ---------------------------------------------------------------- the sample


def test_plan_is_seeded_and_pairs_are_distinct_rows() -> None:
    gt = np.arange(50 * 12).reshape(50, 12) % 700
    p1, p2 = plan_distortion(700, gt, pair_rows=100, pairs=500), plan_distortion(700, gt, pair_rows=100, pairs=500)
    assert np.array_equal(p1.pair_rows, p2.pair_rows) and np.array_equal(p1.pair_a, p2.pair_a)
    assert len(p1.pair_rows) == 100 and np.all(np.diff(p1.pair_rows) > 0) and p1.pair_rows.max() < 700
    assert np.all(p1.pair_a != p1.pair_b) and len(p1.pair_a) == 500
    other = plan_distortion(700, gt, pair_rows=100, pairs=500, seed=1)
    assert not np.array_equal(other.pair_rows, p1.pair_rows)
    assert np.array_equal(p1.rank_queries, np.arange(50)) and np.array_equal(p1.rank_ids, gt[:, :10])
    few = plan_distortion(700, gt, rank_queries=7)
    assert len(few.rank_queries) == 7 and few.rank_queries[0] == 0 and few.rank_queries[-1] == 49
    assert not p1.null


def test_plan_nulls_what_cannot_be_sampled() -> None:
    one = plan_distortion(1, np.zeros((3, 1), dtype=np.int64))
    assert set(one.null) == {*PAIR_METRICS, "rank_spearman_at_10"}
    assert "2 base vectors" in one.null["pair_distortion_mean"] and "fewer than k=10" in one.null["rank_spearman_at_10"]


# ---------------------------------------------------------------- pairwise distortion


def test_pairwise_matches_loop_on_saved_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 7)).astype(np.float32)
    x[3] = x[4]  # a duplicate pair must be skipped, not divide by zero
    x_hat = (x + 0.2 * rng.standard_normal(x.shape)).astype(np.float32)
    a = np.r_[rng.integers(0, 60, 300), 3]
    b = np.r_[(a[:-1] + rng.integers(1, 60, 300)) % 60, 4]
    for name, arr in {"x": x, "x_hat": x_hat, "a": a, "b": b}.items():
        np.save(tmp_path / f"{name}.npy", arr, allow_pickle=False)
    x, x_hat, a, b = (np.load(tmp_path / f"{n}.npy", allow_pickle=False) for n in ("x", "x_hat", "a", "b"))
    got, null = pairwise_distortion(x, x_hat, a, b)
    ratios = ref_pairwise(x, x_hat, a, b)
    assert not null and len(ratios) == 300
    assert got["pair_distortion_mean"] == pytest.approx(sum(ratios) / len(ratios), rel=1e-12)
    assert got["pair_distortion_median"] == pytest.approx(float(np.median(ratios)), rel=1e-12)
    assert got["pair_distortion_max"] == pytest.approx(max(ratios), rel=1e-12)


def test_pairwise_all_duplicates_is_null() -> None:
    x = np.ones((4, 3), dtype=np.float32)
    got, null = pairwise_distortion(x, x, np.array([0, 1]), np.array([1, 2]))
    assert got == {} and set(null) == set(PAIR_METRICS) and "duplicates" in null["pair_distortion_max"]


@_HYP
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40), d=st.integers(1, 8), scale=st.floats(0.01, 100))
def test_exact_codec_has_zero_pairwise_distortion_and_scaling_is_seen(seed, n, d, scale) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    plan = plan_distortion(n, np.zeros((1, 1), dtype=np.int64), pairs=200, seed=seed)
    rows = plan.pair_rows
    got, null = pairwise_distortion(x[rows], x[rows], plan.pair_a, plan.pair_b)
    assume(not null)  # all sampled pairs duplicates (d = 1 with ties): nothing to measure
    assert got == {"pair_distortion_mean": 0.0, "pair_distortion_median": 0.0, "pair_distortion_max": 0.0}
    scaled, _ = pairwise_distortion(x[rows], x[rows] * np.float32(scale), plan.pair_a, plan.pair_b)
    expected = abs(float(np.float32(scale)) - 1)
    assert scaled["pair_distortion_median"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------- rank-order distortion


def test_average_ranks_and_spearman_match_loops() -> None:
    rng = np.random.default_rng(2)
    exact = rng.standard_normal((30, 10))
    approx = exact + rng.standard_normal((30, 10))
    approx[0] = np.round(approx[0])  # ties in one row
    approx[1] = 3.0  # a constant row: undefined
    rho = spearman_rows(exact, approx)
    for i in range(30):
        ref = ref_spearman(exact[i], approx[i])
        assert (math.isnan(rho[i]) and math.isnan(ref)) or rho[i] == pytest.approx(ref, abs=1e-12)
    assert math.isnan(rho[1])
    assert np.array_equal(average_ranks(np.array([[3.0, 1.0, 3.0, 2.0]])), np.array([[3.5, 1.0, 3.5, 2.0]]))


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(8)
    exact = rng.standard_normal((40, 10))
    approx = np.round(exact + 0.5 * rng.standard_normal((40, 10)), 1)
    ref = [stats.spearmanr(e, a).statistic for e, a in zip(exact, approx, strict=True)]
    assert spearman_rows(exact, approx) == pytest.approx(ref, abs=1e-12)


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 20),
    k=st.integers(2, 12),
    transform=st.sampled_from(["exp", "cube", "affine", "sqrt"]),
)
def test_rank_correlation_is_one_for_exact_and_invariant_to_monotone_transforms(seed, rows, k, transform) -> None:
    rng = np.random.default_rng(seed)
    exact = rng.random((rows, k)) * 10
    approx = exact + rng.standard_normal((rows, k))
    assert np.all(spearman_rows(exact, exact) == 1.0)
    f = {"exp": np.exp, "cube": lambda v: v**3, "affine": lambda v: 3 * v + 7, "sqrt": lambda v: np.sqrt(v + 100)}
    base = spearman_rows(exact, approx)
    moved = spearman_rows(f[transform](exact), f[transform](approx))
    assert np.allclose(base, moved, equal_nan=True, atol=1e-12)
    assert np.all(np.isnan(base) | ((base >= -1) & (base <= 1)))


# ---------------------------------------------------------------- the streaming sample


@_HYP
@given(
    seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 120), max_size=5), metric=st.sampled_from(["l2", "ip"])
)
def test_sampler_in_chunks_equals_one_shot(seed, cuts, metric) -> None:
    rng = np.random.default_rng(seed)
    n, d, nq = 120, 6, 9
    x = rng.standard_normal((n, d)).astype(np.float32)
    x_hat = (x + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    gt = np.argsort(((x[None] - q[:, None]) ** 2).sum(-1), axis=1)[:, :12]
    plan = plan_distortion(n, gt, pairs=400, pair_rows=50, seed=seed)
    sampler = DistortionSampler(plan, q, metric, d)
    bounds = [0, *sorted(cuts), n]
    for lo, hi in itertools.pairwise(bounds):
        sampler.add(lo, x[lo:hi], x_hat[lo:hi])
    values, null = sampler.results()
    assert not null
    one, _ = pairwise_distortion(x[plan.pair_rows], x_hat[plan.pair_rows], plan.pair_a, plan.pair_b)
    assert {k: values[k] for k in PAIR_METRICS} == pytest.approx(one, rel=1e-12)
    ids = plan.rank_ids
    qq = q[plan.rank_queries].astype(np.float64)[:, None, :]
    if metric == "l2":
        exact = ((x[ids].astype(np.float64) - qq) ** 2).sum(-1)
        approx = ((x_hat[ids].astype(np.float64) - qq) ** 2).sum(-1)
    else:
        exact = (x[ids].astype(np.float64) * qq).sum(-1)
        approx = (x_hat[ids].astype(np.float64) * qq).sum(-1)
    rho = [ref_spearman(e, a) for e, a in zip(exact, approx, strict=True)]
    assert values["rank_spearman_at_10"] == pytest.approx(float(np.nanmean(rho)), abs=1e-12)


def test_sampler_refuses_an_incomplete_pass() -> None:
    x = np.zeros((10, 2), dtype=np.float32)
    sampler = DistortionSampler(plan_distortion(10, np.zeros((1, 10), dtype=np.int64)), x[:1], "l2", 2)
    sampler.add(0, x[:5], x[:5])
    with pytest.raises(ValueError, match="incomplete"):
        sampler.results()


# ---------------------------------------------------------------- MSE conventions


@_HYP
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 50), d=st.integers(1, 16), noise=st.floats(0, 10))
def test_mse_conventions_jensen_and_per_dim(seed, n, d, noise) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x_hat = (x + noise * rng.standard_normal((n, d))).astype(np.float32)
    acc = MSEAccumulator()
    acc.add(x, x_hat)
    assert acc.mse_per_dim * d == pytest.approx(acc.mse, rel=1e-12, abs=0)
    assert acc.mean_l2_error**2 <= acc.mse * (1 + 1e-12) + 1e-300  # Jensen: mean(e)^2 <= mean(e^2)
    norms = [
        math.sqrt(math.fsum((float(a) - float(b)) ** 2 for a, b in zip(r, h, strict=True)))
        for r, h in zip(x, x_hat, strict=True)
    ]
    assert acc.mean_l2_error == pytest.approx(math.fsum(norms) / n, rel=1e-12, abs=1e-300)


# ---------------------------------------------------------------- rows of real cases


def test_row_distortion_matches_independent_computation(small, tmp_path: Path) -> None:
    ds, xt = small
    row = run_case(Case("dummy-small", "pq", (("M", 8), ("nbits", 8))), ds, xt, CaseOutputs(None, tmp_path))
    index = faiss.read_index(row["codec_path"])
    base = np.asarray(ds.base, dtype=np.float32)
    recon = index.sa_decode(index.sa_encode(base))
    err = np.linalg.norm(base.astype(np.float64) - recon, axis=1)
    assert row["mean_l2_error"] == pytest.approx(float(err.mean()), rel=1e-9)
    assert row["mse_per_dim"] == pytest.approx(float((err**2).mean()) / ds.dim, rel=1e-9)
    assert row["mse_per_dim"] * ds.dim == pytest.approx(row["mse"], rel=1e-12)
    plan = plan_distortion(ds.n_base, ds.gt_ids)
    a, b = plan.pair_rows[plan.pair_a], plan.pair_rows[plan.pair_b]
    true = np.linalg.norm(base[a].astype(np.float64) - base[b], axis=1)
    approx = np.linalg.norm(recon[a].astype(np.float64) - recon[b], axis=1)
    r = np.abs(approx[true > 0] / true[true > 0] - 1)
    assert row["pair_distortion_mean"] == pytest.approx(float(r.mean()), rel=1e-9)
    assert row["pair_distortion_median"] == pytest.approx(float(np.median(r)), rel=1e-9)
    assert row["pair_distortion_max"] == pytest.approx(float(r.max()), rel=1e-9)
    ids = ds.gt_ids[:, :10]
    q = ds.queries.astype(np.float64)[:, None, :]
    exact = ((base[ids].astype(np.float64) - q) ** 2).sum(-1)
    decoded = ((recon[ids].astype(np.float64) - q) ** 2).sum(-1)
    rho = [ref_spearman(e, d) for e, d in zip(exact, decoded, strict=True)]
    assert row["rank_spearman_at_10"] == pytest.approx(float(np.nanmean(rho)), abs=1e-9)
    assert 0 < row["rank_spearman_at_10"] < 1 and 0 < row["pair_distortion_mean"] < row["pair_distortion_max"]


def test_rank_correlation_is_not_one_minus_recall(small) -> None:
    """SQ8 keeps almost every true neighbour (recall near 1) yet reorders near-ties inside the top 10."""
    ds, xt = small
    row = run_case(Case("dummy-small", "sq8", ()), ds, xt, CaseOutputs(None, None))
    assert row["rank_spearman_at_10"] < 1.0 and row["rank_spearman_at_10"] > 0.9
    assert abs((1 - row["recall_at_10"]) - (1 - row["rank_spearman_at_10"])) > 1e-6


@pytest.mark.parametrize(
    ("method", "params", "faithful"),
    [
        ("sq8", (), True),
        ("pq", (("M", 8), ("nbits", 6)), True),
        ("python", (("quantizer", "lvq"), ("bits", 4)), True),
        ("rabitq", (("nbits", 1),), False),
        ("rabitq", (("nbits", 4),), False),
        ("itq_lsh", (("nbits", 32),), False),
    ],
)
def test_decode_metrics_null_exactly_where_decoding_is_not_faithful(small, method, params, faithful) -> None:
    ds, xt = small
    row = run_case(Case("dummy-small", method, params), ds, xt, CaseOutputs(None, None))
    reasons = json.loads(row.get("null_reasons_json", "{}"))
    if faithful:
        assert all(isinstance(row.get(name), float) for name in DECODE_METRICS), reasons
        assert not set(reasons) & set(DECODE_METRICS)
    else:
        assert not set(row) & set(DECODE_METRICS)
        assert set(DECODE_METRICS) <= set(reasons)
        assert len({reasons[name] for name in DECODE_METRICS}) == 1  # the same reason as mse
        assert ("RaBitQ" if method == "rabitq" else "ITQ/LSH") in reasons["mse"]
    assert row["recall_at_10"] > 0  # the asymmetric search is measured either way


def test_exact_codec_row_has_no_distortion(small, monkeypatch) -> None:
    """A lossless codec (faiss Flat): zero error in every convention, rank correlation 1, symmetric recall 1."""
    from vq_benchmark.vq_cases import methods

    ds, xt = small
    flat = methods.Method(
        "flat", "exact", (), lambda p, d, m: methods.Built(methods.FaissCodec.from_factory("Flat", d, m))
    )
    monkeypatch.setitem(methods.METHODS, "flat", flat)
    row = run_case(Case("dummy-small", "flat", ()), ds, xt, CaseOutputs(None, None))
    assert row["mse"] == row["mse_per_dim"] == row["mean_l2_error"] == 0.0
    assert row["pair_distortion_mean"] == row["pair_distortion_median"] == row["pair_distortion_max"] == 0.0
    assert row["rank_spearman_at_10"] == 1.0
    assert row["symmetric_one_recall_at_1"] == row["symmetric_recall_at_10"] == 1.0
