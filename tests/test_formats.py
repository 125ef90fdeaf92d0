"""Vector file formats: every writer/reader pair round-trips through the whole VectorSource interface, and every
damaged file is one DatasetError line naming it."""

from __future__ import annotations

import itertools
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vq_benchmark.fixtures.formats import (
    EXTENSIONS,
    infer_format,
    open_ann_hdf5,
    open_bin,
    open_ids,
    open_parquet,
    open_vecs,
    open_vectors,
    read_bigann_gt,
    write_bigann_gt,
    write_fbin,
    write_vecs,
)
from vq_benchmark.fixtures.registry import DatasetError
from vq_benchmark.fixtures.vector_source import ArraySource

h5py = pytest.importorskip("h5py")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_names = itertools.count()


def matrices(dtypes: list[str], max_n: int = 40, max_d: int = 9) -> st.SearchStrategy[np.ndarray]:
    """2-D arrays of one of `dtypes` (n and d down to 1); floats stay finite so norms are too."""

    def of(dtype: str) -> st.SearchStrategy[np.ndarray]:
        shape = st.tuples(st.integers(1, max_n), st.integers(1, max_d))
        if dtype.startswith("float"):
            # subnormals excluded: NormalisedSource divides by a float32 norm, which loses them (see the report)
            elements = st.floats(-1e3, 1e3, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)
            return arrays(np.dtype(dtype), shape, elements=elements)
        return arrays(np.dtype(dtype), shape)

    return st.sampled_from(dtypes).flatmap(of)


