"""The codec cache: a codec trained once is loaded by every later case with the same key and measures exactly the
same; files that cannot be trusted are retrained and overwritten; concurrent writers of one key leave a good file."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.reports.schema import ARTIFACTS, TIMING_COLUMNS, check_row, metric
from vq_benchmark.vq_cases import methods
from vq_benchmark.vq_cases.codec import FaissCodec
from vq_benchmark.vq_cases.codec_cache import load_codec, sidecar_path, store_codec
from vq_benchmark.vq_cases.runner import CaseOutputs, run_case, train_phase
from vq_benchmark.vq_cases.sweep import Case

TIMINGS = TIMING_COLUMNS  # clock readings differ between two runs of the same codec
SQ8 = Case("dummy-small", "sq8", ())
PQ = Case("dummy-small", "pq", (("M", 4), ("nbits", 6)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Spin-waiting OpenMP threads on a busy 2-core box make OPQ training 5x slower; one thread keeps this fast."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    ds = open_dataset(BUILTIN["dummy-small"], tmp_path_factory.mktemp("cache"))
    return ds, training_sample(ds, 100_000, seed=0)


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts FaissCodec.train calls (each a real training)."""
    calls: list[int] = []
    real = FaissCodec.train

    def spy(self: FaissCodec, x: np.ndarray) -> None:
        calls.append(len(x))
        real(self, x)

    monkeypatch.setattr(FaissCodec, "train", spy)
    return calls


def measured(row: dict) -> dict:
    """Everything but wall times (and threads: OpenMP sets them per thread): what must not change when the codec
    is loaded instead of trained."""
    return {k: v for k, v in row.items() if k not in (*TIMINGS, "codec_cached")}


def outputs(tmp_path: Path, use: bool = True) -> CaseOutputs:
    return CaseOutputs(tmp_path / "arrays", tmp_path / "codebooks", use_codec_cache=use)


@pytest.mark.smoke
@pytest.mark.parametrize(
    "case",
    [
        SQ8,
        PQ,
        Case("dummy-small", "pq", (("M", 5), ("nbits", 4))),
        Case("dummy-small", "opq", (("M", 4), ("nbits", 4))),
    ],
    ids=lambda c: c.case_id,
)
def test_second_run_loads_and_measures_the_same(small, tmp_path: Path, train_calls: list[int], case: Case) -> None:
    ds, xt = small
    first = run_case(case, ds, xt, CaseOutputs(tmp_path / "a1", tmp_path / "codebooks"), seed=0)
    assert train_calls == [len(xt)] and first["codec_cached"] == 0
    assert first["original_train_s"] == first["train_s"]
    second = run_case(case, ds, xt, CaseOutputs(tmp_path / "a2", tmp_path / "codebooks"), seed=0)
    assert train_calls == [len(xt)], "the cached codec was trained again"
    assert second["codec_cached"] == 1 and second["original_train_s"] == first["train_s"]
    arrays = ("neighbors_path", "distances_path")
    same = {k: v for k, v in measured(first).items() if k not in arrays}
    assert (
        set(second) == set(first) and {k: second[k] for k in same} == same
    )  # recall, MSE, code_bytes, notes, codec_path: all identical
    for name in arrays:
        assert np.array_equal(np.load(first[name]), np.load(second[name])) and first[name] != second[name]
    check_row(second)


def test_loaded_codec_encodes_and_searches_like_the_trained_one(small, tmp_path: Path) -> None:
    ds, xt = small
    trained = train_phase(PQ, ds, xt)
    path = tmp_path / "c.faissindex"
    store_codec(path, trained.blob, train_s=trained.train_s, n_train=len(xt))
    loaded = load_codec(path, methods.METHODS["pq"].build(dict(PQ.params), ds.dim, "l2").codec, len(xt))
    base = np.asarray(ds.base)
    assert np.array_equal(loaded.codec.encode(base), trained.codec.encode(base))
    for codec in (trained.codec, loaded.codec):
        codec.add_codes(codec.encode(base))
    for a, b in zip(trained.codec.search(ds.queries, 10), loaded.codec.search(ds.queries, 10), strict=True):
        assert np.array_equal(a, b)
    assert loaded.original_train_s == trained.train_s and loaded.unknown_reason is None


