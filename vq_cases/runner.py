"""Run one case end to end: build, train, encode (+ distortion), search, score. No pytest in here.

Data flows one way: dataset + training sample -> codec -> codes -> search -> metrics -> row fields. The base is
encoded in chunks so a memory-mapped base much larger than RAM is streamed, and reconstruction error is
accumulated on the same pass (decode time is not counted in `encode_s`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from vq_benchmark.fixtures.loading import LoadedDataset
from vq_benchmark.reports.atomic import atomic_open
from vq_benchmark.reports.schema import RECALL_KS, Row
from vq_benchmark.vq_cases.methods import METHODS
from vq_benchmark.vq_cases.metrics import MSEAccumulator, k_recall_at_k, one_recall_at_r
from vq_benchmark.vq_cases.sweep import Case

ENCODE_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class CaseOutputs:
    """Where a case writes what it produces besides its row (None: do not write)."""

    arrays_dir: Path | None
    codec_path: Path | None


def _save_array(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        np.save(f, arr, allow_pickle=False)


def _recalls(row: Row, null: dict[str, str], ids: np.ndarray, ds: LoadedDataset, k_search: int) -> None:
    for k in RECALL_KS:
        name, one = f"recall_at_{k}", f"one_recall_at_{k}"
        if k > ds.gt_k:
            null[name] = f"ground truth holds {ds.gt_k} neighbours per query, fewer than k={k}"
        else:
            row[name] = k_recall_at_k(ids, ds.gt_ids, ds.gt_dists, k)
        if k > k_search:
            null[one] = f"only {k_search} results per query (n_base={ds.n_base})"
        else:
            row[one] = one_recall_at_r(ids, ds.gt_ids, k)


def run_case(case: Case, ds: LoadedDataset, train_x: np.ndarray, outputs: CaseOutputs) -> Row:
    """Measure one case; returns the case's identity, metric and artifact fields (provenance is added later)."""
    method = METHODS[case.method]
    params = dict(case.params)
    built = method.build(params, ds.dim, ds.spec.metric)
    codec = built.codec
    notes = list(built.notes)
    null: dict[str, str] = dict(method.null_metrics)
    if ds.gt_dists is None:
        notes.append("ground truth has no distances: ties at the k-th neighbour are not credited")
    if method.min_train is not None and train_x.shape[0] < method.min_train(params):
        notes.append(f"training sample {train_x.shape[0]} < {method.min_train(params)} recommended by faiss")

    row: Row = {
        "case_id": case.case_id,
        "dataset": ds.spec.name,
        "method": case.method,
        "params_json": case.params_json,
        "factory": codec.description,
        "metric_type": ds.spec.metric,
        "n_base": ds.n_base,
        "n_queries": ds.n_queries,
        "dim": ds.dim,
        "n_train": int(train_x.shape[0]),
        "threads": int(faiss.omp_get_max_threads()),
    }

    t0 = time.perf_counter()
    codec.train(train_x)
    row["train_s"] = time.perf_counter() - t0
    if outputs.codec_path is not None:
        codec.save(outputs.codec_path)
        row["codec_path"] = str(outputs.codec_path)

    code_bytes = codec.code_bytes
    codes = np.empty((ds.n_base, code_bytes), dtype=np.uint8)
    acc = MSEAccumulator()
    encode_s = 0.0
    for start in range(0, ds.n_base, ENCODE_CHUNK_ROWS):
        x = np.ascontiguousarray(ds.base[start : start + ENCODE_CHUNK_ROWS], dtype=np.float32)
        t0 = time.perf_counter()
        chunk_codes = codec.encode(x)
        encode_s += time.perf_counter() - t0
        codes[start : start + x.shape[0]] = chunk_codes
        if "mse" not in null:
            acc.add(x, codec.decode(chunk_codes))
    row["encode_s"] = encode_s
    codec.add_codes(codes)
    del codes

    row["code_bytes"] = code_bytes
    row["compression_ratio"] = ds.dim * 4 / code_bytes
    if "mse" not in null:
        row["mse"] = acc.mse
        row["relative_mse"] = acc.relative_mse
        if acc.relative_mse is None:
            null["relative_mse"] = "mean squared norm of the base is 0"
    else:
        null.setdefault("relative_mse", null["mse"])

    k_search = min(max(RECALL_KS), ds.n_base)
    t0 = time.perf_counter()
    dists, ids = codec.search(ds.queries, k_search)
    search_s = time.perf_counter() - t0
    row["search_s"] = search_s
    if search_s > 0:
        row["qps"] = ds.n_queries / search_s
    else:
        null["qps"] = "search took less than the timer resolution"
    _recalls(row, null, ids, ds, k_search)

    if outputs.arrays_dir is not None:
        ids_path = outputs.arrays_dir / f"{case.case_id}.ids.npy"
        dist_path = outputs.arrays_dir / f"{case.case_id}.dist.npy"
        _save_array(ids_path, ids)
        _save_array(dist_path, dists)
        row["neighbors_path"], row["distances_path"] = str(ids_path), str(dist_path)

    for name in null:  # a metric that does not apply is NULL, never a number measured anyway
        row.pop(name, None)
    if null:
        row["null_reasons_json"] = json.dumps(null, sort_keys=True)
    if notes:
        row["notes"] = "; ".join(notes)
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
