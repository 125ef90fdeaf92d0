"""The phases of one case: train, encode (+ distortion), search, score. No pytest and no files in here.

Each phase returns a small frozen record so later work can reuse a trained (and encoded) codec across several
search-parameter cases instead of retraining. `runner.run_case` composes them into a row. The base is encoded in
chunks so a memory-mapped base much larger than RAM is streamed, and every distortion metric (MSE in its three
conventions, pairwise and rank-order distortion on a seeded sample) is accumulated on the same pass (decode time
is not counted in `encode_s`). The search is timed in rounds (QPS and its spread) and query by query (latency
percentiles) as `vq_cases.timing` says; decoded queries are searched once more, untimed, for symmetric recall.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from vq_benchmark.fixtures.loading import LoadedDataset
from vq_benchmark.fixtures.memory_budget import pq_encode_scratch
from vq_benchmark.fixtures.progress import progress, ticking
from vq_benchmark.vq_cases.codec import Codec
from vq_benchmark.vq_cases.codec_cache import CodecSlot, load_cached, store_codec
from vq_benchmark.vq_cases.distortion import DistortionSampler, plan_distortion
from vq_benchmark.vq_cases.methods import METHODS, Method, ParamValue, null_metrics
from vq_benchmark.vq_cases.metrics import RECALL_KS, MSEAccumulator, distance_recalls
from vq_benchmark.vq_cases.sweep import Case
from vq_benchmark.vq_cases.timing import (
    SearchTiming,
    current_search_timing,
    latency_percentiles_ms,
    qps_spread,
    time_single_queries,
)

ENCODE_CHUNK_ROWS = 65_536
ENCODE_SCRATCH_BYTES = 64 << 20  # the most faiss's PQ encode table may take per call
FAR_BELOW_FRACTION = 4  # a training sample under 1/4 of faiss's recommendation is flagged "far below"


@dataclass(frozen=True)
class Trained:
    """A trained codec (codes are added to it later by `encode_phase`) and what training found.

    A codec loaded from the codec cache has `cached` True, `train_s` the time spent loading it and
    `original_train_s` the time its first training took (None when unknown; `null` says why).
    """

    case: Case
    codec: Codec
    blob: bytes | None  # the trained, empty codec in faiss's format before any code is added (None: python codec)
    n_train: int
    train_s: float
    notes: tuple[str, ...]
    null: Mapping[str, str]  # metric -> why it does not apply (the method's declaration, cache reasons)
    cached: bool = False
    original_train_s: float | None = None
    codec_path: Path | None = None  # the codec cache file holding `blob`, once written or loaded


DECODE_METRICS: tuple[str, ...] = (
    "mse",
    "relative_mse",
    "mse_per_dim",
    "mean_l2_error",
    "pair_distortion_mean",
    "pair_distortion_median",
    "pair_distortion_max",
    "rank_spearman_at_10",
    "symmetric_one_recall_at_1",
    "symmetric_recall_at_10",
)
"""Metrics that need a faithful decode: NULL, with the reason given for `mse`, wherever a method declares `mse`
NULL (RaBitQ rebuilds only its 1-bit code, ITQ+LSH cannot decode)."""
SYMMETRIC_KS: tuple[int, ...] = (10,)
SYMMETRIC_RS: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Encoded:
    """The base encoded into the codec; mse/relative_mse are None when the method declares MSE NULL.

    `distortion` holds the other decode metrics (mse_per_dim, mean_l2_error, pair_distortion_*,
    rank_spearman_at_10) that could be measured, `distortion_null` why the others could not."""

    encode_s: float
    code_bytes: int
    mse: float | None
    relative_mse: float | None  # also None when every base vector is zero
    distortion: Mapping[str, float] = field(default_factory=dict)
    distortion_null: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Searched:
    """The timed batched search of all queries (best of `round_s`), its single-query latencies and, where the codec
    decodes faithfully, the untimed search of the decoded queries (symmetric). qps is None below the timer
    resolution."""

    k: int
    search_s: float
    qps: float | None
    threads: int
    ids: np.ndarray  # nq x k int64, -1 = no result
    dists: np.ndarray  # nq x k float32, as the codec computed them
    round_s: tuple[float, ...] = ()  # seconds of each batched round
    timer: str = "harness"  # what timed the rounds: harness or pytest-benchmark
    latency_s: tuple[float, ...] = ()  # seconds of each single-query search
    symmetric_ids: np.ndarray | None = None  # nq x k_sym, decoded queries searched against the codes
    symmetric_null: Mapping[str, str] = field(default_factory=dict)


def _training_notes(method: Method, params: Mapping[str, ParamValue], n_train: int) -> list[str]:
    """Flag samples under faiss's recommendation; under a quarter of it the codebooks are barely trained."""
    if method.min_train is None:
        return []
    wanted = method.min_train(params)
    if n_train >= wanted:
        return []
    if n_train * FAR_BELOW_FRACTION < wanted:
        return [f"training sample {n_train} < {wanted} recommended by faiss (far below: under 1/{FAR_BELOW_FRACTION})"]
    return [f"training sample {n_train} < {wanted} recommended by faiss"]


