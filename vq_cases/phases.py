"""The phases of one case: train, encode (+ distortion), search, score. No pytest and no files in here.

Each phase returns a small frozen record so later work can reuse a trained (and encoded) codec across several
search-parameter cases instead of retraining. `runner.run_case` composes them into a row. The base is encoded in
chunks so a memory-mapped base much larger than RAM is streamed, and reconstruction error is accumulated on the
same pass (decode time is not counted in `encode_s`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from vq_benchmark.fixtures.loading import LoadedDataset
from vq_benchmark.vq_cases.codec import Codec
from vq_benchmark.vq_cases.codec_cache import CodecSlot, load_cached, store_codec
from vq_benchmark.vq_cases.methods import METHODS, Method, ParamValue, null_metrics
from vq_benchmark.vq_cases.metrics import RECALL_KS, MSEAccumulator, distance_recalls
from vq_benchmark.vq_cases.sweep import Case

ENCODE_CHUNK_ROWS = 65_536
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


@dataclass(frozen=True)
class Encoded:
    """The base encoded into the codec; mse/relative_mse are None when the method declares MSE NULL."""

    encode_s: float
    code_bytes: int
    mse: float | None
    relative_mse: float | None  # also None when every base vector is zero


@dataclass(frozen=True)
class Searched:
    """One timed batched search of all queries; qps is None below the timer resolution."""

    k: int
    search_s: float
    qps: float | None
    threads: int
    ids: np.ndarray  # nq x k int64, -1 = no result
    dists: np.ndarray  # nq x k float32, as the codec computed them


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


def encode_phase(trained: Trained, ds: LoadedDataset) -> Encoded:
    """Encode the base chunk by chunk (timed), accumulate MSE on the same pass, then add the codes."""
    codec = trained.codec
    want_mse = "mse" not in trained.null
    code_bytes = codec.code_bytes
    adds = getattr(codec, "adds_vectors", False)  # indexes whose codes cannot be added as bytes (IVF fast-scan)
    codes = np.empty((ds.n_base, code_bytes), dtype=np.uint8)
    acc = MSEAccumulator()
    encode_s = 0.0
    for start, block in ds.base.blocks(ENCODE_CHUNK_ROWS):
        x = np.ascontiguousarray(block, dtype=np.float32)
        t0 = time.perf_counter()
        chunk_codes = codec.encode(x)
        encode_s += time.perf_counter() - t0
        codes[start : start + x.shape[0]] = chunk_codes
        if adds:
            codec.add_vectors(x)
        if want_mse:
            acc.add(x, codec.decode(chunk_codes))
    if not adds:
        codec.add_codes(codes)
    if not want_mse or acc.n == 0:
        return Encoded(encode_s, code_bytes, None, None)
    return Encoded(encode_s, code_bytes, acc.mse, acc.relative_mse)


def search_phase(trained: Trained, ds: LoadedDataset, k: int) -> Searched:
    """One batched asymmetric search of all queries, timed as a whole (QPS comes from the same run)."""
    threads = int(faiss.omp_get_max_threads())
    t0 = time.perf_counter()
    dists, ids = trained.codec.search(ds.queries, k)
    search_s = time.perf_counter() - t0
    qps = ds.n_queries / search_s if search_s > 0 else None
    return Searched(k, search_s, qps, threads, ids, dists)


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
    are left out (`recall_depths` gives their NULL reasons)."""
    ks, rs, _ = recall_depths(searched.k, ds)
    return distance_recalls(ds.base, ds.queries, searched.ids, ds.gt_ids, ds.search_metric, ks=ks, rs=rs)
