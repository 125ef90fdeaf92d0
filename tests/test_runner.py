"""The case runner on real (small) data: metrics equal independent computations; declared NULLs stay NULL."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.vq_cases import methods
from vq_benchmark.vq_cases.metrics import k_recall_at_k, one_recall_at_r
from vq_benchmark.vq_cases.runner import CaseOutputs, run_case
from vq_benchmark.vq_cases.sweep import Case


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    ds = open_dataset(BUILTIN["dummy-small"], tmp_path_factory.mktemp("cache"))
    return ds, training_sample(ds, 100_000, seed=0)


@pytest.mark.smoke
def test_sq8_row_matches_independent_computation(small, tmp_path: Path) -> None:
    ds, xt = small
    case = Case("dummy-small", "sq8", ())
    row = run_case(case, ds, xt, CaseOutputs(tmp_path / "arrays", tmp_path / "codec.faissindex"))
    index = faiss.read_index(row["codec_path"])  # the trained, empty codec written by the runner
    assert index.ntotal == 0
    recon = index.sa_decode(index.sa_encode(np.ascontiguousarray(ds.base)))
    mse = float(((ds.base.astype(np.float64) - recon) ** 2).sum(axis=1).mean())
    assert row["mse"] == pytest.approx(mse, rel=1e-9)
    assert row["relative_mse"] == pytest.approx(mse / float((ds.base.astype(np.float64) ** 2).sum(1).mean()))
    ids = np.load(row["neighbors_path"])
    assert row["recall_at_10"] == k_recall_at_k(ids, ds.gt_ids, ds.gt_dists, 10)
    assert row["one_recall_at_1"] == one_recall_at_r(ids, ds.gt_ids, 1)
    assert row["code_bytes"] == ds.dim and row["compression_ratio"] == 4.0
    assert all(type(v) in (int, float, str) for v in row.values())


@pytest.mark.smoke
def test_declared_null_metrics_are_null_with_reason(small, tmp_path: Path, monkeypatch) -> None:
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