def _size_notes(code_bytes: int, ds: LoadedDataset) -> list[str]:
    """A code larger than the raw vector compresses nothing; say so next to its recall."""
    raw = ds.vector_bytes
    return [f"code ({code_bytes} B) is larger than the raw vector ({raw} B)"] if code_bytes > raw else []


def train_phase(case: Case, ds: LoadedDataset, train_x: np.ndarray, *, cache: CodecSlot | None = None) -> Trained:
    """Build the codec and train it (only `codec.train` is timed), or load it from `cache` when a trusted file
    is there. A freshly trained codec is written to `cache` at once, so that a case failing later in encode or
    search still leaves it for the next run."""
    method = METHODS[case.method]
    params = dict(case.params)
    built = method.build(params, ds.dim, ds.search_metric)
    n_train = int(train_x.shape[0])
    notes = [*built.notes, *_training_notes(method, params, n_train)]
    null = null_metrics(case.method, built)
    path = cache.path if cache is not None else None
    loaded, problem = load_cached(cache, built.codec, n_train)
    if loaded is not None:
        if loaded.unknown_reason is not None:
            null["original_train_s"] = loaded.unknown_reason
        notes += _size_notes(loaded.codec.code_bytes, ds)
        return Trained(
            case,
            loaded.codec,
            loaded.blob,
            n_train,
            loaded.load_s,
            tuple(notes),
            null,
            cached=True,
            original_train_s=loaded.original_train_s,
            codec_path=path,
        )
    codec = built.codec
    with ticking(f"training {case.case_id} on {n_train:,} vectors"):
        t0 = time.perf_counter()
        codec.train(train_x)
        train_s = time.perf_counter() - t0
    blob = codec.serialize()
    if blob is None:  # a Python quantizer: nothing faiss can store, so no codec cache either
        path = None
    elif path is not None:
        store_codec(path, blob, train_s=train_s, n_train=n_train)
    notes += [*_size_notes(codec.code_bytes, ds), *([problem] if problem else [])]
    return Trained(case, codec, blob, n_train, train_s, tuple(notes), null, original_train_s=train_s, codec_path=path)


