"""Tests for vq_cases.sweep (TOML sweeps -> cases) and vq_cases.methods (parameter checks, real codecs)."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.vq_cases.methods import METHODS, MethodError, check_params, get_method
from vq_benchmark.vq_cases.sweep import DEFAULT_SWEEP, Case, expand_sweep, read_sweep

pytestmark = pytest.mark.smoke

_HYP = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def ids(path: Path, dataset: str = "dummy") -> list[str]:
    return [c.case_id for c in expand_sweep(path, dataset)]


# ---------------------------------------------------------------- the shipped sweep


def test_default_sweep_ids():
    got = ids(DEFAULT_SWEEP)
    for expected in ("dummy-pq-M8-nbits8", "dummy-opq-M16-nbits8", "dummy-sq8", "dummy-sq4", "dummy-sqfp16"):
        assert expected in got
    assert len(got) == len(set(got))
    assert all(ID_RE.match(i) for i in got)
    assert all(i.startswith("dummy-") for i in got)


def test_default_sweep_is_deterministic_and_dataset_specific():
    first = expand_sweep(DEFAULT_SWEEP, "dummy")
    assert first == expand_sweep(DEFAULT_SWEEP, "dummy")
    other = expand_sweep(DEFAULT_SWEEP, "glove-50d")
    assert [c.case_id.removeprefix("glove-50d-") for c in other] == [c.case_id.removeprefix("dummy-") for c in first]
    assert {c.dataset for c in other} == {"glove-50d"}


def test_default_sweep_only_names_known_methods():
    for case in expand_sweep(DEFAULT_SWEEP, "dummy"):
        assert case.method in METHODS
        declared = [p.name for p in METHODS[case.method].params]
        keys = [k for k, _ in case.params]
        assert keys[: len(declared)] == declared  # an ivf's inner method parameters follow its own
        if case.method != "ivf":
            assert keys == declared


# ---------------------------------------------------------------- expansion


def test_grid_product_follows_file_order(tmp_path: Path):
    path = write(
        tmp_path,
        '[[sweep]]\nmethod = "sq8"\n\n'
        '[[sweep]]\nmethod = "pq"\nnbits = [6, 4]\nM = [16, 8]\n\n'
        '[[sweep]]\nmethod = "sqfp16"\n',
    )
    # itertools.product over the keys in file order (nbits outer), ids in the method's declared order
    assert ids(path) == [
        "dummy-sq8",
        "dummy-pq-M16-nbits6",
        "dummy-pq-M8-nbits6",
        "dummy-pq-M16-nbits4",
        "dummy-pq-M8-nbits4",
        "dummy-sqfp16",
    ]


def test_scalar_values_are_one_element_grids(tmp_path: Path):
    scalar = write(tmp_path, '[[sweep]]\nmethod = "opq"\nM = 8\nnbits = 6\n', "a.toml")
    listed = write(tmp_path, '[[sweep]]\nmethod = "opq"\nM = [8]\nnbits = [6]\n', "b.toml")
    assert expand_sweep(scalar, "d") == expand_sweep(listed, "d")
    assert ids(scalar) == ["dummy-opq-M8-nbits6"]


def test_defaults_are_filled(tmp_path: Path):
    path = write(tmp_path, '[[sweep]]\nmethod = "pq"\nM = [4, 8]\n')
    cases = expand_sweep(path, "dummy")
    assert [c.case_id for c in cases] == ["dummy-pq-M4-nbits8", "dummy-pq-M8-nbits8"]
    assert cases[0].params == (("M", 4), ("nbits", 8))
    assert cases[0].params_json == '{"M":4,"nbits":8}'
    assert cases[0].method == "pq" and cases[0].dataset == "dummy"


def test_method_without_params(tmp_path: Path):
    path = write(tmp_path, '[[sweep]]\nmethod = "sq4"\n')
    (case,) = expand_sweep(path, "my_data.v1-x")
    assert case.params == ()
    assert case.params_json == "{}"
    assert case.case_id == "my_data.v1-x-sq4"


@_HYP
@given(
    ms=st.lists(st.integers(1, 1024), min_size=1, max_size=4, unique=True),
    nbits=st.lists(st.integers(1, 16), min_size=1, max_size=4, unique=True),
    nbits_first=st.booleans(),
)
def test_grid_expansion_matches_product(tmp_path: Path, ms: list[int], nbits: list[int], nbits_first: bool):
    lines = [f"M = {ms}", f"nbits = {nbits}"]
    if nbits_first:
        lines.reverse()
    path = write(tmp_path, '[[sweep]]\nmethod = "pq"\n' + "\n".join(lines) + "\n", "gen.toml")
    cases = expand_sweep(path, "ds")
    expected = [(m, b) for b, m in itertools.product(nbits, ms)] if nbits_first else list(itertools.product(ms, nbits))
    assert [(dict(c.params)["M"], dict(c.params)["nbits"]) for c in cases] == expected
    assert [c.case_id for c in cases] == [f"ds-pq-M{m}-nbits{b}" for m, b in expected]
    assert cases == expand_sweep(path, "ds")


@_HYP
@given(
    dataset=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,6}(-[A-Za-z0-9_.]{1,4}){0,2}", fullmatch=True),
    values=st.lists(st.one_of(st.integers(), st.text(min_size=1)), max_size=3),
)
def test_case_ids_are_always_safe(dataset: str, values: list[object]):
    case = Case(dataset, "m", tuple((f"p{i}", v) for i, v in enumerate(values)))
    assert ID_RE.match(case.case_id), case.case_id
    assert case.case_id.startswith(f"{dataset}-m")


# ---------------------------------------------------------------- errors


ERRORS = {
    "unknown-method": (
        '[[sweep]]\nmethod = "lsh"\n',
        "unknown method 'lsh'; known: faiss, itq_lsh, ivf, lsq, opq, plsq, pq, pqfs, prq, python, rabitq, rabitqfs, "
        "rq, sq4, sq6, sq8, sqbf16, sqfp16",
    ),
    "unknown-param": (
        '[[sweep]]\nmethod = "pq"\nM = 8\nbits = 8\n',
        "has no parameter 'bits'; allowed: M, nbits",
    ),
    "param-on-paramless": ('[[sweep]]\nmethod = "sq8"\nM = 8\n', "has no parameter 'M'; allowed: none"),
    "string-M": ('[[sweep]]\nmethod = "pq"\nM = "8"\n', "pq M must be int, got '8'"),
    "float-M": ('[[sweep]]\nmethod = "pq"\nM = 8.0\n', "pq M must be int, got 8.0"),
    "bool-M": ('[[sweep]]\nmethod = "pq"\nM = true\n', "pq M must be int, got True"),
    "string-in-grid": ('[[sweep]]\nmethod = "opq"\nM = [8, "16"]\n', "opq M must be int, got '16'"),
    "M-zero": ('[[sweep]]\nmethod = "pq"\nM = 0\n', "pq M=0 outside [1, 1024]"),
    "M-too-big": ('[[sweep]]\nmethod = "pq"\nM = 1025\n', "pq M=1025 outside [1, 1024]"),
    "nbits-too-big": ('[[sweep]]\nmethod = "opq"\nM = 8\nnbits = 17\n', "opq nbits=17 outside [1, 16]"),
    "nbits-negative": ('[[sweep]]\nmethod = "pq"\nM = 8\nnbits = -1\n', "pq nbits=-1 outside [1, 16]"),
    "missing-M": ('[[sweep]]\nmethod = "pq"\nnbits = 8\n', "method 'pq' needs parameter 'M'"),
    "empty-list": ('[[sweep]]\nmethod = "pq"\nM = []\n', "parameter 'M' has an empty list"),
    "duplicate-in-grid": ('[[sweep]]\nmethod = "pq"\nM = [8, 8]\n', "case dummy-pq-M8-nbits8 appears twice"),
    "duplicate-entries": (
        '[[sweep]]\nmethod = "sq8"\n[[sweep]]\nmethod = "sq8"\n',
        "case dummy-sq8 appears twice",
    ),
    "duplicate-via-default": (
        '[[sweep]]\nmethod = "pq"\nM = 8\n[[sweep]]\nmethod = "pq"\nM = 8\nnbits = 8\n',
        "[[sweep]] #2: case dummy-pq-M8-nbits8 appears twice",
    ),
    "no-method": ("[[sweep]]\nM = 8\n", "needs a string 'method' key"),
    "method-not-string": ("[[sweep]]\nmethod = 3\n", "needs a string 'method' key"),
    "invalid-toml": ("[[sweep]\nmethod = \n", "not valid TOML"),
    "empty-file": ("", "expected one or more [[sweep]] tables"),
    "sweep-is-a-table": ('[sweep]\nmethod = "pq"\n', "expected one or more [[sweep]] tables"),
    "sweep-is-empty-array": ("sweep = []\n", "expected one or more [[sweep]] tables"),
    "extra-top-level": ('extra = 1\n[[sweep]]\nmethod = "sq8"\n', "expected one or more [[sweep]] tables"),
}


@pytest.mark.parametrize(("text", "fragment"), list(ERRORS.values()), ids=list(ERRORS))
def test_errors_are_one_line_method_errors_naming_the_file(tmp_path: Path, text: str, fragment: str):
    path = write(tmp_path, text)
    with pytest.raises(MethodError) as info:
        expand_sweep(path, "dummy")
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert f"sweep file {path}" in msg
    assert fragment in msg


def test_error_names_the_entry(tmp_path: Path):
    path = write(tmp_path, '[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "pq"\nM = "x"\n')
    with pytest.raises(MethodError, match=r"\[\[sweep\]\] #2"):
        expand_sweep(path, "dummy")


def test_missing_file(tmp_path: Path):
    path = tmp_path / "absent.toml"
    with pytest.raises(MethodError) as info:
        read_sweep(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and "not found" in msg and "--vq-sweep" in msg


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(MethodError) as info:
        read_sweep(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "\n" not in str(info.value)


def test_method_error_is_a_value_error():
    assert issubclass(MethodError, ValueError)


# ---------------------------------------------------------------- methods module directly


def test_get_method_and_check_params():
    pq = get_method("pq", "here")
    assert check_params(pq, {"M": 4}, "here") == {"M": 4, "nbits": 8}
    assert list(check_params(pq, {"nbits": 5, "M": 2}, "here")) == ["M", "nbits"]
    assert check_params(get_method("sqfp16", "here"), {}, "here") == {}
    with pytest.raises(MethodError, match=r"^here: unknown method 'PQ'"):
        get_method("PQ", "here")


@pytest.mark.parametrize("name", ["pq", "opq"])
def test_pq_min_train(name: str):
    method = METHODS[name]
    assert method.min_train is not None
    assert method.min_train({"M": 8, "nbits": 4}) == 39 * 16
    assert method.min_train({"M": 8, "nbits": 8}) == 39 * 256


def expected_code_bytes(method: str, dim: int, params: dict) -> int:
    if method in ("pq", "opq"):
        return math.ceil(params["M"] * params["nbits"] / 8)
    return {"sq8": dim, "sq4": math.ceil(dim / 2), "sqfp16": 2 * dim}[method]


@_HYP
@given(
    method=st.sampled_from(["pq", "opq"]),
    dim=st.integers(1, 80),
    m=st.integers(1, 24),
    nbits=st.integers(1, 12),
)
def test_pq_code_bytes_before_training(method: str, dim: int, m: int, nbits: int):
    params = {"M": m, "nbits": nbits}
    built = METHODS[method].build(params, dim, "l2")
    assert built.codec.code_bytes == expected_code_bytes(method, dim, params)


@_HYP
@given(
    method=st.sampled_from(["sq8", "sq4", "sqfp16"]),
    dim=st.integers(1, 300),
    metric=st.sampled_from(["l2", "ip"]),
)
def test_sq_code_bytes(method: str, dim: int, metric: str):
    assert METHODS[method].build({}, dim, metric).codec.code_bytes == expected_code_bytes(method, dim, {})


# ---------------------------------------------------------------- real codecs on real vectors

N_TRAIN = 3000


@pytest.fixture(autouse=True, scope="module")
def _single_thread_faiss():
    """One OpenMP thread: tiny problems gain nothing from more, and spinning threads on a loaded CI box can
    stretch a 0.1 s training to seconds."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module", params=[32, 50], ids=lambda d: f"d{d}")
