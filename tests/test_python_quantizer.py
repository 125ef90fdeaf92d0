"""Python quantizers (`method = "python"`): loading by name, module, file and entry point; every contract breach
is one QuantizerError line naming the class and failing only its own case; LVQ and the uniform scalar
quantizer keep their error bounds and code sizes, and run end to end from a sweep file."""

from __future__ import annotations

import math
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vq_benchmark.fixtures.ground_truth import exact_knn
from vq_benchmark.fixtures.loading import open_dataset, training_sample
from vq_benchmark.fixtures.registry import BUILTIN
from vq_benchmark.vq_cases import python_codec
from vq_benchmark.vq_cases.codec import Restorable
from vq_benchmark.vq_cases.methods import METHODS, MethodError, check_params, skip_reason
from vq_benchmark.vq_cases.python_codec import PythonCodec, QuantizerError, load_quantizer_class
from vq_benchmark.vq_cases.quantizers import pack_bits, packed_bytes, unpack_bits
from vq_benchmark.vq_cases.quantizers.lvq import LVQ
from vq_benchmark.vq_cases.quantizers.uniform_sq import UniformSQ
from vq_benchmark.vq_cases.runner import CaseOutputs, run_case
from vq_benchmark.vq_cases.sweep import Case, expand_sweep

pytestmark = pytest.mark.smoke

_HYP = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