def _encode_call_rows(case: Case, dim: int) -> int:
    """Rows per encode call: faiss's PQ encoder allocates a rows x M x 2^nbits float table per call (512 MiB for
    PQ8x8 on a 65,536-row chunk at d = 128), so calls are cut to keep that table under ENCODE_SCRATCH_BYTES."""
    params = dict(case.params)
    m, nbits = params.get("M"), params.get("nbits", 8)
    if not (isinstance(m, int) and isinstance(nbits, int)):
        return ENCODE_CHUNK_ROWS
    per_row = pq_encode_scratch(dim, m, nbits)
    return ENCODE_CHUNK_ROWS if per_row == 0 else max(64, min(ENCODE_CHUNK_ROWS, ENCODE_SCRATCH_BYTES // per_row))


def encode_phase(trained: Trained, ds: LoadedDataset) -> Encoded:
    """Encode the base chunk by chunk (timed), accumulate every distortion metric on the same pass, then add the
    codes."""
    codec = trained.codec
    want_mse = "mse" not in trained.null
    code_bytes = codec.code_bytes
    adds = getattr(codec, "adds_vectors", False)  # indexes whose codes cannot be added as bytes (IVF fast-scan)
    codes = np.empty((ds.n_base, code_bytes), dtype=np.uint8)
    acc = MSEAccumulator()
    sampler = None
    if want_mse:
        plan = plan_distortion(ds.n_base, ds.gt_ids)
        sampler = DistortionSampler(plan, ds.queries, ds.search_metric, ds.dim)
    encode_s = 0.0
    call_rows = _encode_call_rows(trained.case, ds.dim)
    with progress(f"encoding {trained.case.case_id}", ds.n_base, "vec", only_if_long=True) as bar:
        for start, block in ds.base.blocks(ENCODE_CHUNK_ROWS):
            x = np.ascontiguousarray(block, dtype=np.float32)
            t0 = time.perf_counter()
            chunk_codes = np.concatenate([codec.encode(x[i : i + call_rows]) for i in range(0, len(x), call_rows)])
            encode_s += time.perf_counter() - t0
            codes[start : start + x.shape[0]] = chunk_codes
            if adds:
                codec.add_vectors(x)
            if sampler is not None:
                x_hat = codec.decode(chunk_codes)
                acc.add(x, x_hat)
                sampler.add(start, x, x_hat)
            bar.update(x.shape[0])
    if not adds:
        codec.add_codes(codes)
    if sampler is None or acc.n == 0:
        return Encoded(encode_s, code_bytes, None, None)
    values, null = sampler.results()
    values = {"mse_per_dim": acc.mse_per_dim, "mean_l2_error": acc.mean_l2_error, **values}
    return Encoded(encode_s, code_bytes, acc.mse, acc.relative_mse, values, null)


def search_phase(trained: Trained, ds: LoadedDataset, k: int, *, timing: SearchTiming | None = None) -> Searched:
    """The batched asymmetric search of all queries in `timing.rounds` timed rounds (the result of the last is
    kept; QPS comes from the same runs), then single queries timed one at a time, then (untimed, where decoding
    is faithful) the decoded queries searched against the codes for symmetric recall."""
    timing = timing or current_search_timing()
    codec = trained.codec
    threads = int(faiss.omp_get_max_threads())
    queries = ds.queries
    result, round_s, timer = timing.round_timer(lambda: codec.search(queries, k), timing.rounds)
    dists, ids = result
    search_s = min(round_s)
    qps = ds.n_queries / search_s if search_s > 0 else None
    latency = time_single_queries(
        lambda q: codec.search(q, k), queries, count=timing.latency_queries, budget_s=timing.latency_budget_s
    )
    sym_ids, sym_null = None, {}
    if "mse" not in trained.null:
        sym_ids, sym_null = _symmetric_search(codec, ds, k)
    return Searched(k, search_s, qps, threads, ids, dists, tuple(round_s), timer, tuple(latency), sym_ids, sym_null)


def _symmetric_search(codec: Codec, ds: LoadedDataset, k: int) -> tuple[np.ndarray, dict[str, str]]:
    """faiss bench_quantizer's symmetric setting: queries encoded and decoded too, then searched against the codes."""
    k_sym = min(max((*SYMMETRIC_KS, *SYMMETRIC_RS)), k)
    decoded = np.ascontiguousarray(codec.decode(codec.encode(ds.queries)), dtype=np.float32)
    _, ids = codec.search(decoded, k_sym)
    null = {}
    for kk in SYMMETRIC_KS:
        if kk > ds.gt_k:
            null[f"symmetric_recall_at_{kk}"] = f"ground truth holds {ds.gt_k} neighbours per query, fewer than k={kk}"
        elif kk > k_sym:
            null[f"symmetric_recall_at_{kk}"] = f"only {k_sym} results per query (n_base={ds.n_base})"
    return np.asarray(ids), null


def speed_metrics(trained: Trained, encoded: Encoded, searched: Searched, ds: LoadedDataset) -> tuple[dict, dict]:
    """The speed and size columns beside train_s/encode_s/search_s/qps: (values, metric -> why NULL)."""
    values: dict[str, float | int | str] = {}
    null: dict[str, str] = {}
    if encoded.encode_s > 0:
        values["encode_vps"] = ds.n_base / encoded.encode_s
    else:
        null["encode_vps"] = "encoding took less than the timer resolution"
    spread = qps_spread(ds.n_queries, searched.round_s)
    values.update(spread)
    if not spread:
        null.update(dict.fromkeys(("qps_min", "qps_median", "qps_max"), "search took less than the timer resolution"))
    values.update(latency_percentiles_ms(searched.latency_s))
    values["latency_queries"] = len(searched.latency_s)
    if searched.round_s:
        values["search_round_s_json"] = json.dumps([float(t) for t in searched.round_s])
        values["search_timer"] = searched.timer
    if trained.blob is not None:
        values["codec_bytes"] = len(trained.blob)
        values["total_bytes"] = ds.n_base * encoded.code_bytes + len(trained.blob)
    else:
        why = "python quantizer: no serialized codec (faiss.serialize_index does not apply)"
        null.update(codec_bytes=why, total_bytes=why)
    return values, null


def recall_depths(k_search: int, ds: LoadedDataset) -> tuple[tuple[int, ...], tuple[int, ...], dict[str, str]]:
    """The k of k-recall@k and R of 1-recall@R that can be scored, and why the others are NULL."""
    ks, rs, null = [], [], {}
    for k in RECALL_KS:
        if k > ds.gt_k:
            null[f"recall_at_{k}"] = f"ground truth holds {ds.gt_k} neighbours per query, fewer than k={k}"
        elif k > k_search:
            null[f"recall_at_{k}"] = f"only {k_search} results per query (n_base={ds.n_base})"
        else:
            ks.append(k)
        if k > k_search:
            null[f"one_recall_at_{k}"] = f"only {k_search} results per query (n_base={ds.n_base})"
        else:
            rs.append(k)
    return tuple(ks), tuple(rs), null


def score(searched: Searched, ds: LoadedDataset) -> dict[str, float]:
    """The row's recalls by exact distance (ties credited, see docs/METRICS.md); depths that cannot be scored
    are left out (`recall_depths` gives their NULL reasons). Symmetric recalls are scored the same way, against the
    raw queries' true neighbours, when the symmetric search ran."""
    ks, rs, _ = recall_depths(searched.k, ds)
    out = distance_recalls(ds.base, ds.queries, searched.ids, ds.gt_ids, ds.search_metric, ks=ks, rs=rs)
    if searched.symmetric_ids is not None:
        sym = searched.symmetric_ids
        sks = tuple(k for k in SYMMETRIC_KS if f"symmetric_recall_at_{k}" not in searched.symmetric_null)
        srs = tuple(r for r in SYMMETRIC_RS if r <= sym.shape[1])
        got = distance_recalls(ds.base, ds.queries, sym, ds.gt_ids, ds.search_metric, ks=sks, rs=srs)
        out.update({f"symmetric_{name}": value for name, value in got.items()})
    return out