def low_rank(request: pytest.FixtureRequest) -> np.ndarray:
    dim = request.param
    rng = np.random.default_rng(1234 + dim)
    x = rng.standard_normal((N_TRAIN, 6)) @ rng.standard_normal((6, dim))
    return (x + 0.01 * rng.standard_normal((N_TRAIN, dim))).astype(np.float32)


def _speed_up_opq(codec) -> None:
    """OPQ alternates 50 rotation/PQ rounds by default; a few are enough to check it works end to end."""
    index = codec.index
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter, vt.niter_pq, vt.niter_pq_0 = 3, 2, 4


@pytest.mark.parametrize("method", ["opq", "pq", "sq4", "sq8", "sqfp16"])  # every other method: tests/test_methods.py
def test_method_trains_encodes_decodes_and_searches(method: str, low_rank: np.ndarray):
    x = low_rank
    n, dim = x.shape
    spec = METHODS[method]
    params = check_params(spec, {"M": 8, "nbits": 4} if spec.params else {}, "test")
    built = spec.build(params, dim, "l2")
    codec = built.codec
    _speed_up_opq(codec)

    assert codec.code_bytes == expected_code_bytes(method, dim, params)
    codec.train(x)
    codes = codec.encode(x)
    assert codes.dtype == np.uint8
    assert codes.shape == (n, codec.code_bytes)

    recon = codec.decode(codes)
    assert recon.shape == (n, dim)
    rel_mse = float(((x - recon) ** 2).sum(axis=1).mean() / (x**2).sum(axis=1).mean())
    assert rel_mse < (0.5 if method in ("pq", "opq") else 0.05), rel_mse

    codec.add_codes(codes)
    assert codec.index.ntotal == n
    queries = x[:300]
    distances, labels = codec.search(queries, 5)
    assert labels.shape == distances.shape == (300, 5)
    assert labels.min() >= 0 and labels.max() < n
    assert np.all(np.diff(distances, axis=1) >= -1e-4)
    self_hit = float((labels[:, 0] == np.arange(300)).mean())
    if method == "sqfp16":
        assert self_hit >= 0.99, self_hit
    else:
        assert float((labels == np.arange(300)[:, None]).any(axis=1).mean()) >= 0.5