BROKEN = """
import numpy as np

class Good:
    def fit(self, x):
        self.d = x.shape[1]
    def compress(self, x):
        return np.zeros((len(x), 4), dtype=np.uint8)
    def decompress(self, codes):
        return np.zeros((len(codes), self.d), dtype=np.float32)

class RaisesInFit(Good):
    def fit(self, x):
        raise ValueError("boom\\nsecond line")

class FloatCodes(Good):
    def compress(self, x):
        return np.zeros((len(x), 4))

class ShortCodes(Good):
    def compress(self, x):
        return np.zeros((max(0, len(x) - 1), 4), dtype=np.uint8)

class WideDecode(Good):
    def decompress(self, codes):
        return np.zeros((len(codes), self.d + 1), dtype=np.float32)

class ListCodes(Good):
    def compress(self, x):
        return [[0] * 4 for _ in x]

class DeclaredWrongSize(Good):
    code_bytes = 5

class SearchWithoutAdd(Good):
    def search(self, queries, k):
        return None

class SearchWithoutMetric(Good):
    def add(self, codes):
        pass
    def search(self, queries, k):
        return None

class BadSearch(Good):
    def __init__(self, metric="l2"):
        self.metric = metric
    def add(self, codes):
        self.n = len(codes)
    def search(self, queries, k):
        return np.zeros((len(queries), k)), np.zeros((len(queries), k + 1), dtype=np.int64)

class NotAQuantizer:
    def fit(self, x):
        pass
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    ds = open_dataset(BUILTIN["dummy-small"], tmp_path_factory.mktemp("cache"))
    return ds, training_sample(ds, 100_000, seed=0)


@pytest.fixture
def broken_file(tmp_path: Path) -> Path:
    path = tmp_path / "broken_quantizers.py"
    path.write_text(BROKEN)
    return path


def build(ref: str, dim: int = 8, metric: str = "l2", **kwargs: object) -> PythonCodec:
    params = check_params(METHODS["python"], {"quantizer": ref, **kwargs}, "test")
    codec = METHODS["python"].build(params, dim, metric).codec
    assert isinstance(codec, PythonCodec)
    return codec


# ---------------------------------------------------------------- finding the class


def test_builtin_names_resolve_without_entry_points(monkeypatch) -> None:
    monkeypatch.setattr(python_codec, "entry_points", lambda group: [])
    assert load_quantizer_class("lvq") is LVQ
    assert load_quantizer_class("uniform_sq") is UniformSQ


def test_module_and_class_reference() -> None:
    assert load_quantizer_class("vq_benchmark.vq_cases.quantizers.uniform_sq:UniformSQ") is UniformSQ
    with pytest.raises(QuantizerError, match=r"cannot import module 'no_such_module_xyz' \(ModuleNotFoundError"):
        load_quantizer_class("no_such_module_xyz:Q")
    with pytest.raises(QuantizerError, match="has no attribute 'Nope'"):
        load_quantizer_class("vq_benchmark.vq_cases.quantizers.lvq:Nope")


def test_entry_point_names(monkeypatch) -> None:
    ep = EntryPoint("mine", "vq_benchmark.vq_cases.quantizers.lvq:LVQ", python_codec.ENTRY_POINT_GROUP)
    monkeypatch.setattr(python_codec, "entry_points", lambda group: [ep] if group == ep.group else [])
    assert load_quantizer_class("mine") is LVQ
    with pytest.raises(QuantizerError) as info:
        load_quantizer_class("theirs")
    assert "unknown quantizer 'theirs': known names lvq, mine, uniform_sq" in str(info.value)


def test_file_path_relative_to_the_sweep_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "my_quantizers.py").write_text(
        "from vq_benchmark.vq_cases.quantizers.uniform_sq import UniformSQ\n\nclass Halved(UniformSQ):\n    pass\n"
    )
    sweep = folder / "sweep.toml"
    sweep.write_text('[[sweep]]\nmethod = "python"\nquantizer = "my_quantizers.py:Halved"\nbits = [2, 4]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cases = expand_sweep(sweep, "ds")  # registers the sweep's folder for relative quantizer files
    assert [c.case_id for c in cases] == [
        "ds-python-quantizermy_quantizers.py_Halved-bits2",
        "ds-python-quantizermy_quantizers.py_Halved-bits4",
    ]
    codec = METHODS["python"].build(dict(cases[1].params), 8, "l2").codec
    assert type(codec.quantizer).__name__ == "Halved" and codec.quantizer.bits == 4


def test_file_path_relative_to_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cwd_quantizer.py").write_text("from vq_benchmark.vq_cases.quantizers.lvq import LVQ as Mine\n")
    monkeypatch.chdir(tmp_path)
    assert load_quantizer_class("cwd_quantizer.py:Mine") is LVQ
    with pytest.raises(QuantizerError, match=r"file missing\.py not found"):
        load_quantizer_class("missing.py:Q")


def test_a_file_that_fails_to_import_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad_import.py"
    path.write_text("raise RuntimeError('no numpy here')\n")
    with pytest.raises(QuantizerError) as info:
        load_quantizer_class(f"{path}:Q")
    assert "raised RuntimeError: no numpy here" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- broken quantizers


@pytest.mark.parametrize(
    ("cls", "step", "fragment"),
    [
        ("RaisesInFit", "train", "fit() raised ValueError: boom"),
        ("FloatCodes", "train", "compress(X) must return a 2-D uint8 array of shape (1, code_bytes), got a float64"),
        (
            "ShortCodes",
            "train",
            "must return a 2-D uint8 array of shape (1, code_bytes), got a uint8 array of shape (0, 4)",
        ),
        ("ListCodes", "train", "compress(X) must return a 2-D uint8 array of shape (1, code_bytes), got list"),
        ("DeclaredWrongSize", "encode", "must return a 2-D uint8 array of shape (10, 5), got a uint8 array of shape"),
        ("WideDecode", "decode", "decompress(codes) must return an array of shape (10, 8), got a float32 array"),
        ("BadSearch", "search", "search(queries, k) must return (distances, ids), two arrays of shape (3, 2)"),
    ],
)
def test_contract_breaches_are_one_line_naming_the_class(broken_file: Path, cls: str, step: str, fragment: str) -> None:
    x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    codec = build(f"{broken_file}:{cls}")
    with pytest.raises(QuantizerError) as info:
        codec.train(x)
        if step in ("encode", "decode", "search"):
            codes = codec.encode(x)
        if step in ("decode", "search"):
            codec.decode(codes)
        if step == "search":
            codec.add_codes(codes)
            codec.search(x[:3], 2)
    msg = str(info.value)
    assert msg.startswith(f"quantizer {cls} ({broken_file}:{cls}): "), msg
    assert fragment in msg and "\n" not in msg, msg


@pytest.mark.parametrize(
    ("cls", "fragment"),
    [
        ("SearchWithoutAdd", "defines search() but not add(codes)"),
        ("SearchWithoutMetric", "defines search() but its constructor takes no 'metric' argument"),
        ("NotAQuantizer", "class NotAQuantizer has no compress, decompress method"),
    ],
)
def test_interface_problems_are_found_when_building(broken_file: Path, cls: str, fragment: str) -> None:
    with pytest.raises(QuantizerError) as info:
        build(f"{broken_file}:{cls}")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_constructor_arguments_name_the_call() -> None:
    with pytest.raises(QuantizerError) as info:
        build("uniform_sq", bitz=4)
    assert str(info.value).startswith("quantizer 'uniform_sq': UniformSQ(bitz=4) raised TypeError:")
    with pytest.raises(QuantizerError, match=r"LVQ\(bits=9, metric='l2'\) raised ValueError: bits must be"):
        build("lvq", bits=9)


def test_a_broken_quantizer_fails_only_its_own_case(small, broken_file: Path) -> None:
    ds, xt = small
    sweep = broken_file.parent / "sweep.toml"
    sweep.write_text(
        '[[sweep]]\nmethod = "python"\nquantizer = "uniform_sq"\nbits = 6\n\n'
        '[[sweep]]\nmethod = "python"\nquantizer = "broken_quantizers.py:FloatCodes"\n\n'
        '[[sweep]]\nmethod = "python"\nquantizer = "lvq"\nbits = 6\n'
    )
    rows, failures = {}, {}
    for case in expand_sweep(sweep, "dummy-small"):
        try:
            rows[case.case_id] = run_case(case, ds, xt, CaseOutputs(None, None))
        except QuantizerError as exc:
            failures[case.case_id] = str(exc)
    assert sorted(rows) == ["dummy-small-python-quantizerlvq-bits6", "dummy-small-python-quantizeruniform_sq-bits6"]
    (msg,) = failures.values()
    assert "FloatCodes" in msg and "got a float64 array" in msg


# ---------------------------------------------------------------- the codec around a quantizer


def test_code_size_is_declared_or_learned_at_fit() -> None:
    x = np.random.default_rng(1).standard_normal((50, 12)).astype(np.float32)
    codec = build("lvq", dim=12, bits=3)
    with pytest.raises(QuantizerError, match="code size unknown before fit"):
        _ = codec.code_bytes
    codec.train(x)
    assert codec.code_bytes == math.ceil(12 * 3 / 8) + 8
    assert codec.serialize() is None and not isinstance(codec, Restorable)
    assert codec.description == "python:lvq(bits=3)" and codec.search_mode == "asymmetric"
    assert build("uniform_sq", dim=12).search_mode == "decode-then-search"


def test_python_arguments_are_validated_when_the_sweep_is_read(tmp_path: Path) -> None:
    sweep = tmp_path / "s.toml"
    for text, fragment in [
        ('quantizer = "lvq"\nmetric = "ip"\n', "argument 'metric' is set from the dataset"),
        ('quantizer = "lvq"\nbits = {a = 1}\n', "argument bits must be a number, string or bool"),
        ('quantizer = "lvq"\nbits = nan\n', "argument bits must be finite"),
        ("bits = 4\n", "method 'python' needs parameter 'quantizer'"),
    ]:
        sweep.write_text('[[sweep]]\nmethod = "python"\n' + text)
        with pytest.raises(MethodError, match=fragment):
            expand_sweep(sweep, "ds")
    sweep.write_text('[[sweep]]\nmethod = "python"\nzeta = 0.5\nquantizer = "my.mod:Q"\nalpha = true\n')
    (case,) = expand_sweep(sweep, "ds")
    assert case.case_id == "ds-python-quantizermy.mod_Q-alpha1-zeta0.5"  # arguments sorted by name
    assert skip_reason("python", dict(case.params), 8, 10) is None


def test_decode_then_search_is_exact_over_the_decoded_vectors() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    for metric in ("l2", "ip"):
        codec = build("uniform_sq", dim=16, metric=metric, bits=3)
        codec.train(x)
        codes = codec.encode(x)
        codec.add_codes(codes[:1000])
        codec.add_codes(codes[1000:])
        dists, ids = codec.search(x[:20], 7)
        ref_d, ref_i = exact_knn(codec.decode(codes), x[:20], 7, metric)
        np.testing.assert_array_equal(ids, ref_i)
        np.testing.assert_allclose(dists, ref_d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_lvq_asymmetric_search_matches_search_over_decoded_vectors(metric: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 24)).astype(np.float32)
    q = rng.standard_normal((30, 24)).astype(np.float32)
    codec = build("lvq", dim=24, metric=metric, bits=4)
    codec.train(x)
    codes = codec.encode(x)
    codec.add_codes(codes)
    dists, ids = codec.search(q, 10)
    ref_d, ref_i = exact_knn(codec.decode(codes), q, 10, metric)
    assert (ids == ref_i).mean() > 0.98
    np.testing.assert_allclose(dists, ref_d, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- LVQ and uniform SQ properties


@_HYP
@given(
    bits=st.integers(1, 8),
    values=st.integers(0, 255).flatmap(
        lambda seed: st.tuples(st.integers(1, 20), st.integers(1, 40)).map(lambda s: (seed, s))
    ),
)
def test_bit_packing_round_trips(bits: int, values) -> None:
    seed, (n, d) = values
    v = np.random.default_rng(seed).integers(0, 2**bits, (n, d)).astype(np.uint8)
    packed = pack_bits(v, bits)
    assert packed.shape == (n, packed_bytes(d, bits)) == (n, math.ceil(d * bits / 8))
    np.testing.assert_array_equal(unpack_bits(packed, d, bits), v)


finite = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
    elements=st.floats(-1e3, 1e3, width=32),
)


@_HYP
@given(x=finite, bits=st.integers(1, 8))
def test_lvq_error_within_half_a_step_and_code_size(x: np.ndarray, bits: int) -> None:
    n, d = x.shape
    q = LVQ(bits)
    q.fit(x)
    codes = q.compress(x)
    assert codes.dtype == np.uint8 and codes.shape == (n, math.ceil(d * bits / 8) + 8) == (n, q.code_bytes)
    step = np.ascontiguousarray(codes[:, :8]).view(np.float32)[:, 1]
    err = np.abs(q.decompress(codes).astype(np.float64) - x)
    scale = np.abs(x).max() + np.abs(q.mean).max()
    assert (err <= step[:, None] / 2 * (1 + 1e-5) + 1e-5 * scale + 1e-30).all()


@_HYP
@given(x=finite, bits=st.integers(1, 8))
def test_uniform_sq_error_within_half_a_step_and_code_size(x: np.ndarray, bits: int) -> None:
    n, d = x.shape
    q = UniformSQ(bits)
    q.fit(x)
    codes = q.compress(x)
    assert codes.dtype == np.uint8 and codes.shape == (n, math.ceil(d * bits / 8)) == (n, q.code_bytes)
    step = (x.astype(np.float64).max(axis=0) - x.min(axis=0)) / (2**bits - 1)
    err = np.abs(q.decompress(codes).astype(np.float64) - x)
    assert (err <= step / 2 * (1 + 1e-6) + 1e-6 * np.abs(x).max() + 1e-30).all()


@pytest.mark.parametrize("cls", [LVQ, UniformSQ])
def test_eight_bits_are_close_to_exact(cls) -> None:
    x = np.random.default_rng(4).standard_normal((500, 32)).astype(np.float32)
    q = cls(8)
    q.fit(x)
    recon = q.decompress(q.compress(x))
    rel = float(((x - recon) ** 2).sum(1).mean() / (x**2).sum(1).mean())
    assert rel < 1e-4, rel


@pytest.mark.parametrize("bits", [4, 8])
def test_uniform_sq_matches_faiss_scalar_quantizer(bits: int) -> None:
    """Same quantizer as faiss's SQ4/SQ8 (per-dimension min/max): the same reconstruction error."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2000, 6)) @ rng.standard_normal((6, 32))).astype(np.float32)
    ours = UniformSQ(bits)
    ours.fit(x)
    theirs = METHODS[f"sq{bits}"].build({}, 32, "l2").codec
    theirs.train(x)
    mse_ours = float(((x - ours.decompress(ours.compress(x))) ** 2).sum(1).mean())
    mse_faiss = float(((x - theirs.decode(theirs.encode(x))) ** 2).sum(1).mean())
    assert mse_ours == pytest.approx(mse_faiss, rel=0.02)


