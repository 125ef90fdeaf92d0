"""The row schema: every column of the `results` table, declared once.

Metrics carry their unit and direction so that the SQLite columns, the terminal summary and later plots all read
the same declaration instead of re-listing names. Rows are plain dicts of `int | float | str | None` keyed by these
names (numpy scalars would break xdist's report serializer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SqlType = Literal["INTEGER", "REAL", "TEXT"]
Scalar = int | float | str | None
Row = dict[str, Scalar]


@dataclass(frozen=True)
class Column:
    """A non-metric column: identity, parameters, paths or provenance."""

    name: str
    sql_type: SqlType
    description: str


@dataclass(frozen=True)
class Metric:
    """A measured quantity; `higher_is_better` is None where direction is meaningless (e.g. thread count)."""

    name: str
    sql_type: SqlType
    unit: str
    higher_is_better: bool | None
    description: str


# Which depths are measured is the case runner's business; the store only declares the columns it keeps.
_K_RECALL = (
    "k-recall@k: fraction of the k results whose exact distance is within the tie tolerance of the k-th true distance"
)
_ONE_RECALL = "1-recall@R: one of the first R results is within the tie tolerance of the true nearest distance"
_PAIR = "| ||x_hat_i - x_hat_j|| / ||x_i - x_j|| - 1 | over 10,000 seeded pairs of base vectors (mean, median, max)"

IDENTITY: tuple[Column, ...] = (
    Column("run_id", "TEXT", "one pytest session (shared by all shards of a sweep)"),
    Column("case_id", "TEXT", "stable, -k friendly case id, e.g. dummy-pq-M8-nbits8"),
    Column("status", "TEXT", "ok, failed or skipped"),
    Column("error", "TEXT", "one-line reason when status is not ok"),
    Column("dataset", "TEXT", "dataset name"),
    Column("method", "TEXT", "quantizer method name from the sweep"),
    Column("params_json", "TEXT", "method parameters as canonical JSON"),
    Column(
        "factory",
        "TEXT",
        "faiss index_factory string of the codec; a Pad<d> prefix marks zero-padding (not factory syntax)",
    ),
    Column(
        "metric_type",
        "TEXT",
        "the dataset's metric: l2, ip or cosine (cosine = L2 search on unit vectors, as ann-benchmarks' angular)",
    ),
    Column("vector_dtype", "TEXT", "element type of the base file (float32, uint8, int8, ...)"),
    Column(
        "vector_bytes", "INTEGER", "bytes of one raw vector in the base file (what compression is measured against)"
    ),
    Column(
        "search_mode",
        "TEXT",
        "asymmetric (raw queries against codes) or decode-then-search (exact search over decoded vectors)",
    ),
    Column("n_base", "INTEGER", "base vectors encoded"),
    Column("n_queries", "INTEGER", "queries searched"),
    Column("dim", "INTEGER", "vector dimension"),
    Column("n_train", "INTEGER", "training sample size"),
    Column(
        "search_params_json",
        "TEXT",
        'search-time parameters of the case as JSON (e.g. {"nprobe":16}); NULL when it sets none',
    ),
    Column(
        "bits_per_dim",
        "INTEGER",
        "the equal-budget sweep's bits per dimension this case was mapped from (params_json holds the result)",
    ),
    Column("null_reasons_json", "TEXT", "why a metric is NULL, as JSON {metric: reason}"),
    Column("notes", "TEXT", "warnings worth keeping with the numbers (e.g. small training sample)"),
)

METRICS: tuple[Metric, ...] = (
    Metric("code_bytes", "INTEGER", "B", False, "bytes per encoded vector (faiss sa_code_size)"),
    Metric("compression_ratio", "REAL", "x", True, "vector_bytes (raw bytes per vector in its file) / code bytes"),
    Metric("codec_bytes", "INTEGER", "B", False, "serialized size of the trained, empty codec (codebooks, rotations)"),
    Metric("total_bytes", "INTEGER", "B", False, "n_base * code_bytes + codec_bytes: codes plus the codec"),
    Metric("mse", "REAL", "", False, "mean over base vectors of ||x - decode(encode(x))||^2 (faiss convention)"),
    Metric("relative_mse", "REAL", "", False, "mse / mean ||x||^2"),
    Metric("mse_per_dim", "REAL", "", False, "mse / d: squared error per vector element (the seeds' convention)"),
    Metric("mean_l2_error", "REAL", "", False, "mean over base vectors of ||x - x_hat|| (faiss codec wiki convention)"),
    Metric("pair_distortion_mean", "REAL", "", False, _PAIR),
    Metric("pair_distortion_median", "REAL", "", False, _PAIR),
    Metric("pair_distortion_max", "REAL", "", False, _PAIR),
    Metric(
        "rank_spearman_at_10",
        "REAL",
        "",
        True,
        "mean over queries of Spearman's rho between the exact and the decoded-vector ranking of the true top 10",
    ),
    Metric("recall_at_1", "REAL", "", True, _K_RECALL),
    Metric("recall_at_10", "REAL", "", True, _K_RECALL),
    Metric("recall_at_100", "REAL", "", True, _K_RECALL),
    Metric("one_recall_at_1", "REAL", "", True, _ONE_RECALL),
    Metric("one_recall_at_10", "REAL", "", True, _ONE_RECALL),
    Metric("one_recall_at_100", "REAL", "", True, _ONE_RECALL),
    Metric("symmetric_one_recall_at_1", "REAL", "", True, "one_recall_at_1 with the queries encoded and decoded too"),
    Metric("symmetric_recall_at_10", "REAL", "", True, "recall_at_10 with the queries encoded and decoded too"),
    Metric(
        "train_s",
        "REAL",
        "s",
        False,
        "wall time to train the codec on the training sample; when codec_cached = 1, the time spent loading it from"
        " the codec cache instead",
    ),
    Metric(
        "original_train_s",
        "REAL",
        "s",
        False,
        "training time when the codec was first trained; equals train_s when trained in this case",
    ),
    Metric("encode_s", "REAL", "s", False, "wall time to encode the whole base"),
    Metric("encode_vps", "REAL", "vectors/s", True, "encode throughput: n_base / encode_s"),
    Metric("search_s", "REAL", "s", False, "best (shortest) round of the batched asymmetric search of all queries"),
    Metric("qps", "REAL", "1/s", True, "queries per second of the best round (n_queries / search_s) = qps_max"),
    Metric("qps_min", "REAL", "1/s", True, "queries per second of the slowest batched search round"),
    Metric("qps_median", "REAL", "1/s", True, "median over batched search rounds of queries per second"),
    Metric("qps_max", "REAL", "1/s", True, "queries per second of the fastest batched search round"),
    Metric("latency_p50_ms", "REAL", "ms", False, "median wall time of a one-query search"),
    Metric("latency_p95_ms", "REAL", "ms", False, "95th percentile wall time of a one-query search"),
    Metric("latency_p99_ms", "REAL", "ms", False, "99th percentile wall time of a one-query search"),
    Metric("latency_queries", "INTEGER", "", None, "queries timed one at a time for the latency percentiles"),
    Metric("threads", "INTEGER", "", None, "OpenMP threads faiss used"),
)

ARTIFACTS: tuple[Column, ...] = (
    Column("neighbors_path", "TEXT", "search result ids (.npy, n_queries x k) for recomputing any metric"),
    Column("distances_path", "TEXT", "search result distances (.npy, n_queries x k)"),
    Column(
        "codec_path",
        "TEXT",
        "trained (empty) codec, faiss.serialize_index bytes written atomically to "
        "<codebooks-dir>/<fingerprint>/<training_id>-<key>.faissindex (also the codec cache; training_id is the"
        " case_id without search parameters)",
    ),
    Column("search_round_s_json", "TEXT", "seconds of each batched search round, as a JSON list (qps_* and stats)"),
    Column("search_timer", "TEXT", "what timed the search rounds: pytest-benchmark (benchmark.pedantic) or harness"),
    Column(
        "codec_cached",
        "INTEGER",
        "1 = the codec was loaded from the codec cache (codec_path), 0 = trained in this case",
    ),
    Column(
        "codec_reused",
        "INTEGER",
        "1 = the trained and encoded codec of an earlier case of the same training (same codec cache key) in this"
        " process was reused: only the search ran (train_s 0; encode_s and distortion are those of the reused codes)",
    ),
)

PROVENANCE: tuple[Column, ...] = (
    Column(
        "seed",
        "INTEGER",
        "training seed: of the sample drawn from the base and of faiss's k-means (the case's -seed<N>, else --vq-seed)",
    ),
    Column("dataset_fingerprint", "TEXT", "content fingerprint of base + queries (+ given ground truth)"),
    Column("gt_source", "TEXT", "where the ground truth came from: a file, or computed (and cached)"),
    Column(
        "dataset_info_json",
        "TEXT",
        "what the dataset's format reports, as JSON (msmarco: embedding model, mrr_at_10 of the exact search)",
    ),
    Column("git_commit", "TEXT", "commit of the harness checkout, if any"),
    Column("git_dirty", "INTEGER", "1 if the checkout had uncommitted changes"),
    Column("python_version", "TEXT", "Python version"),
    Column("numpy_version", "TEXT", "numpy version"),
    Column("faiss_version", "TEXT", "faiss version"),
    Column("hostname", "TEXT", "host that ran the case"),
    Column("cpu_model", "TEXT", "CPU model name"),
    Column("omp_wait_policy", "TEXT", "OMP_WAIT_POLICY the process ran with"),
    Column(
        "worker",
        "TEXT",
        "xdist worker that ran the case (gw0, gw1, ...), main without xdist; a shard's cases are listed in its"
        " manifest.json",
    ),
    Column("created_at", "TEXT", "UTC ISO-8601 time the row was recorded"),
)

ALL_COLUMNS: tuple[Column | Metric, ...] = (*IDENTITY, *METRICS, *ARTIFACTS, *PROVENANCE)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in ALL_COLUMNS)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
TIMING_UNITS = ("s", "1/s", "ms", "vectors/s")
# Columns that differ between two runs of the same codec on the same data (clock readings and what shapes them).
TIMING_COLUMNS: tuple[str, ...] = (
    *(m.name for m in METRICS if m.unit in TIMING_UNITS),
    "threads",
    "latency_queries",
    "search_round_s_json",
)
PRIMARY_KEY: tuple[str, ...] = ("run_id", "case_id")
SQL_TYPES: dict[str, SqlType] = {c.name: c.sql_type for c in ALL_COLUMNS}
SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1
_ACCEPTS: dict[SqlType, tuple[type, ...]] = {"INTEGER": (int,), "REAL": (int, float), "TEXT": (str,)}


def metric(name: str) -> Metric:
    """Look up a metric declaration by name (KeyError names the unknown metric)."""
    for m in METRICS:
        if m.name == name:
            return m
    raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")


def check_row(row: Row) -> None:
    """Reject what a file must never hold: unknown columns, non-plain values, values of another type than the
    column declares, non-finite floats (JSON has none) and ints SQLite cannot store. reports.rows.make_row builds
    rows that pass; this is the gate every writer runs before touching a file."""
    unknown = set(row) - set(COLUMN_NAMES)
    if unknown:
        raise ValueError(f"row has unknown columns: {', '.join(sorted(map(str, unknown)))}")
    for key, value in row.items():
        if value is None:
            continue
        kind = type(value)
        if kind not in (int, float, str):
            raise TypeError(f"row column {key!r} holds {kind.__name__}; only int, float, str, None allowed")
        sql_type = SQL_TYPES[key]
        if kind not in _ACCEPTS[sql_type]:
            raise TypeError(f"row column {key!r} is {sql_type} but holds {kind.__name__} {value!r:.60}")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"row column {key!r} holds {value}; a non-finite value must be stored as NULL")
        if kind is int and not SQLITE_INT_MIN <= value <= SQLITE_INT_MAX:
            raise ValueError(f"row column {key!r} holds an int outside SQLite's 64-bit range")
        if kind is str and not _is_utf8(value):
            raise ValueError(f"row column {key!r} is not valid UTF-8 text (lone surrogate)")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stored_row(where: str, obj: object) -> Row:
    """`obj` read back from a report file, checked as a row; ValueError naming `where` when it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("case_id"), str):
        raise ValueError(f"{where}: expected a JSON object with a text case_id")
    try:
        check_row(obj)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not a result row ({str(exc).splitlines()[0][:200]})") from exc
    return obj