def test_loaded_codec_is_not_written_again(small, tmp_path: Path) -> None:
    ds, xt = small
    path = Path(run_case(SQ8, ds, xt, outputs(tmp_path))["codec_path"])
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (path, sidecar_path(path))]
    assert run_case(SQ8, ds, xt, outputs(tmp_path))["codec_cached"] == 1
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (path, sidecar_path(path))] == before


def test_what_shapes_training_trains_again(small, tmp_path: Path, train_calls: list[int]) -> None:
    ds, xt = small
    first = run_case(PQ, ds, xt, outputs(tmp_path), seed=0)
    other_seed = run_case(PQ, ds, xt, outputs(tmp_path), seed=1)
    other_params = run_case(Case("dummy-small", "pq", (("M", 8), ("nbits", 6))), ds, xt, outputs(tmp_path), seed=0)
    assert len(train_calls) == 3 and other_seed["codec_cached"] == other_params["codec_cached"] == 0
    assert len({first["codec_path"], other_seed["codec_path"], other_params["codec_path"]}) == 3


def test_no_codec_cache_trains_again_and_still_writes(small, tmp_path: Path, train_calls: list[int]) -> None:
    ds, xt = small
    path = Path(run_case(SQ8, ds, xt, outputs(tmp_path))["codec_path"])
    path.write_bytes(b"not a codec")  # not even read without the cache
    row = run_case(SQ8, ds, xt, outputs(tmp_path, use=False))
    assert len(train_calls) == 2 and row["codec_cached"] == 0 and row["original_train_s"] == row["train_s"]
    assert "notes" not in row and Path(row["codec_path"]) == path
    assert faiss.read_index(str(path)).d == ds.dim  # the fresh codec replaced the bad file
    assert run_case(SQ8, ds, xt, outputs(tmp_path))["codec_cached"] == 1


def _garbage(kind: str, good: bytes) -> bytes:
    if kind == "random":
        return np.random.default_rng(0).bytes(len(good))
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "empty":
        return b""
    if kind == "other-dim":
        return faiss.serialize_index(faiss.index_factory(16, "SQ8")).tobytes()
    if kind == "other-kind":  # PQ32x8 on d=32 has SQ8's dimension, metric and code size: another quantizer
        return faiss.serialize_index(faiss.index_factory(32, "PQ32x8np")).tobytes()
    if kind == "untrained":
        return faiss.serialize_index(faiss.index_factory(32, "SQ8")).tobytes()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "other-dim", "other-kind", "untrained"])
def test_untrusted_file_is_retrained_and_overwritten(small, tmp_path: Path, train_calls: list[int], kind: str) -> None:
    ds, xt = small
    first = run_case(SQ8, ds, xt, outputs(tmp_path))
    path = Path(first["codec_path"])
    good = path.read_bytes()
    path.write_bytes(_garbage(kind, good))
    row = run_case(SQ8, ds, xt, outputs(tmp_path))
    assert len(train_calls) == 2 and row["codec_cached"] == 0
    assert row["notes"].startswith(f"codec cache file {path} was unreadable (") and row["notes"].endswith(
        "): retrained"
    )
    assert path.read_bytes() == good and measured(row) == {**measured(first), "notes": row["notes"]}
    again = run_case(SQ8, ds, xt, outputs(tmp_path))
    assert again["codec_cached"] == 1 and "notes" not in again and len(train_calls) == 2
    assert again["original_train_s"] == row["train_s"]  # the sidecar was rewritten with the retraining's time


def test_failure_after_training_leaves_the_codec(small, tmp_path: Path, monkeypatch, train_calls: list[int]) -> None:
    ds, xt = small

    def broken(self: FaissCodec, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("encode failed")

    with monkeypatch.context() as mp, pytest.raises(RuntimeError, match="encode failed"):
        mp.setattr(FaissCodec, "encode", broken)
        run_case(PQ, ds, xt, outputs(tmp_path))
    files = sorted(p.name for p in (tmp_path / "codebooks" / ds.fingerprint).iterdir())
    assert [Path(n).suffix for n in files] == [".faissindex", ".json"]
    row = run_case(PQ, ds, xt, outputs(tmp_path))
    assert row["codec_cached"] == 1 and len(train_calls) == 1


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.unlink(), "has no sidecar"),
        (lambda p: p.write_text("{not json"), "is unreadable"),
        (lambda p: p.write_text('{"train_s": -1}'), "holds no valid train_s"),
        (lambda p: p.write_text(p.read_text().replace('"codec_blake2b": "', '"codec_blake2b": "0')), "another codec"),
    ],
    ids=["missing", "not-json", "bad-time", "other-codec"],
)
def test_codec_without_a_good_sidecar_is_used_with_unknown_time(small, tmp_path: Path, damage, reason: str) -> None:
    ds, xt = small
    first = run_case(SQ8, ds, xt, outputs(tmp_path))
    damage(sidecar_path(Path(first["codec_path"])))
    row = run_case(SQ8, ds, xt, outputs(tmp_path))
    assert row["codec_cached"] == 1 and "original_train_s" not in row
    assert reason in json.loads(row["null_reasons_json"])["original_train_s"]
    assert measured(row) == {**measured(first), "null_reasons_json": row["null_reasons_json"]}


