"""Opening datasets: file errors name the file, GT is cached by fingerprint, and real GloVe is prepared right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN, DatasetError, load_datasets_file


def _files(tmp_path: Path, base: np.ndarray, queries: np.ndarray, extra: str = "") -> dict:
    np.save(tmp_path / "b.npy", base)
    np.save(tmp_path / "q.npy", queries)
    (tmp_path / "ds.toml").write_text(f'[datasets.t]\nbase = "b.npy"\nqueries = "q.npy"\n{extra}')
    return load_datasets_file(tmp_path / "ds.toml", tmp_path)


@pytest.mark.smoke
def test_query_dimension_mismatch_names_both_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    specs = _files(tmp_path, rng.random((50, 8), dtype=np.float32), rng.random((5, 9), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"q\.npy has dimension 9.*b\.npy has 8"):
        open_dataset(specs["t"], tmp_path / "cache")


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("base", "message"),
    [(np.zeros(10, np.float32), "expected a 2-D array"), (np.array([["a", "b"]]), "expected numeric vectors")],
)
def test_bad_base_file_is_one_line_naming_it(tmp_path: Path, base: np.ndarray, message: str) -> None:
    specs = _files(tmp_path, base, np.zeros((2, 2), np.float32))
    with pytest.raises(DatasetError, match=message) as err:
        open_dataset(specs["t"], tmp_path / "cache")
    assert "b.npy" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.smoke
def test_missing_base_file(tmp_path: Path) -> None:
    specs = _files(tmp_path, np.zeros((4, 2), np.float32), np.zeros((2, 2), np.float32))
    (tmp_path / "b.npy").unlink()
    with pytest.raises(DatasetError, match=r"base file .*b\.npy: not found"):
        open_dataset(specs["t"], tmp_path / "cache")


@pytest.mark.smoke
def test_ground_truth_ids_out_of_range(tmp_path: Path) -> None:
    np.save(tmp_path / "gt.npy", np.full((3, 4), 10, dtype=np.int64))
    specs = _files(tmp_path, np.zeros((10, 2), np.float32), np.zeros((3, 2), np.float32), 'ground_truth = "gt.npy"\n')
    with pytest.raises(DatasetError, match=r"dataset t: .*gt\.npy"):
        open_dataset(specs["t"], tmp_path / "cache")


@pytest.mark.smoke
def test_computed_ground_truth_is_cached_and_reused(tmp_path: Path) -> None:
    first = open_dataset(BUILTIN["dummy-small"], tmp_path)
    second = open_dataset(BUILTIN["dummy-small"], tmp_path)
    assert first.gt_source.startswith("computed") and second.gt_source.startswith("cached")
    assert first.fingerprint == second.fingerprint
    np.testing.assert_array_equal(first.gt_ids, second.gt_ids)
    assert first.gt_k == 100 and first.gt_dists is not None


@pytest.mark.smoke
def test_training_sample_is_seeded_and_drawn_from_base(tmp_path: Path) -> None:
    ds = open_dataset(BUILTIN["dummy"], tmp_path)
    a, b, c = (training_sample(ds, 500, seed) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == (500, ds.dim) and a.dtype == np.float32
    base_rows = {row.tobytes() for row in np.asarray(ds.base)}
    assert all(row.tobytes() in base_rows for row in a)
    assert len({row.tobytes() for row in a}) == 500  # without replacement
    assert training_sample(ds, 10**9, 0).shape == ds.base.shape


def test_glove_is_real_normalised_and_split(tmp_path: Path) -> None:
    """The glove extra is installed in CI: the packaged vectors are split 399,000 / 1,000 and normalised."""
    ds = open_dataset(BUILTIN["glove-50d"], tmp_path)
    assert ds.base.shape == (399_000, 50) and ds.queries.shape == (1_000, 50)
    norms = np.linalg.norm(np.asarray(ds.base[:5000]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    # an exact search of the queries against the base agrees with the computed ground truth
    top = np.argmax(ds.queries[:20] @ np.asarray(ds.base).T, axis=1)
    np.testing.assert_array_equal(top, ds.gt_ids[:20, 0])
    assert np.all(np.diff(ds.gt_dists, axis=1) <= 1e-6)  # inner product: best first