def test_pq_zero_pads_when_m_does_not_divide_d(low_rank: np.ndarray):
    dim = low_rank.shape[1]
    built = METHODS["pq"].build({"M": 8, "nbits": 4}, dim, "l2")
    if dim % 8 == 0:
        assert built.notes == ()
        assert built.codec.description == "PQ8x4np"
        return
    padded = math.ceil(dim / 8) * 8
    assert any(f"zero-padded to {padded}" in note for note in built.notes)
    assert built.codec.description == f"Pad{padded},PQ8x4np"
    assert isinstance(built.codec.index, faiss.IndexPreTransform)
    built.codec.train(low_rank)
    recon = built.codec.decode(built.codec.encode(low_rank[:10]))
    assert recon.shape == (10, dim)


def test_sqfp16_is_near_lossless(low_rank: np.ndarray):
    codec = METHODS["sqfp16"].build({}, low_rank.shape[1], "l2").codec
    codec.train(low_rank)
    recon = codec.decode(codec.encode(low_rank))
    # float16 keeps 11 significant bits; faiss may round one unit in the last place off numpy's result
    np.testing.assert_allclose(recon, low_rank, rtol=2**-9, atol=1e-4)
    assert not np.array_equal(recon, low_rank)  # it really went through a 16-bit code


# ---------------------------------------------------------------- the case matrix: datasets, search, seeds


