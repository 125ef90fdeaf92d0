"""How searches are timed: N rounds of the batched search (QPS = the best, and its spread) and single-query
rounds on a sample of queries (latency percentiles), all from the same search calls that give the row's results.

The round timer is pluggable: the harness's own `perf_counter` loop, or one handed in by the pytest plugin that
runs the rounds through pytest-benchmark's `benchmark.pedantic` when that plugin is installed and active (it
disables itself under xdist; the harness timer is used there). The plugin installs its choice with
`use_search_timing` around a case, so the case runner needs no pytest. No pytest and no faiss in here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_SEARCH_ROUNDS",
    "HARNESS_TIMER",
    "LATENCY_BUDGET_S",
    "LATENCY_QUERIES",
    "RoundTimer",
    "SearchTiming",
    "current_search_timing",
    "harness_rounds",
    "latency_percentiles_ms",
    "latency_sample",
    "qps_spread",
    "time_single_queries",
    "use_search_timing",
]

DEFAULT_SEARCH_ROUNDS = 3
LATENCY_QUERIES = 200
"""Queries timed one at a time (evenly spaced over the query set; all of them when there are fewer)."""
LATENCY_BUDGET_S = 2.0
"""Single-query timing stops once this much time was spent (at least one query is timed), so a codec that
decodes the whole base per search (decode-then-search) does not multiply a case's run time."""
HARNESS_TIMER = "harness"

RoundTimer = Callable[[Callable[[], Any], int], tuple[Any, list[float], str]]
"""(function, rounds) -> (the last call's result, seconds of each round, name of the timer used)."""


def harness_rounds(fn: Callable[[], Any], rounds: int) -> tuple[Any, list[float], str]:
    """Call `fn` `rounds` times, timing each call with time.perf_counter."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    times: list[float] = []
    result = None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times, HARNESS_TIMER


@dataclass(frozen=True)
class SearchTiming:
    """How search_phase times: `rounds` batched rounds through `round_timer`, then single-query latency."""

    rounds: int = DEFAULT_SEARCH_ROUNDS
    round_timer: RoundTimer = harness_rounds
    latency_queries: int = LATENCY_QUERIES
    latency_budget_s: float = LATENCY_BUDGET_S


_DEFAULT = SearchTiming()
_CURRENT: ContextVar[SearchTiming | None] = ContextVar("vq_search_timing", default=None)


def current_search_timing() -> SearchTiming:
    """The timing set by the innermost `use_search_timing`, else 3 harness rounds and the default latency sample."""
    return _CURRENT.get() or _DEFAULT


@contextmanager
def use_search_timing(timing: SearchTiming) -> Iterator[SearchTiming]:
    """Every search_phase inside the block times with `timing` (the default outside: 3 harness rounds)."""
    token = _CURRENT.set(timing)
    try:
        yield timing
    finally:
        _CURRENT.reset(token)


def latency_sample(n_queries: int, count: int = LATENCY_QUERIES) -> np.ndarray:
    """min(n_queries, count) evenly spaced query indices, deterministic."""
    m = min(int(n_queries), int(count))
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.linspace(0, n_queries - 1, m).round().astype(np.int64))


def time_single_queries(
    search_one: Callable[[np.ndarray], Any],
    queries: np.ndarray,
    *,
    count: int = LATENCY_QUERIES,
    budget_s: float = LATENCY_BUDGET_S,
) -> list[float]:
    """Seconds of `search_one(queries[i:i+1])` for the sampled queries, one call each, in sample order; stops
    early once `budget_s` is spent (at least one query is timed)."""
    times: list[float] = []
    spent = 0.0
    for i in latency_sample(len(queries), count):
        q = np.ascontiguousarray(queries[i : i + 1])
        t0 = time.perf_counter()
        search_one(q)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent >= budget_s:
            break
    return times


def latency_percentiles_ms(times_s: Sequence[float]) -> dict[str, float]:
    """latency_p50_ms / _p95_ms / _p99_ms: numpy's linear-interpolation percentiles of the times, in ms."""
    if not len(times_s):
        return {}
    p50, p95, p99 = np.percentile(np.asarray(times_s, dtype=np.float64) * 1e3, [50, 95, 99])
    # np.percentile interpolates; rounding could otherwise put p95 a hair above p99 on equal samples
    p95, p99 = max(p50, p95), max(p50, p95, p99)
    return {"latency_p50_ms": float(p50), "latency_p95_ms": float(p95), "latency_p99_ms": float(p99)}


def qps_spread(n_queries: int, round_s: Sequence[float]) -> dict[str, float]:
    """qps_min / qps_median / qps_max of the rounds (n_queries / seconds of each round); rounds at 0 s (below
    the timer's resolution) are left out, and nothing is returned when no round can be used."""
    rates = sorted(n_queries / s for s in round_s if s > 0)
    if not rates:
        return {}
    return {"qps_min": rates[0], "qps_median": float(statistics.median(rates)), "qps_max": rates[-1]}