def check_source(src, x: np.ndarray, seed: int = 0) -> None:
    """`src` behaves like read-only `x` through slices, ids, blocks, limit, normalised and pickling."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    assert src.shape == x.shape and len(src) == n and src.dtype == x.dtype
    np.testing.assert_array_equal(src[:], x)
    np.testing.assert_array_equal(np.asarray(src), x)
    np.testing.assert_array_equal(src[-1], x[-1])
    for _ in range(3):
        a, b = sorted(rng.integers(0, n + 1, size=2))
        np.testing.assert_array_equal(src[a:b], x[a:b])
    ids = rng.integers(0, n, size=2 * n + 3)  # repeats guaranteed
    np.testing.assert_array_equal(src[ids], x[ids])
    ids2 = rng.integers(0, n, size=(3, 4))
    assert src.gather(ids2).shape == (3, 4, d)
    np.testing.assert_array_equal(src.gather(ids2), x[ids2])
    rows = int(rng.integers(1, n + 2))
    seen = np.concatenate([block.copy() for _, block in src.blocks(rows)])
    starts = [start for start, _ in src.blocks(rows)]
    np.testing.assert_array_equal(seen, x)
    assert starts == list(range(0, n, rows))
    m = int(rng.integers(1, n + 1))
    np.testing.assert_array_equal(src.limit(m)[:], x[:m])
    assert src.limit(m).shape == (m, d)
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    want = (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    unit = src.normalised()
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit[:], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unit[ids], want[ids], rtol=1e-5, atol=1e-6)
    copy = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(copy[ids], x[ids])


def one_line(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# -- round trips ----------------------------------------------------------------------------------------------


@FAST
@given(x=matrices(["float32", "uint8", "int8"]))
def test_bigann_vectors_round_trip(tmp_path: Path, x: np.ndarray) -> None:
    fmt = {"float32": "fbin", "uint8": "u8bin", "int8": "i8bin"}[x.dtype.name]
    path = tmp_path / f"v{next(_names)}.{fmt}"
    assert write_fbin(path, x) == fmt
    assert path.stat().st_size == 8 + x.nbytes
    check_source(open_bin(path, "base", fmt), x)
    check_source(open_vectors(path, None, "base"), x)


@FAST
@given(x=matrices(["float32", "uint8", "int32"]))
def test_texmex_round_trip(tmp_path: Path, x: np.ndarray) -> None:
    fmt = {"float32": "fvecs", "uint8": "bvecs", "int32": "ivecs"}[x.dtype.name]
    path = tmp_path / f"v{next(_names)}.{fmt}"
    assert write_vecs(path, x) == fmt
    assert path.stat().st_size == x.shape[0] * (4 + x.shape[1] * x.itemsize)
    check_source(open_vecs(path, "base", fmt), x)
    check_source(open_vectors(path, None, "base"), x)


@FAST
@given(x=matrices(["float32", "uint8"], max_n=30, max_d=5))
def test_writers_stream_a_source(tmp_path: Path, x: np.ndarray) -> None:
    """A VectorSource converts to another format block by block (format conversion of a big base)."""
    path = tmp_path / f"c{next(_names)}.vecs"
    write_vecs(path, ArraySource(x))
    fmt = "fvecs" if x.dtype == np.float32 else "bvecs"
    out = tmp_path / f"c{next(_names)}.bin"
    write_fbin(out, open_vecs(path, "base", fmt))
    check_source(open_bin(out, "base", "fbin" if fmt == "fvecs" else "u8bin"), x)


@FAST
@given(
    ids=arrays(np.int64, st.tuples(st.integers(1, 20), st.integers(1, 8)), elements=st.integers(0, 2**31 - 1)),
    seed=st.integers(0, 2**16),
)
def test_bigann_gt_round_trip(tmp_path: Path, ids: np.ndarray, seed: int) -> None:
    dists = np.random.default_rng(seed).random(ids.shape, dtype=np.float32)
    path = tmp_path / f"gt{next(_names)}.bin"
    write_bigann_gt(path, ids, dists)
    assert path.stat().st_size == 8 + ids.size * 8
    for got_ids, got_dists in (read_bigann_gt(path, "gt"), open_ids(path, None, "gt")):
        assert got_ids.dtype == np.int64 and got_dists.dtype == np.float32
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got_dists, dists)


def test_ids_from_npy_and_ivecs(tmp_path: Path) -> None:
    ids = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::-1].copy()
    np.save(tmp_path / "gt.npy", ids)
    write_vecs(tmp_path / "gt.ivecs", ids)
    for name in ("gt.npy", "gt.ivecs"):
        got, dists = open_ids(tmp_path / name, None, "gt")
        assert dists is None and got.dtype == np.int64
        np.testing.assert_array_equal(got, ids)


@FAST
@given(
    x=matrices(["float32", "int8", "uint8"], max_n=30, max_d=6),
    fixed=st.booleans(),
    group=st.integers(1, 7),
)
def test_parquet_round_trip(tmp_path: Path, x: np.ndarray, fixed: bool, group: int) -> None:
    value = pa.from_numpy_dtype(x.dtype)
    kind = pa.list_(value, x.shape[1]) if fixed else pa.list_(value)
    table = pa.table({"id": np.arange(len(x)), "emb": pa.array(list(x), type=kind)})
    path = tmp_path / f"p{next(_names)}.parquet"
    pq.write_table(table, path, row_group_size=group)
    src = open_parquet(path, "base", "emb")
    check_source(src, x)
    np.testing.assert_array_equal(open_vectors(path, None, "base", column="emb")[:], x)
    np.testing.assert_array_equal(open_parquet(path, "base")[:], x)  # the only embedding column, found unnamed


def test_parquet_reads_each_group_once_when_streaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"emb": pa.array(list(x), type=pa.list_(pa.float32()))}), path, row_group_size=6)
    src = open_parquet(path, "base", "emb")
    calls: list[int] = []
    real = src._arrow_group
    monkeypatch.setattr(src, "_arrow_group", lambda g: calls.append(g) or real(g))
    np.testing.assert_array_equal(np.concatenate([b.copy() for _, b in src.blocks(4)]), x)
    assert calls == [1, 2, 3]  # group 0 is still cached from reading the dimension


def _ann_file(path: Path, distance: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An ann-benchmarks style file: exact GT, distances in ann-benchmarks' own scale."""
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((50, 6)).astype(np.float32)
    test = rng.standard_normal((7, 6)).astype(np.float32)
    if distance == "euclidean":
        d = np.sqrt(((test[:, None, :].astype(np.float64) - train[None]) ** 2).sum(-1))
    else:
        tn = test / np.linalg.norm(test, axis=1, keepdims=True)
        xn = train / np.linalg.norm(train, axis=1, keepdims=True)
        d = 1.0 - tn.astype(np.float64) @ xn.T.astype(np.float64)
    ids = np.argsort(d, axis=1)[:, :10]
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = distance
        f.create_dataset("train", data=train, chunks=(8, 6))
        f.create_dataset("test", data=test)
        f.create_dataset("neighbors", data=ids.astype(np.int32))
        f.create_dataset("distances", data=np.take_along_axis(d, ids, 1).astype(np.float32))
    return train, test


