"""Run one case end to end and turn it into a row: the phases (vq_cases/phases.py), artifacts, NULL reasons.

Data flows one way: dataset + training sample -> codec -> codes -> search -> metrics -> row fields. No pytest in
here. Files are written atomically, and the codec file name carries a key of everything that shaped training, so
runs with another seed, sample size or faiss version never overwrite each other's codebooks, and a run with the
same key loads the codec instead of training it again (vq_cases/codec_cache.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vq_benchmark.fixtures.loading import LoadedDataset
from vq_benchmark.reports.atomic import atomic_open
from vq_benchmark.reports.schema import Row
from vq_benchmark.vq_cases.codec import CodecError, training_seed
from vq_benchmark.vq_cases.codec_cache import CODEC_SUFFIX, CodecSlot, codec_file_key, codec_file_path, store_codec
from vq_benchmark.vq_cases.codec_memo import CodecMemo, MemoEntry, memo_key
from vq_benchmark.vq_cases.method_spec import ParamValue
from vq_benchmark.vq_cases.metrics import RECALL_KS
from vq_benchmark.vq_cases.phases import (
    DECODE_METRICS,
    ENCODE_CHUNK_ROWS,
    Encoded,
    Searched,
    Trained,
    encode_phase,
    recall_depths,
    score,
    search_phase,
    speed_metrics,
    train_phase,
)
from vq_benchmark.vq_cases.search_params import ENCODE_PARAMS
from vq_benchmark.vq_cases.sweep import Case

__all__ = [
    "CODEC_SUFFIX",
    "ENCODE_CHUNK_ROWS",
    "CaseOutputs",
    "Encoded",
    "Searched",
    "Trained",
    "build_row",
    "case_matrix_fields",
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

    The codec goes to ``codebooks_dir / <dataset fingerprint> / <training_id>-<key>.faissindex``, which is also the
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
    path = codec_file_path(outputs.codebooks_dir, ds.fingerprint, case.training_id, key)
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
    reused: bool = False,
) -> Row:
    """Identity, metric and artifact fields of one case (provenance is added by the caller); `reused`: the trained
    and encoded codec came from the codec memo (train_s is then 0: nothing was trained or loaded for this case).

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
        "train_s": 0.0 if reused else trained.train_s,
        "original_train_s": original_train_s(trained),
        "codec_cached": int(trained.cached),
        "codec_reused": int(reused),
        **case_matrix_fields(case),
        "encode_s": encoded.encode_s,
        "code_bytes": encoded.code_bytes,
        "compression_ratio": ds.vector_bytes / encoded.code_bytes,
        "search_mode": getattr(trained.codec, "search_mode", "asymmetric"),
        "search_s": searched.search_s,
        "qps": searched.qps,
        **scores,
        **(artifacts or {}),
    }
    speed, speed_null = speed_metrics(trained, encoded, searched, ds)
    row.update(speed)
    if "mse" in null:  # no faithful decode: every metric that needs one is NULL for the same reason
        for name in DECODE_METRICS:
            null.setdefault(name, null["mse"])
    else:
        row["mse"], row["relative_mse"] = encoded.mse, encoded.relative_mse
        row.update(encoded.distortion)
        if encoded.relative_mse is None:
            null.setdefault("relative_mse", "mean squared norm of the base is 0")
        for name, why in {**encoded.distortion_null, **searched.symmetric_null}.items():
            null.setdefault(name, why)
    for name, why in speed_null.items():
        null.setdefault(name, why)
    if searched.qps is None:
        null.setdefault("qps", "search took less than the timer resolution")
    for name in null:  # a metric that does not apply is NULL, never a number measured anyway
        row.pop(name, None)
    if null:
        row["null_reasons_json"] = json.dumps(null, sort_keys=True)
    if case.notes or trained.notes:
        row["notes"] = "; ".join([*case.notes, *trained.notes])
    return {k: _plain(v) for k, v in row.items() if v is not None}


def _set_search(codec: object, params: dict[str, ParamValue]) -> None:
    """Search (and encode) with exactly `params`; a codec without search parameters takes none."""
    setter = getattr(codec, "set_search_params", None)
    if setter is not None:
        setter(params)
    elif params:
        raise CodecError(f"codec {getattr(codec, 'description', codec)}: takes no search parameters")


def _encoded(
    case: Case, ds: LoadedDataset, train_x: np.ndarray, outputs: CaseOutputs, seed: int, memo: CodecMemo | None
) -> tuple[MemoEntry, bool]:
    """The trained and encoded codec of the case's training: the memo's (True) or a new one (False). A memo entry
    encoded with another max_beam_size is encoded again from its trained, empty codec (no retraining)."""
    n_train = int(train_x.shape[0])
    # max_beam_size shapes faiss's RQ encoding; a Python quantizer's keyword of that name is search-only
    encode_params = {k: v for k, v in case.search if k in ENCODE_PARAMS} if case.method != "python" else {}
    key = memo_key(case, ds.fingerprint, n_train, seed)
    entry = memo.get(key) if memo is not None else None
    if entry is None:
        with training_seed(seed):
            trained = train_phase(case, ds, train_x, cache=codec_slot(outputs, case, ds, n_train, seed))
        _set_search(trained.codec, encode_params)
        entry = MemoEntry(key, ds.spec.name, trained, encode_phase(trained, ds), encode_params)
        if memo is not None:
            memo.put(entry)
        return entry, False
    if dict(entry.encode_params) != encode_params:
        restore = getattr(entry.trained.codec, "restore", None)
        if restore is None or entry.trained.blob is None:
            raise CodecError(f"codec {entry.trained.codec.description}: cannot be encoded again with {encode_params}")
        trained = dataclasses.replace(entry.trained, codec=restore(entry.trained.blob))
        _set_search(trained.codec, encode_params)
        entry = MemoEntry(key, ds.spec.name, trained, encode_phase(trained, ds), encode_params)
        if memo is not None:
            memo.replace(entry)
    return entry, True


def run_case(
    case: Case,
    ds: LoadedDataset,
    train_x: np.ndarray,
    outputs: CaseOutputs,
    *,
    seed: int = 0,
    memo: CodecMemo | None = None,
) -> Row:
    """Measure one case: train (or load the cached codec), encode, search, score, write artifacts; ``seed`` is
    the training seed (training sample and faiss's k-means; it keys the codec file and is recorded in the row).

    With a `memo`, a case whose training (codec_file_key) was already trained and encoded in this process only
    sets its search parameters and searches: its row has codec_reused 1 and train_s 0 (encode_s and the
    distortion are those of the codes it reuses)."""
    entry, reused = _encoded(case, ds, train_x, outputs, seed, memo)
    trained = dataclasses.replace(entry.trained, case=case)
    _set_search(trained.codec, dict(case.search))
    searched = search_phase(trained, ds, min(max(RECALL_KS), ds.n_base))
    scores = score(searched, ds)
    artifacts = write_artifacts(trained, searched, ds, outputs, seed=seed)
    return build_row(trained, entry.encoded, searched, scores, ds, seed=seed, artifacts=artifacts, reused=reused)


def case_matrix_fields(case: Case) -> Row:
    """The row fields that place a case in the matrix beyond its id: search parameters, the budget asked."""
    fields: Row = {}
    if case.search_json is not None:
        fields["search_params_json"] = case.search_json
    if case.bits_per_dim is not None:
        fields["bits_per_dim"] = case.bits_per_dim
    return fields
