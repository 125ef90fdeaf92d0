"""The case runner on real (small) data: metrics equal independent computations; declared NULLs stay NULL;
codec files are keyed by what shaped training and written atomically."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

from vq_benchmark.fixtures.ground_truth import exact_knn
from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.reports import atomic
from vq_benchmark.reports.schema import TIMING_COLUMNS
from vq_benchmark.vq_cases import methods
from vq_benchmark.vq_cases.codec_cache import sidecar_path
from vq_benchmark.vq_cases.metrics import one_recall_at_r
from vq_benchmark.vq_cases.runner import (
    CaseOutputs,
    build_row,
    codec_file_key,
    encode_phase,
    run_case,
    score,
    search_phase,
    train_phase,
    write_artifacts,
)
from vq_benchmark.vq_cases.sweep import Case

TIMINGS = TIMING_COLUMNS  # clock readings differ between two runs of the same codec


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    ds = open_dataset(BUILTIN["dummy-small"], tmp_path_factory.mktemp("cache"))
    return ds, training_sample(ds, 100_000, seed=0)


def recompute_recalls(ids: np.ndarray, ds, k: int) -> tuple[float, float]:
    """k-recall@k and 1-recall@k by exact distance, independently of vq_cases.metrics (plain numpy per query)."""
    base = np.asarray(ds.base, dtype=np.float32).astype(np.float64)
    hits_k = hits_one = 0.0
    for i, q in enumerate(ds.queries.astype(np.float64)):
        true = ((base[ds.gt_ids[i]] - q) ** 2).sum(axis=1)
        t1, tk = true[0], true[k - 1]
        got = {int(j): float(((base[j] - q) ** 2).sum()) for j in ids[i, :k] if j >= 0}
        hits_k += sum(d <= tk + 1e-6 * max(1.0, abs(tk)) for d in got.values()) / k
        hits_one += any(d <= t1 + 1e-6 * max(1.0, abs(t1)) for d in got.values())
    return hits_k / len(ids), hits_one / len(ids)


def _outputs(tmp_path: Path) -> CaseOutputs:
    return CaseOutputs(tmp_path / "arrays", tmp_path / "codebooks")


@pytest.mark.smoke
def test_sq8_row_matches_independent_computation(small, tmp_path: Path) -> None:
    ds, xt = small
    row = run_case(Case("dummy-small", "sq8", ()), ds, xt, _outputs(tmp_path), seed=7)
    index = faiss.read_index(row["codec_path"])  # the trained, empty codec written by the runner
    assert index.ntotal == 0 and row["seed"] == 7
    recon = index.sa_decode(index.sa_encode(np.ascontiguousarray(ds.base)))
    mse = float(((np.asarray(ds.base, dtype=np.float64) - recon) ** 2).sum(axis=1).mean())
    assert row["mse"] == pytest.approx(mse, rel=1e-9)
    assert row["relative_mse"] == pytest.approx(mse / float((np.asarray(ds.base, dtype=np.float64) ** 2).sum(1).mean()))
    ids = np.load(row["neighbors_path"], allow_pickle=False)
    for k in (1, 10, 100):
        recall, one = recompute_recalls(ids, ds, k)
        assert row[f"recall_at_{k}"] == pytest.approx(recall, abs=1e-12)
        assert row[f"one_recall_at_{k}"] == pytest.approx(one, abs=1e-12)
    assert 0.9 < row["recall_at_10"] < 1.0
    assert row["code_bytes"] == ds.dim and row["compression_ratio"] == 4.0
    assert all(type(v) in (int, float, str) for v in row.values())


@pytest.mark.smoke
def test_lossless_codec_scores_one_on_duplicates(small, tmp_path: Path, monkeypatch) -> None:
    ds, _ = small
    flat = methods.Method(
        "flat", "exact", (), lambda p, d, m: methods.Built(methods.FaissCodec.from_factory("Flat", d, m))
    )
    monkeypatch.setitem(methods.METHODS, "flat", flat)
    rng = np.random.default_rng(0)
    base = np.ascontiguousarray(rng.permutation(np.repeat(np.asarray(ds.base[:100]), 20, axis=0)))
    dists, ids = exact_knn(base[::-1], ds.queries, 100, "l2")  # a GT that breaks ties by the larger id
    dup = dataclasses.replace(ds, base=base, gt_ids=len(base) - 1 - ids, gt_dists=dists)
    row = run_case(Case("dummy-small", "flat", ()), dup, base, CaseOutputs(tmp_path, None))
    assert {row[f"{p}recall_at_{k}"] for p in ("", "one_") for k in (1, 10, 100)} == {1.0}
    assert row["mse"] == 0.0
    found = np.load(row["neighbors_path"], allow_pickle=False)
    assert one_recall_at_r(found, dup.gt_ids, 1) < 0.5  # the id rule would fail this exact search


@pytest.mark.smoke
def test_declared_null_metrics_are_null_with_reason(small, monkeypatch) -> None:
    ds, xt = small
    reasons = {"mse": "decode is not a reconstruction", "recall_at_1": "not comparable"}
    monkeypatch.setitem(methods.METHODS, "sq8", dataclasses.replace(methods.METHODS["sq8"], null_metrics=reasons))
    row = run_case(Case("dummy-small", "sq8", ()), ds, xt, CaseOutputs(None, None))
    for name in ("mse", "relative_mse", "recall_at_1"):
        assert name not in row
    stored = json.loads(row["null_reasons_json"])
    assert stored["mse"] == stored["relative_mse"] == reasons["mse"]
    assert stored["recall_at_1"] == reasons["recall_at_1"]
    assert row["recall_at_10"] > 0.9 and "neighbors_path" not in row and "codec_path" not in row


def test_small_base_nulls_the_depths_it_cannot_score(small) -> None:
    ds, _ = small
    base = np.ascontiguousarray(ds.base[:50])
    dists, ids = exact_knn(base, ds.queries, 50, "l2")
    tiny = dataclasses.replace(ds, base=base, gt_ids=ids, gt_dists=dists)
    row = run_case(Case("dummy-small", "sq8", ()), tiny, base, CaseOutputs(None, None))
    stored = json.loads(row["null_reasons_json"])
    assert set(stored) == {"recall_at_100", "one_recall_at_100"}
    assert "fewer than k=100" in stored["recall_at_100"] and "only 50 results" in stored["one_recall_at_100"]
    assert row["recall_at_10"] > 0.9 and "recall_at_100" not in row


def test_phases_compose_to_the_row_of_run_case(small, tmp_path: Path) -> None:
    ds, xt = small
    case = Case("dummy-small", "sq8", ())
    row = run_case(case, ds, xt, _outputs(tmp_path / "a"), seed=3)
    trained = train_phase(case, ds, xt)
    encoded = encode_phase(trained, ds)
    searched = search_phase(trained, ds, 100)
    artifacts = write_artifacts(trained, searched, ds, _outputs(tmp_path / "b"), seed=3)
    composed = build_row(trained, encoded, searched, score(searched, ds), ds, seed=3, artifacts=artifacts)
    assert set(composed) == set(row)
    same = {k: v for k, v in row.items() if k not in TIMINGS and not k.endswith("_path")}
    assert {k: composed[k] for k in same} == same
    assert Path(composed["codec_path"]).name == Path(row["codec_path"]).name
    assert np.array_equal(np.load(composed["neighbors_path"]), np.load(row["neighbors_path"]))
    assert (
        trained.codec.index.ntotal == ds.n_base
        and faiss.deserialize_index(np.frombuffer(trained.blob, np.uint8)).ntotal == 0
    )


def test_codec_key_changes_with_what_shapes_training() -> None:
    base = {"dataset_fingerprint": "f" * 32, "method": "pq", "params_json": '{"M":8}', "n_train": 1000, "seed": 0}
    key = codec_file_key(**base)
    assert len(key) == 12 and int(key, 16) >= 0 and key == codec_file_key(**base)
    for change in (
        {"seed": 1},
        {"n_train": 999},
        {"params_json": '{"M":16}'},
        {"dataset_fingerprint": "e" * 32},
        {"method": "opq"},
        {"faiss_version": "0.0.1"},
    ):
        assert codec_file_key(**{**base, **change}) != key, change


def test_two_seeds_write_two_codec_files(small, tmp_path: Path) -> None:
    ds, xt = small
    case = Case("dummy-small", "sq8", ())
    paths = {run_case(case, ds, xt, CaseOutputs(None, tmp_path), seed=s)["codec_path"] for s in (0, 1, 1)}
    assert len(paths) == 2
    for p in map(Path, paths):
        assert p.parent == tmp_path / ds.fingerprint and p.name.startswith(f"{case.case_id}-")
        assert p.name.endswith(".faissindex") and faiss.read_index(str(p)).ntotal == 0
    written = sorted(name for p in map(Path, paths) for name in (p.name, sidecar_path(p).name))
    assert sorted(os.listdir(tmp_path / ds.fingerprint)) == written  # codecs and sidecars, no temp files


def test_full_disk_leaves_no_codec_file(small, tmp_path: Path, monkeypatch) -> None:
    ds, xt = small
    case = Case("dummy-small", "sq8", ())
    trained = train_phase(case, ds, xt)
    encode_phase(trained, ds)
    searched = search_phase(trained, ds, 10)
    outputs = CaseOutputs(None, tmp_path)
    good = Path(write_artifacts(trained, searched, ds, outputs, seed=0)["codec_path"])
    before, sidecar = good.read_bytes(), sidecar_path(good).read_bytes()
    other = train_phase(case, ds, xt * 2)  # same key, other bytes: identical bytes would not be written again

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_artifacts(other, searched, ds, outputs, seed=0)  # same file: the old one must survive
    with pytest.raises(OSError, match="No space left"):
        write_artifacts(trained, searched, ds, outputs, seed=1)  # new file: must not appear at all
    monkeypatch.undo()
    assert sorted(os.listdir(good.parent)) == sorted([good.name, sidecar_path(good).name])
    assert good.read_bytes() == before and sidecar_path(good).read_bytes() == sidecar


def test_training_notes(small) -> None:
    ds, xt = small
    far = run_case(Case("dummy-small", "pq", (("M", 4), ("nbits", 8))), ds, xt[:500], CaseOutputs(None, None))
    assert "training sample 500 < 9984 recommended by faiss" in far["notes"] and "far below" in far["notes"]
    near = run_case(Case("dummy-small", "pq", (("M", 4), ("nbits", 6))), ds, xt, CaseOutputs(None, None))
    assert near["notes"] == "training sample 2000 < 2496 recommended by faiss"


def test_code_larger_than_raw_vector_note(small) -> None:
    ds, _ = small
    u8 = np.clip(np.asarray(ds.base) * 20 + 128, 0, 255).astype(np.uint8)
    dists, ids = exact_knn(u8, ds.queries * 20 + 128, 100, "l2")
    ds8 = dataclasses.replace(
        ds, base=u8, queries=ds.queries * 20 + 128, gt_ids=ids, gt_dists=dists, vector_bytes=0, vector_dtype=""
    )
    row = run_case(Case("dummy-small", "sqfp16", ()), ds8, u8.astype(np.float32), CaseOutputs(None, None))
    assert row["notes"] == f"code (64 B) is larger than the raw vector ({ds.dim} B)"
    # a uint8 base is measured against its own bytes: 32 B per vector, 64 B per code
    assert (row["vector_dtype"], row["vector_bytes"]) == ("uint8", ds.dim)
    assert row["compression_ratio"] == 0.5 and row["recall_at_10"] == 1.0


def test_sqfp16_beyond_float16_range_gives_inf_mse_without_raising(small) -> None:
    ds, _ = small
    scale = 2e5 / float(np.abs(ds.base).max())  # the largest values exceed float16's 65504
    big = dataclasses.replace(ds, base=np.asarray(ds.base) * scale, queries=ds.queries * scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning escapes either
        row = run_case(Case("dummy-small", "sqfp16", ()), big, np.asarray(big.base), CaseOutputs(None, None))
    assert row["mse"] == math.inf and type(row["mse"]) is float
    assert all(0.0 <= row[f"{p}recall_at_{k}"] <= 1.0 for p in ("", "one_") for k in (1, 10, 100))
    assert all(type(v) in (int, float, str) for v in row.values())
