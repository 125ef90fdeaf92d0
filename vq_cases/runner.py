"""Run one case end to end and turn it into a row: the phases (vq_cases/phases.py), artifacts, NULL reasons.

Data flows one way: dataset + training sample -> codec -> codes -> search -> metrics -> row fields. No pytest in
here. Files are written atomically, and the codec file name carries a key of everything that shaped training, so
runs with another seed, sample size or faiss version never overwrite each other's codebooks, and a run with the
same key loads the codec instead of training it again (vq_cases/codec_cache.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vq_benchmark.fixtures.loading import LoadedDataset
from vq_benchmark.reports.atomic import atomic_open
from vq_benchmark.reports.schema import Row
from vq_benchmark.vq_cases.codec_cache import CODEC_SUFFIX, CodecSlot, codec_file_key, codec_file_path, store_codec
from vq_benchmark.vq_cases.metrics import RECALL_KS
from vq_benchmark.vq_cases.phases import (
    ENCODE_CHUNK_ROWS,
    Encoded,
    Searched,
    Trained,
    encode_phase,
    recall_depths,
    score,
    search_phase,
    train_phase,
)
from vq_benchmark.vq_cases.sweep import Case

__all__ = [
    "CODEC_SUFFIX",
    "ENCODE_CHUNK_ROWS",
    "CaseOutputs",
    "Encoded",
    "Searched",
    "Trained",
    "build_row",
    "codec_file_key",
    "codec_file_path",
    "codec_slot",
    "encode_phase",
    "original_train_s",
    "run_case",
    "score",
    "search_phase",
    "train_phase",
    "write_artifacts",
]


@dataclass(frozen=True)
class CaseOutputs:
    """Where a case writes what it produces besides its row (None: do not write).

    The codec goes to ``codebooks_dir / <dataset fingerprint> / <case_id>-<key>.faissindex``, which is also the
    codec cache: with ``use_codec_cache`` a trusted file there is loaded instead of training; without it the file
    is neither read nor trusted, but a freshly trained codec is still written.
    """

    arrays_dir: Path | None
    codebooks_dir: Path | None
    use_codec_cache: bool = True


def codec_slot(outputs: CaseOutputs, case: Case, ds: LoadedDataset, n_train: int, seed: int) -> CodecSlot | None:
    """The codec cache file of this case's training, or None when codecs are not written."""
    if outputs.codebooks_dir is None:
        return None
    key = codec_file_key(ds.fingerprint, case.method, case.params_json, n_train, seed)
    path = codec_file_path(outputs.codebooks_dir, ds.fingerprint, case.case_id, key)
    return CodecSlot(path, read=outputs.use_codec_cache)


def _save_array(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        np.save(f, arr, allow_pickle=False)


def write_artifacts(trained: Trained, searched: Searched, ds: LoadedDataset, outputs: CaseOutputs, *, seed: int) -> Row:
    """Write the result arrays and the trained, empty codec (all atomically); returns their path columns."""
    case = trained.case
    paths: Row = {}
    if outputs.arrays_dir is not None:
        ids_path = outputs.arrays_dir / f"{case.case_id}.ids.npy"
        dist_path = outputs.arrays_dir / f"{case.case_id}.dist.npy"
        _save_array(ids_path, searched.ids)
        _save_array(dist_path, searched.dists)
        paths["neighbors_path"], paths["distances_path"] = str(ids_path), str(dist_path)
    slot = codec_slot(outputs, case, ds, trained.n_train, seed)
    if slot is not None and trained.blob is not None:  # a Python quantizer has no faiss file to keep
        if trained.codec_path != slot.path:  # trained outside run_case, without this cache slot: write it now
            store_codec(slot.path, trained.blob, train_s=original_train_s(trained), n_train=trained.n_train)
        paths["codec_path"] = str(slot.path)
    return paths


def original_train_s(trained: Trained) -> float | None:
    """What the codec's first training took: this case's train_s unless it was loaded from the cache."""
    return trained.original_train_s if trained.cached else trained.train_s


def _plain(value: object) -> object:
    """numpy scalars break xdist's report serializer: rows hold int/float/str/None only."""
    if isinstance(value, np.bool_ | np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def build_row(
    trained: Trained,
    encoded: Encoded,
    searched: Searched,
    scores: dict[str, float],
    ds: LoadedDataset,
    *,
    seed: int,
    artifacts: Row | None = None,
) -> Row:
    """Identity, metric and artifact fields of one case (provenance is added by the caller).

    Metrics the method declares NULL, or that cannot be measured, are left out and explained in
    null_reasons_json. Non-finite values (e.g. an inf MSE) are kept: the reports layer stores them as NULL.
    """
    case = trained.case
    _, _, null = recall_depths(searched.k, ds)
    null.update(trained.null)
    row: Row = {
        "case_id": case.case_id,
        "dataset": ds.spec.name,
        "method": case.method,
        "params_json": case.params_json,
        "factory": trained.codec.description,
        "metric_type": ds.metric,
        "vector_dtype": ds.vector_dtype,
        "vector_bytes": ds.vector_bytes,
        "n_base": ds.n_base,
        "n_queries": ds.n_queries,
        "dim": ds.dim,
        "n_train": trained.n_train,
        "seed": seed,
        "threads": searched.threads,
        "train_s": trained.train_s,
        "original_train_s": original_train_s(trained),
        "codec_cached": int(trained.cached),
        "encode_s": encoded.encode_s,
        "code_bytes": encoded.code_bytes,
        "compression_ratio": ds.vector_bytes / encoded.code_bytes,
        "search_mode": getattr(trained.codec, "search_mode", "asymmetric"),
        "search_s": searched.search_s,
        "qps": searched.qps,
        **scores,
        **(artifacts or {}),
    }
    if "mse" in null:
        null.setdefault("relative_mse", null["mse"])
    else:
        row["mse"], row["relative_mse"] = encoded.mse, encoded.relative_mse
        if encoded.relative_mse is None:
            null.setdefault("relative_mse", "mean squared norm of the base is 0")
    if searched.qps is None:
        null.setdefault("qps", "search took less than the timer resolution")
    for name in null:  # a metric that does not apply is NULL, never a number measured anyway
        row.pop(name, None)
    if null:
        row["null_reasons_json"] = json.dumps(null, sort_keys=True)
    if trained.notes:
        row["notes"] = "; ".join(trained.notes)
    return {k: _plain(v) for k, v in row.items() if v is not None}


def run_case(case: Case, ds: LoadedDataset, train_x: np.ndarray, outputs: CaseOutputs, *, seed: int = 0) -> Row:
    """Measure one case: train (or load the cached codec), encode, search, score, write artifacts; ``seed`` is
    the training sample's seed (it keys the codec file and is recorded in the row)."""
    slot = codec_slot(outputs, case, ds, int(train_x.shape[0]), seed)
    trained = train_phase(case, ds, train_x, cache=slot)
    encoded = encode_phase(trained, ds)
    searched = search_phase(trained, ds, min(max(RECALL_KS), ds.n_base))
    scores = score(searched, ds)
    artifacts = write_artifacts(trained, searched, ds, outputs, seed=seed)
    return build_row(trained, encoded, searched, scores, ds, seed=seed, artifacts=artifacts)