@pytest.mark.parametrize("distance", ["euclidean", "angular"])
def test_ann_hdf5_round_trip(tmp_path: Path, distance: str) -> None:
    path = tmp_path / "ann.hdf5"
    train, test = _ann_file(path, distance)
    ann = open_ann_hdf5(path, "dataset x")
    assert ann.metric == {"euclidean": "l2", "angular": "cosine"}[distance]
    check_source(ann.base, train)
    np.testing.assert_array_equal(ann.queries, test)
    assert ann.queries.dtype == np.float32 and ann.gt_ids.dtype == np.int64
    if distance == "euclidean":  # ours: squared L2
        ours = ((test[:, None, :].astype(np.float64) - train[None]) ** 2).sum(-1)
    else:  # ours: squared L2 between unit vectors
        tn = test / np.linalg.norm(test, axis=1, keepdims=True)
        xn = train / np.linalg.norm(train, axis=1, keepdims=True)
        ours = ((tn[:, None, :].astype(np.float64) - xn[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ann.gt_ids, np.argsort(ours, axis=1)[:, :10])
    np.testing.assert_allclose(ann.gt_dists, np.take_along_axis(ours, ann.gt_ids, 1), rtol=1e-4, atol=1e-5)
    check_source(open_vectors(path, None, "base"), train)
    ids, dists = open_ids(tmp_path / "ann.hdf5", "hdf5", "gt")
    np.testing.assert_array_equal(ids, ann.gt_ids)
    np.testing.assert_array_equal(dists, ann.gt_dists)


def test_ann_hdf5_without_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = b"euclidean"
        f.create_dataset("train", data=np.ones((3, 2), np.uint8))
        f.create_dataset("test", data=np.ones((2, 2), np.uint8))
    ann = open_ann_hdf5(path, "base")
    assert ann.gt_ids is None and ann.gt_dists is None and ann.base.dtype == np.uint8
    with pytest.raises(DatasetError) as exc:
        open_ids(path, None, "gt")
    assert "neighbors" in one_line(exc, path)


def test_extensions_and_dispatch_errors(tmp_path: Path) -> None:
    assert {infer_format(f"a{ext}", "base") for ext in EXTENSIONS} >= {"fbin", "fvecs", "hdf5", "parquet"}
    assert infer_format("gt.bin", "gt") == "bigann-gt" and infer_format("x.H5", "base") == "hdf5"
    path = tmp_path / "gt.bin"
    write_bigann_gt(path, np.zeros((2, 3), np.int64), np.zeros((2, 3)))
    with pytest.raises(DatasetError) as exc:
        open_vectors(path, None, "base")
    assert "not a vector format" in one_line(exc, path)
    with pytest.raises(DatasetError) as exc:
        open_ids(tmp_path / "x.fbin", None, "gt")
    assert "no ground truth" in one_line(exc, tmp_path / "x.fbin")
    pq.write_table(pa.table({"a": pa.array([[1.0]]), "b": pa.array([[2.0]])}), tmp_path / "two.parquet")
    with pytest.raises(DatasetError) as exc:
        open_vectors(tmp_path / "two.parquet", None, "base")
    assert "name the embedding column" in one_line(exc, tmp_path / "two.parquet")


def test_writers_refuse_what_they_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float64"):
        write_vecs(tmp_path / "a.fvecs", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"names \.u8bin"):
        write_fbin(tmp_path / "a.u8bin", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"2-D"):
        write_fbin(tmp_path / "a.fbin", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        write_bigann_gt(tmp_path / "gt.bin", -np.ones((1, 2), np.int64), np.zeros((1, 2)))
    assert not list(tmp_path.iterdir())  # nothing half-written


# -- damaged files: one line naming the file --------------------------------------------------------------------


def _truncate(path: Path, by: int) -> Path:
    os.truncate(path, path.stat().st_size - by)
    return path


def _patch(path: Path, pos: int, value: bytes) -> Path:
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(value)
    return path


def _append(path: Path, data: bytes) -> Path:
    with open(path, "ab") as f:
        f.write(data)
    return path


def _fbin(tmp: Path) -> Path:
    write_fbin(tmp / "v.fbin", np.ones((10, 4), np.float32))
    return tmp / "v.fbin"


def _fvecs(tmp: Path, n: int = 100, d: int = 3) -> Path:
    write_vecs(tmp / "v.fvecs", np.ones((n, d), np.float32))
    return tmp / "v.fvecs"


def _parquet(tmp: Path, rows: list, kind=None) -> Path:
    path = tmp / "p.parquet"
    pq.write_table(pa.table({"id": list(range(len(rows))), "emb": pa.array(rows, type=kind)}), path, row_group_size=2)
    return path


def _h5(tmp: Path, distance: str = "euclidean", **datasets: np.ndarray) -> Path:
    path = tmp / "a.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = distance
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


_T, _Q = np.ones((5, 3), np.float32), np.ones((2, 3), np.float32)
BAD_FILES = {
    "fbin truncated": (lambda t: _truncate(_fbin(t), 3), "header says 168 bytes", "fbin"),
    "fbin trailing bytes": (lambda t: _append(_fbin(t), b"xx"), "file holds 170", "fbin"),
    "fbin wrong header n": (lambda t: _patch(_fbin(t), 0, np.uint32(11).tobytes()), "11 rows", "fbin"),
    "fbin shorter than header": (lambda t: _truncate(_fbin(t), 166), "8-byte", "fbin"),
    "empty fvecs": (lambda t: _truncate(_fvecs(t), 1600), "empty", "fvecs"),
    "fvecs truncated": (lambda t: _truncate(_fvecs(t), 2), "not a whole number of rows", "fvecs"),
    "fvecs last row d": (
        lambda t: _patch(_fvecs(t), 99 * 16, np.int32(7).tobytes()),
        "row 99 has dimension 7",
        "fvecs",
    ),
    "fvecs zero d": (lambda t: _patch(_fvecs(t), 0, np.int32(0).tobytes()), "row 0 has dimension 0", "fvecs"),
    "fvecs as bvecs": (lambda t: _fvecs(t, n=1, d=5).rename(t / "v.bvecs") or t / "v.bvecs", "whole number", "bvecs"),
    "directory": (lambda t: t, "is a directory", "fbin"),
    "missing": (lambda t: t / "nope.fbin", "not found", "fbin"),
    "gt size mismatch": (
        lambda t: write_bigann_gt(t / "g.bin", np.ones((3, 2), int), np.ones((3, 2))) or _truncate(t / "g.bin", 4),
        "header says 56 bytes",
        "bigann-gt",
    ),
    "parquet ragged": (lambda t: _parquet(t, [[1.0, 2.0]] * 3 + [[1.0]]), "row 3 has 1 values, row 0 has 2", "parquet"),
    "parquet null row": (lambda t: _parquet(t, [[1.0, 2.0]] * 4 + [None]), "row 4 is null", "parquet"),
    "parquet null value": (lambda t: _parquet(t, [[1.0, 2.0]] * 2 + [[1.0, None]]), "row 2 holds a null", "parquet"),
    "parquet missing column": (
        lambda t: pq.write_table(pa.table({"a": [1], "b": [2]}), t / "p.parquet") or t / "p.parquet",
        "its columns are: a, b",
        "parquet",
    ),
    "parquet wrong type": (lambda t: _parquet(t, [["x"], ["y"]]), "has type list<", "parquet"),
    "not parquet": (
        lambda t: (t / "p.parquet").write_bytes(b"PAR1 nope") and t / "p.parquet",
        "not a readable",
        "parquet",
    ),
    "hdf5 missing test": (lambda t: _h5(t, train=_T), "no dataset 'test' (it holds: train)", "hdf5"),
    "hdf5 not 2-D": (lambda t: _h5(t, train=np.ones(5, np.float32), test=_Q), "'train' has shape (5,)", "hdf5"),
    "hdf5 dims": (lambda t: _h5(t, train=_T, test=np.ones((2, 4), np.float32)), "'test' has dimension 4", "hdf5"),
    "hdf5 hamming": (lambda t: _h5(t, "hamming", train=_T, test=_Q), "distance 'hamming' is not supported", "hdf5"),
    "hdf5 gt shapes": (
        lambda t: _h5(t, train=_T, test=_Q, neighbors=np.zeros((2, 3), np.int32), distances=np.zeros((2, 4))),
        "'distances' has shape (2, 4), 'neighbors' has (2, 3)",
        "hdf5",
    ),
    "hdf5 gt rows": (lambda t: _h5(t, train=_T, test=_Q, neighbors=np.zeros((3, 1), int)), "3 rows", "hdf5"),
    "hdf5 gt id range": (lambda t: _h5(t, train=_T, test=_Q, neighbors=np.full((2, 1), 5)), "id 5, outside", "hdf5"),
    "not hdf5": (lambda t: (t / "a.hdf5").write_bytes(b"\x89HDF nope") and t / "a.hdf5", "not an HDF5 file", "hdf5"),
    "hdf5 truncated": (lambda t: _truncate(_h5(t, train=np.ones((500, 8)), test=_Q), 2000), "truncated", "hdf5"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_damaged_file_is_one_line(tmp_path: Path, case: str) -> None:
    make, expected, fmt = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(DatasetError) as exc:
        if fmt == "bigann-gt":
            open_ids(path, fmt, "dataset d: ground_truth")
        else:
            src = open_vectors(path, fmt, "dataset d: base", column="emb" if fmt == "parquet" else None)
            src[:]  # parquet checks each row group as it is read
    msg = one_line(exc, path)
    assert msg.startswith(f"dataset d: {'ground_truth' if fmt == 'bigann-gt' else 'base'} file ")
    assert expected in msg


def test_fvecs_middle_row_caught_on_read(tmp_path: Path) -> None:
    """A bad row the open-time sample misses is caught when it is read, by blocks, slice or gather."""
    path = _patch(_fvecs(tmp_path), 50 * 16, np.int32(9).tobytes())
    src = open_vecs(path, "base", "fvecs")
    for read in (lambda: list(src.blocks(7)), lambda: src[40:60], lambda: src[[3, 50]]):
        with pytest.raises(DatasetError) as exc:
            read()
        assert "row 50 has dimension 9, row 0 has 3" in one_line(exc, path)
    np.testing.assert_array_equal(src[:50], np.ones((50, 3), np.float32))


@pytest.mark.parametrize(
    ("module", "fmt", "extra"),
    [("h5py", "hdf5", "vq-benchmark[hdf5]"), ("pyarrow", "parquet", "vq-benchmark[parquet]")],
)
def test_missing_optional_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, fmt: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    path = tmp_path / f"x.{fmt}"
    path.write_bytes(b"whatever")
    with pytest.raises(DatasetError) as exc:
        open_vectors(path, None, "base")
    assert f"needs {module}: pip install '{extra}'" in one_line(exc, path)