def test_several_datasets_expand_dataset_by_dataset(tmp_path: Path):
    path = write(tmp_path, '[[sweep]]\nmethod = "sq8"\n\n[[sweep]]\nmethod = "pq"\nM = 4\ndatasets = ["b"]\n')
    assert [c.case_id for c in expand_sweep(path, ["a", "b"])] == ["a-sq8", "b-sq8", "b-pq-M4-nbits8"]
    assert [c.case_id for c in expand_sweep(path, "a")] == ["a-sq8"]  # the entry's list narrows, never extends


def test_search_params_follow_training_params_and_seeds_come_last(tmp_path: Path):
    path = write(
        tmp_path, '[[sweep]]\nmethod = "ivf"\nnlist = [8, 16]\ninner = "sq8"\nsearch.nprobe = [4, 1]\nseeds = [3]\n'
    )
    cases = expand_sweep(path, "d")
    assert [c.case_id for c in cases] == [
        "d-ivf-nlist8-innersq8-nprobe4-seed3",
        "d-ivf-nlist8-innersq8-nprobe1-seed3",
        "d-ivf-nlist16-innersq8-nprobe4-seed3",
        "d-ivf-nlist16-innersq8-nprobe1-seed3",
    ]
    assert {c.training_id for c in cases} == {"d-ivf-nlist8-innersq8-seed3", "d-ivf-nlist16-innersq8-seed3"}
    assert cases[0].params_json == '{"nlist":8,"inner":"sq8"}' and cases[0].search_json == '{"nprobe":4}'
    assert cases[0].seed == 3 and cases[0].training_seed(0) == 3


def test_repeats_seed_every_entry_without_seeds(tmp_path: Path):
    path = write(tmp_path, '[[sweep]]\nmethod = "pq"\nM = 4\n\n[[sweep]]\nmethod = "sqbf16"\n')
    assert [c.case_id for c in expand_sweep(path, "d", repeats=2, base_seed=7)] == [
        "d-pq-M4-nbits8-seed7",
        "d-pq-M4-nbits8-seed8",
        "d-sqbf16",  # nothing random in its training
    ]
    assert [c.seed for c in expand_sweep(path, "d")] == [None, None]
