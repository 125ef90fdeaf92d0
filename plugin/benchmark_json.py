"""pytest-benchmark, where it is installed and active, and its JSON layout in every run.

pytest-benchmark is an optional extra, not a dependency: installed, it is a pytest11 plugin that speaks in every
pytest session of the environment, while this plugin must stay dormant in suites that collect no vq-benchmark
case. So nothing here imports it at module level, and the harness works the same without it:

- `search_timing(request, settings)` wraps one case. The case's batched search rounds (`--vq-search-rounds`) are
  timed by `benchmark.pedantic` when pytest-benchmark is installed and active (it disables itself under xdist,
  with `--benchmark-disable`, and `--benchmark-skip` must not skip our cases), by the harness's own timer
  otherwise; the row's `search_timer` says which. With pytest-benchmark active the row's metrics also go into
  the benchmark's `extra_info`, so its own `--benchmark-json` carries them.
- `write_benchmark_json(config, bench)` writes `--vq-benchmark-json FILE` at session end from the rows: one
  benchmark per ok case with `stats` over its search rounds and every metric in `extra_info`, plus
  `machine_info`, `commit_info`, `datetime` and `version`, so `pytest-benchmark compare FILE` reads a run, with or
  without xdist, and the file can be rebuilt from any rows (`benchmark_document`).

Only the standard library is imported here; the case runner's timing module is imported when a case runs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LAYOUT_VERSION = "5.1.0"
"""The pytest-benchmark JSON layout this follows (the `version` key; its loader reads files of 3.x to 5.x)."""
PYTEST_BENCHMARK = "pytest-benchmark"
CASE_TEST = "vq_cases/test_cases.py::test_case"
IDENTITY_KEYS = (
    "run_id",
    "case_id",
    "dataset",
    "method",
    "params_json",
    "factory",
    "metric_type",
    "search_mode",
    "search_timer",
    "n_base",
    "n_queries",
    "dim",
    "n_train",
    "seed",
    "null_reasons_json",
)


# ---------------------------------------------------------------- timing a case through pytest-benchmark


def pytest_benchmark_active(config: Any) -> bool:
    """pytest-benchmark is installed, registered and will time (not disabled, e.g. by xdist, nor skipping)."""
    if not config.pluginmanager.hasplugin("benchmark"):
        return False
    bs = getattr(config, "_benchmarksession", None)
    return bs is not None and not getattr(bs, "disabled", True) and not getattr(bs, "skip", False)


class _PedanticRounds:
    """A round timer (vq_cases.timing.RoundTimer) that runs the rounds through `benchmark.pedantic`: once per
    test (the fixture allows one use), the harness timer for any later search of the same test."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.fixture: Any = None

    def __call__(self, fn: Any, rounds: int) -> tuple[Any, list[float], str]:
        from vq_benchmark.vq_cases.timing import harness_rounds

        if self.fixture is not None:
            return harness_rounds(fn, rounds)
        self.fixture = self.request.getfixturevalue("benchmark")  # requested only now: never left unused
        if getattr(self.fixture, "disabled", True):
            return harness_rounds(fn, rounds)
        result = self.fixture.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        return result, [float(t) for t in self.fixture.stats.stats.data], PYTEST_BENCHMARK

    def report(self, measured: Mapping[str, Any] | None) -> None:
        """Put the case's metrics into the benchmark's extra_info (pytest-benchmark's own JSON keeps them)."""
        if self.fixture is None or not measured:
            return
        self.fixture.extra_info.update(extra_info(measured))


class _Timing:
    def __init__(self, pedantic: _PedanticRounds | None) -> None:
        self._pedantic = pedantic

    def report(self, measured: Mapping[str, Any] | None) -> None:
        if self._pedantic is not None:
            self._pedantic.report(measured)


@contextmanager
def search_timing(request: Any, settings: Any) -> Iterator[_Timing]:
    """Inside the block, every case search runs `settings.search_rounds` timed rounds, through pytest-benchmark
    when it is active; call `.report(row)` with what the case measured."""
    from vq_benchmark.vq_cases.timing import SearchTiming, harness_rounds, use_search_timing

    pedantic = _PedanticRounds(request) if pytest_benchmark_active(request.config) else None
    timing = SearchTiming(rounds=int(settings.search_rounds), round_timer=pedantic or harness_rounds)
    with use_search_timing(timing):
        yield _Timing(pedantic)


# ---------------------------------------------------------------- the JSON layout


