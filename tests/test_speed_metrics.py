"""Speed and size metrics (vq_cases/timing.py, phases.search_phase/speed_metrics) and symmetric recall: the
numbers come from the same timed calls, spreads and percentiles are ordered, sizes equal faiss's own, and the
symmetric recall equals an independent search of decoded queries."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.plugin.settings import SettingError, resolve_settings
from vq_benchmark.vq_cases import timing
from vq_benchmark.vq_cases.phases import search_phase, train_phase
from vq_benchmark.vq_cases.runner import CaseOutputs, encode_phase, run_case
from vq_benchmark.vq_cases.sweep import Case
from vq_benchmark.vq_cases.timing import (
    SearchTiming,
    current_search_timing,
    harness_rounds,
    latency_percentiles_ms,
    latency_sample,
    qps_spread,
    time_single_queries,
    use_search_timing,
)

_HYP = settings(max_examples=80, deadline=None, database=None)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    ds = open_dataset(BUILTIN["dummy-small"], tmp_path_factory.mktemp("cache"))
    return ds, training_sample(ds, 100_000, seed=0)


# ---------------------------------------------------------------- spreads and percentiles


@_HYP
@given(nq=st.integers(1, 10_000), rounds=st.lists(st.floats(1e-7, 100), min_size=1, max_size=12))
def test_qps_spread_is_ordered_and_from_the_rounds(nq, rounds) -> None:
    got = qps_spread(nq, rounds)
    assert got["qps_min"] <= got["qps_median"] <= got["qps_max"]
    assert got["qps_max"] == nq / min(rounds) and got["qps_min"] == nq / max(rounds)
    assert got["qps_median"] == pytest.approx(float(np.median([nq / r for r in rounds])), rel=1e-12)


def test_qps_spread_skips_rounds_below_timer_resolution() -> None:
    assert qps_spread(10, [0.0, 0.0]) == {}
    assert qps_spread(10, [0.0, 2.0]) == {"qps_min": 5.0, "qps_median": 5.0, "qps_max": 5.0}


@_HYP
@given(times=st.lists(st.floats(0, 10), min_size=1, max_size=300))
def test_latency_percentiles_are_ordered_and_numpys(times) -> None:
    got = latency_percentiles_ms(times)
    assert got["latency_p50_ms"] <= got["latency_p95_ms"] <= got["latency_p99_ms"]
    ref = np.percentile(np.array(times) * 1e3, [50, 95, 99])
    assert [got[f"latency_p{p}_ms"] for p in (50, 95, 99)] == pytest.approx(list(ref), rel=1e-12, abs=1e-12)
    assert min(times) * 1e3 <= got["latency_p50_ms"] and got["latency_p99_ms"] <= max(times) * 1e3 * (1 + 1e-12)
    assert latency_percentiles_ms([]) == {}


# ---------------------------------------------------------------- the timers


def test_harness_rounds_time_each_call() -> None:
    calls = []
    result, times, name = harness_rounds(lambda: calls.append(1) or len(calls), 4)
    assert result == 4 and len(times) == 4 and name == "harness" and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="rounds"):
        harness_rounds(lambda: None, 0)


def test_single_queries_are_searched_one_at_a_time_within_a_budget() -> None:
    queries = np.arange(500 * 3, dtype=np.float32).reshape(500, 3)
    seen = []
    times = time_single_queries(lambda q: seen.append(q.copy()), queries)
    assert len(times) == len(seen) == 200 and all(q.shape == (1, 3) for q in seen)
    picked = [int(q[0, 0]) // 3 for q in seen]
    assert picked == list(latency_sample(500)) and picked[0] == 0 and picked[-1] == 499
    assert list(latency_sample(50)) == list(range(50)) and len(latency_sample(0)) == 0

    slow = time_single_queries(lambda q: time.sleep(0.02), queries, budget_s=0.05)
    assert 1 <= len(slow) <= 4  # stops once the budget is spent
    assert len(time_single_queries(lambda q: time.sleep(0.02), queries, budget_s=0.0)) == 1


def test_search_phase_takes_qps_from_its_own_rounds(small) -> None:
    ds, xt = small
    trained = train_phase(Case("dummy-small", "sq8", ()), ds, xt)
    encode_phase(trained, ds)
    fake = [0.5, 0.25, 1.0]

    def timer(fn, rounds):
        result = [fn() for _ in range(rounds)][-1]
        return result, fake[:rounds], "fake"

    searched = search_phase(trained, ds, 10, timing=SearchTiming(rounds=3, round_timer=timer, latency_queries=7))
    assert searched.round_s == (0.5, 0.25, 1.0) and searched.search_s == 0.25 and searched.timer == "fake"
    assert searched.qps == ds.n_queries / 0.25 and len(searched.latency_s) == 7
    assert searched.ids.shape == (ds.n_queries, 10)


def test_run_case_uses_the_timing_in_force(small) -> None:
    ds, xt = small
    default = current_search_timing()
    assert default.rounds == 3 and default.round_timer is harness_rounds
    with use_search_timing(SearchTiming(rounds=5)):
        assert current_search_timing().rounds == 5
        row = run_case(Case("dummy-small", "sq8", ()), ds, xt, CaseOutputs(None, None))
    assert current_search_timing() is default
    rounds = json.loads(row["search_round_s_json"])
    assert len(rounds) == 5 and row["search_timer"] == "harness"
    assert row["search_s"] == min(rounds) and row["qps"] == row["qps_max"] == ds.n_queries / min(rounds)
    assert row["qps_min"] == ds.n_queries / max(rounds)
    assert row["qps_min"] <= row["qps_median"] <= row["qps_max"]


# ---------------------------------------------------------------- one row's speed and size


def test_row_speed_and_size_columns(small, tmp_path: Path) -> None:
    ds, xt = small
    row = run_case(Case("dummy-small", "pq", (("M", 8), ("nbits", 6))), ds, xt, CaseOutputs(None, tmp_path))
    assert row["encode_vps"] == pytest.approx(ds.n_base / row["encode_s"], rel=1e-12)
    assert row["latency_queries"] == min(ds.n_queries, timing.LATENCY_QUERIES)
    assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
    codec_file = Path(row["codec_path"])
    blob = faiss.serialize_index(faiss.read_index(str(codec_file)))
    assert row["codec_bytes"] == len(blob) == codec_file.stat().st_size
    assert row["total_bytes"] == ds.n_base * row["code_bytes"] + row["codec_bytes"]
    assert row["threads"] == faiss.omp_get_max_threads()
    assert all(type(v) in (int, float, str) for v in row.values())


def test_python_quantizer_has_no_codec_bytes(small) -> None:
    ds, xt = small
    row = run_case(
        Case("dummy-small", "python", (("quantizer", "uniform_sq"), ("bits", 8))), ds, xt, CaseOutputs(None, None)
    )
    reasons = json.loads(row["null_reasons_json"])
    assert "codec_bytes" not in row and "total_bytes" not in row
    assert "python quantizer" in reasons["codec_bytes"] and reasons["total_bytes"] == reasons["codec_bytes"]
    assert row["encode_vps"] > 0 and row["qps_max"] > 0


# ---------------------------------------------------------------- symmetric recall


def exact_sq(base: np.ndarray, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return ((base[ids].astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=-1)


@pytest.mark.parametrize("params", [(("M", 8), ("nbits", 8)), (("M", 4), ("nbits", 6))])
def test_symmetric_recall_equals_an_independent_search_of_decoded_queries(small, tmp_path: Path, params) -> None:
    from faiss.contrib.evaluation import knn_intersection_measure

    ds, xt = small
    row = run_case(Case("dummy-small", "pq", params), ds, xt, CaseOutputs(None, tmp_path))
    index = faiss.read_index(row["codec_path"])  # the trained, empty codec
    base = np.asarray(ds.base, dtype=np.float32)
    index.add(base)
    decoded_q = index.sa_decode(index.sa_encode(ds.queries))
    _, ids = index.search(decoded_q, 10)
    q = ds.queries[:, None, :]
    got = exact_sq(base, q, ids)
    true = exact_sq(base, q, ds.gt_ids[:, :10])
    tol = 1e-6 * np.maximum(1.0, np.abs(true))
    one = np.mean(got[:, 0] <= true[:, 0] + tol[:, 0])
    ten = np.mean(
        [
            len({int(j) for j, d in zip(ids[i], got[i], strict=True) if d <= true[i, 9] + tol[i, 9]}) / 10
            for i in range(len(ids))
        ]
    )
    assert row["symmetric_one_recall_at_1"] == pytest.approx(float(one), abs=1e-12)
    assert row["symmetric_recall_at_10"] == pytest.approx(float(ten), abs=1e-12)
    gaps = np.sort(exact_sq(base, q, np.arange(ds.n_base)[None, :].repeat(len(ids), 0)), axis=1)
    if np.all(gaps[:, 10] > gaps[:, 9] * (1 + 1e-6)):  # no ties at the 10th neighbour: the id rule agrees
        assert row["symmetric_recall_at_10"] == pytest.approx(knn_intersection_measure(ids, ds.gt_ids[:, :10]))
    # faiss bench_quantizer prints 1-recall@1 as I[:, 0] == gt[:, 0]; equal here without ties at the first place
    if np.all(gaps[:, 1] > gaps[:, 0] * (1 + 1e-6)):
        assert row["symmetric_one_recall_at_1"] == pytest.approx(float(np.mean(ids[:, 0] == ds.gt_ids[:, 0])))


def test_symmetric_recall_null_when_too_few_results(small) -> None:
    import dataclasses

    from vq_benchmark.fixtures.ground_truth import exact_knn

    ds, _ = small
    base = np.ascontiguousarray(ds.base[:8])
    dists, ids = exact_knn(base, ds.queries, 8, "l2")
    tiny = dataclasses.replace(ds, base=base, gt_ids=ids, gt_dists=dists)
    row = run_case(Case("dummy-small", "sq8", ()), tiny, base, CaseOutputs(None, None))
    reasons = json.loads(row["null_reasons_json"])
    assert "symmetric_recall_at_10" not in row and "fewer than k=10" in reasons["symmetric_recall_at_10"]
    assert "rank_spearman_at_10" not in row and "fewer than k=10" in reasons["rank_spearman_at_10"]
    assert 0 <= row["symmetric_one_recall_at_1"] <= 1 and not math.isnan(row["pair_distortion_mean"])


# ---------------------------------------------------------------- settings


def _resolve(options=None, env=None):
    return resolve_settings(options or {}, env or {}, {}, cwd=Path("/tmp"))


def test_search_rounds_and_benchmark_json_settings() -> None:
    s = _resolve()
    assert s.search_rounds == 3 and s.benchmark_json is None and s.sources["search-rounds"] == "default"
    s = _resolve({"search-rounds": "7", "benchmark-json": "out/b.json"})
    assert s.search_rounds == 7 and s.benchmark_json == Path("/tmp/out/b.json")
    assert _resolve(env={"VQ_SEARCH_ROUNDS": "2", "VQ_BENCHMARK_JSON": "/x/y.json"}).search_rounds == 2
    with pytest.raises(SettingError, match="--vq-search-rounds: expected >= 1"):
        _resolve({"search-rounds": "0"})