def test_sidecar_records_the_training(small, tmp_path: Path) -> None:
    ds, xt = small
    row = run_case(SQ8, ds, xt, outputs(tmp_path))
    meta = json.loads(sidecar_path(Path(row["codec_path"])).read_text())
    assert meta["train_s"] == row["train_s"] and meta["n_train"] == len(xt)
    assert meta["faiss_version"] == faiss.__version__
    assert dt.datetime.fromisoformat(meta["created_at"]).utcoffset() == dt.timedelta(0)


def test_concurrent_writers_of_one_key_leave_a_good_file(small, tmp_path: Path) -> None:
    ds, xt = small
    blobs = [train_phase(SQ8, ds, xt * s).blob for s in (1, 2)]  # two valid codecs of one key
    assert blobs[0] != blobs[1]
    path = tmp_path / "c.faissindex"
    template = methods.METHODS["sq8"].build({}, ds.dim, "l2").codec
    start, seen, errors = threading.Barrier(3), [], []

    def write(blob: bytes) -> None:
        start.wait()
        for _ in range(30):  # each write replaces the other thread's bytes, so every call really writes
            store_codec(path, blob, train_s=0.5, n_train=len(xt))

    def read() -> None:
        start.wait()
        for _ in range(60):
            try:
                seen.append(load_codec(path, template, len(xt)).blob)
            except FileNotFoundError:
                continue
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in blobs] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and set(seen) <= set(blobs)  # a reader never saw a torn or foreign file
    final = load_codec(path, template, len(xt))
    assert final.blob in blobs and final.original_train_s in (0.5, None)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_concurrent_cases_of_one_key_both_end_correct(small, tmp_path: Path) -> None:
    ds, xt = small
    rows: list[dict] = []
    runs = [threading.Thread(target=lambda: rows.append(run_case(PQ, ds, xt, outputs(tmp_path)))) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert len(rows) == 2 and rows[0]["codec_path"] == rows[1]["codec_path"]
    after = run_case(PQ, ds, xt, outputs(tmp_path))
    assert after["codec_cached"] == 1 and measured(after) == measured(rows[0])


def test_codec_without_restore_is_trained_every_time(small, tmp_path: Path, monkeypatch, train_calls) -> None:
    ds, xt = small

    class NoRestore:
        """A codec outside faiss: the cache cannot rebuild it, so it is trained (and still written)."""

        def __init__(self, inner: FaissCodec) -> None:
            self.inner, self.description = inner, inner.description

        def __getattr__(self, name: str):
            if name == "restore":
                raise AttributeError(name)
            return getattr(self.inner, name)

    build = methods.METHODS["sq8"].build
    plain = methods.Method("sq8", "no restore", (), lambda p, d, m: methods.Built(NoRestore(build(p, d, m).codec)))
    monkeypatch.setitem(methods.METHODS, "sq8", plain)
    rows = [run_case(SQ8, ds, xt, outputs(tmp_path)) for _ in range(2)]
    assert [r["codec_cached"] for r in rows] == [0, 0] and len(train_calls) == 2
    assert Path(rows[1]["codec_path"]).is_file()


def test_schema_declares_the_cache_columns() -> None:
    m = metric("original_train_s")
    assert (m.sql_type, m.unit, m.higher_is_better) == ("REAL", "s", False)
    assert "equals train_s" in m.description and "loading" in metric("train_s").description
    cached = next(c for c in ARTIFACTS if c.name == "codec_cached")
    assert cached.sql_type == "INTEGER"