# ---------------------------------------------------------------- end to end


def test_lvq_and_uniform_sq_run_end_to_end_from_a_sweep_file(small, tmp_path: Path) -> None:
    ds, xt = small
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        '[[sweep]]\nmethod = "python"\nquantizer = "lvq"\nbits = [4, 8]\n\n'
        '[[sweep]]\nmethod = "python"\nquantizer = "vq_benchmark.vq_cases.quantizers.uniform_sq:UniformSQ"\n'
        "bits = [4, 8]\n"
    )
    rows = {c.case_id: run_case(c, ds, xt, CaseOutputs(tmp_path / "arrays", None)) for c in expand_sweep(sweep, "x")}
    lvq4, lvq8 = rows["x-python-quantizerlvq-bits4"], rows["x-python-quantizerlvq-bits8"]
    usq = "x-python-quantizervq_benchmark.vq_cases.quantizers.uniform_sq_UniformSQ-bits"
    usq4, usq8 = rows[usq + "4"], rows[usq + "8"]
    assert lvq4["code_bytes"] == math.ceil(ds.dim * 4 / 8) + 8 and lvq8["code_bytes"] == ds.dim + 8
    assert usq4["code_bytes"] == ds.dim // 2 and usq8["code_bytes"] == ds.dim
    assert lvq8["factory"] == "python:lvq(bits=8)"
    for low, high in ((lvq4, lvq8), (usq4, usq8)):
        assert high["mse"] < low["mse"] and high["recall_at_10"] >= low["recall_at_10"]
        assert high["recall_at_10"] > 0.95 and low["recall_at_10"] > 0.5
        assert Path(high["neighbors_path"]).is_file() and "codec_path" not in high


def test_case_ids_of_python_cases_are_stable() -> None:
    case = Case("d", "python", (("quantizer", "path/to/q.py:My"), ("bits", 4)))
    assert case.case_id == "d-python-quantizerpath_to_q.py_My-bits4"