def round_stats(data: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's `stats` of per-round seconds: min, max, mean, stddev (sample; 0 for one round), rounds,
    median, quartiles q1/q3 and iqr (its quartile rules), Tukey and stddev outlier counts, ld15iqr/hd15iqr,
    ops (rounds / total), total, data and iterations (1: each round is one batched search)."""
    xs = [float(v) for v in data]
    if not xs:
        raise ValueError("no rounds")
    s = sorted(xs)
    n = len(s)
    mean = statistics.mean(s)  # exact, as pytest-benchmark's: fmean of equal rounds can miss their value, and
    stddev = statistics.stdev(s) if n > 1 else 0.0  # then every round would count as a stddev outlier
    q1, q3 = _quartiles(s)
    iqr = q3 - q1
    lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_outliers = sum(1 for v in s if v < lo_fence or v > hi_fence)
    sd_outliers = sum(1 for v in s if v < mean - stddev or v > mean + stddev)
    total = math.fsum(s)
    return {
        "min": s[0],
        "max": s[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": n,
        "median": statistics.median(s),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_outliers,
        "stddev_outliers": sd_outliers,
        "outliers": f"{sd_outliers};{iqr_outliers}",
        "ld15iqr": next(v for v in s if v >= lo_fence),
        "hd15iqr": next(v for v in reversed(s) if v <= hi_fence),
        "ops": n / total if total > 0 else 0.0,
        "total": total,
        "data": xs,
        "iterations": 1,
    }


def _quartiles(s: Sequence[float]) -> tuple[float, float]:
    """Q1 and Q3 of sorted data as pytest-benchmark computes them: the medians of the lower and upper halves for
    an even count, Tukey's interpolation (method 3) for an odd one."""
    n = len(s)
    if n == 1:
        return s[0], s[0]
    if n % 2 == 0:
        return statistics.median(s[: n // 2]), statistics.median(s[n // 2 :])
    m, r = divmod(n, 4)
    if r == 1:
        return 0.25 * s[m - 1] + 0.75 * s[m], 0.75 * s[3 * m] + 0.25 * s[3 * m + 1]
    return 0.75 * s[m] + 0.25 * s[m + 1], 0.25 * s[3 * m + 1] + 0.75 * s[3 * m + 2]


def _metric_names() -> tuple[str, ...]:
    from vq_benchmark.reports.schema import METRIC_NAMES

    return METRIC_NAMES


def extra_info(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's identity and every metric it holds (NULL metrics left out; their reasons in null_reasons_json)."""
    keys = (*IDENTITY_KEYS, *_metric_names())
    return {k: row[k] for k in keys if row.get(k) is not None}


def round_times(row: Mapping[str, Any]) -> list[float] | None:
    """The row's search round seconds, or None when it has none usable (failed, skipped, older rows)."""
    raw = row.get("search_round_s_json")
    if not isinstance(raw, str):
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    ok = isinstance(data, list) and data and all(isinstance(v, int | float) and math.isfinite(v) for v in data)
    return [float(v) for v in data] if ok else None


def benchmark_entry(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """One `benchmarks[]` entry for an ok row with search rounds, else None."""
    data = round_times(row)
    if row.get("status", "ok") != "ok" or data is None:
        return None
    case_id = str(row["case_id"])
    return {
        "group": row.get("dataset"),
        "name": f"test_case[{case_id}]",
        "fullname": f"{CASE_TEST}[{case_id}]",
        "params": {"vq_case": case_id},
        "param": case_id,
        "extra_info": extra_info(row),
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": len(data),
            "max_time": None,
            "min_time": None,
            "warmup": False,
        },
        "stats": round_stats(data),
    }


def machine_info(rows: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """pytest-benchmark's machine_info keys, from this process (and the CPU model the rows recorded)."""
    rows = list(rows)
    cpu_model = next((str(r["cpu_model"]) for r in rows if r.get("cpu_model")), platform.processor())
    node = next((str(r["hostname"]) for r in rows if r.get("hostname")), platform.node())
    return {
        "node": node,
        "processor": platform.processor(),
        "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": platform.release(),
        "system": platform.system(),
        "cpu": {"brand_raw": cpu_model, "arch": platform.machine(), "count": os.cpu_count()},
    }


def commit_info(rows: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """pytest-benchmark's commit_info keys, from the git provenance the rows recorded."""
    row = next((r for r in rows if r.get("git_commit")), {})
    dirty = row.get("git_dirty")
    return {
        "id": row.get("git_commit"),
        "time": None,
        "author_time": None,
        "dirty": None if dirty is None else bool(dirty),
        "project": "vq-benchmark",
        "branch": None,
    }


def benchmark_document(rows: Iterable[Mapping[str, Any]], *, run_id: str | None = None) -> dict[str, Any]:
    """The whole file: pytest-benchmark's layout over the ok rows, sorted by case id."""
    rows = sorted(rows, key=lambda r: str(r.get("case_id")))
    benchmarks = [entry for r in rows if (entry := benchmark_entry(r)) is not None]
    return {
        "machine_info": machine_info(rows),
        "commit_info": commit_info(rows),
        "benchmarks": benchmarks,
        "datetime": datetime.now(UTC).isoformat(),
        "version": LAYOUT_VERSION,
        "vq_benchmark": {"run_id": run_id, "rows": len(rows), "benchmarks": len(benchmarks)},
    }


def write_document(path: Path, document: Mapping[str, Any]) -> None:
    """Write atomically (the parent folder is created)."""
    from vq_benchmark.reports.atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode())


def write_benchmark_json(config: Any, bench: Any) -> None:
    """Session end: write `--vq-benchmark-json` from this session's rows; a failure is one warning line in the
    terminal, never an error (the rows are in SQLite and JSONL already)."""
    path = getattr(bench.settings, "benchmark_json", None)
    if path is None:
        return
    rows = list(bench.files.rows.values())
    try:
        write_document(path, benchmark_document(rows, run_id=bench.run_id))
        bench.written_files.append(("benchmark JSON", path))
    except (OSError, ValueError) as exc:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"vq-benchmark: --vq-benchmark-json {path} not written: {exc}", yellow=True)
