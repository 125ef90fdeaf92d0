"""Tests for plugin.settings: precedence, path resolution, integer checks, pyproject lookup and `describe`."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vq_benchmark.plugin.settings import (
    BY_NAME,
    SETTINGS,
    Setting,
    SettingError,
    describe,
    read_pyproject_ini,
    resolve_settings,
)

pytestmark = pytest.mark.smoke

_HYP = settings(max_examples=60, deadline=None, database=None)

CWD = Path("/srv/project")
INI_DIR = Path("/etc/project")
LEVELS = ("option", "env", "ini")
INT_SETTINGS = [s for s in SETTINGS if s.kind == "int"]
PATH_SETTINGS = [s for s in SETTINGS if s.kind == "path"]
MULTI_ENV = [s for s in SETTINGS if len(s.env) > 1]


def _ids(s: Setting) -> str:
    return s.name


def raw_value(s: Setting, level: str) -> str:
    """A valid, level-specific raw value for a setting."""
    if s.kind == "int":
        base = s.minimum or 0
        return str(base + 10 + LEVELS.index(level))
    if s.kind == "path":
        return f"from-{level}/{s.name}"
    return f"{s.name}-from-{level}"


def expected_value(s: Setting, raw: str, base: Path) -> object:
    if s.kind == "int":
        return int(raw)
    if s.kind == "path":
        return base / raw
    return raw


def resolve(options=None, environ=None, ini=None, *, cwd: Path = CWD, ini_dir: Path | None = INI_DIR):
    return resolve_settings(options or {}, environ or {}, ini or {}, cwd=cwd, ini_dir=ini_dir)


# ---------------------------------------------------------------- declarations


def test_settings_table_is_consistent():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert set(BY_NAME) == set(names)
    for s in SETTINGS:
        assert s.option == f"--vq-{s.name}"
        assert s.dest == s.ini == "vq_" + s.name.replace("-", "_")
        assert s.env, s.name
        if s.kind == "int":
            assert s.default is not None and int(s.default) >= (s.minimum or 0)


def test_secondary_env_names_are_declared_in_priority_order():
    assert BY_NAME["codebooks-dir"].env == ("CODEBOOKS_DIR", "VQ_CODEBOOKS_DIR")
    assert BY_NAME["db-path"].env == ("DB_PATH", "VQ_DB_PATH")


# ---------------------------------------------------------------- precedence


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
@pytest.mark.parametrize(
    "present",
    [c for n in range(4) for c in itertools.combinations(LEVELS, n)],
    ids=lambda c: "+".join(c) or "none",
)
def test_precedence_option_env_ini_default(setting: Setting, present: tuple[str, ...]):
    options = {setting.name: raw_value(setting, "option")} if "option" in present else {}
    environ = {setting.env[0]: raw_value(setting, "env")} if "env" in present else {}
    ini = {setting.name: raw_value(setting, "ini")} if "ini" in present else {}

    r = resolve(options, environ, ini)[setting.name]

    if "option" in present:
        assert r.source == f"option {setting.option}"
        assert r.value == expected_value(setting, raw_value(setting, "option"), CWD)
    elif "env" in present:
        assert r.source == f"env {setting.env[0]}"
        assert r.value == expected_value(setting, raw_value(setting, "env"), CWD)
    elif "ini" in present:
        assert r.source == f"ini {setting.ini}"
        assert r.value == expected_value(setting, raw_value(setting, "ini"), INI_DIR)
    else:
        assert r.source == "default"
        assert r.value == (None if setting.default is None else expected_value(setting, setting.default, CWD))


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_every_env_name_is_honoured(setting: Setting):
    for var in setting.env:
        r = resolve(environ={var: raw_value(setting, "env")})[setting.name]
        assert r.source == f"env {var}"
        assert r.value == expected_value(setting, raw_value(setting, "env"), CWD)


@pytest.mark.parametrize("setting", MULTI_ENV, ids=_ids)
def test_first_listed_env_var_wins_over_second(setting: Setting):
    first, second = setting.env
    environ = {second: "second/path", first: "first/path"}
    r = resolve(environ=environ)[setting.name]
    assert (r.source, r.value) == (f"env {first}", CWD / "first/path")
    # the second is used when the first is unset or empty, and still beats ini
    for env in ({second: "second/path"}, {first: "", second: "second/path"}):
        r = resolve(environ=env, ini={setting.name: "ini/path"})[setting.name]
        assert (r.source, r.value) == (f"env {second}", CWD / "second/path")


def test_named_secondary_env_vars():
    r = resolve(environ={"VQ_CODEBOOKS_DIR": "/cb2", "CODEBOOKS_DIR": "/cb1", "VQ_DB_PATH": "/x/two.db"})
    assert r["codebooks-dir"].value == Path("/cb1")
    assert r["codebooks-dir"].source == "env CODEBOOKS_DIR"
    assert r["db-path"].value == Path("/x/two.db")
    assert r["db-path"].source == "env VQ_DB_PATH"


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_empty_strings_count_as_unset(setting: Setting):
    empty_env = dict.fromkeys(setting.env, "")
    r = resolve({setting.name: ""}, empty_env, {setting.name: raw_value(setting, "ini")})[setting.name]
    assert r.source == f"ini {setting.ini}"
    r = resolve({setting.name: ""}, empty_env, {setting.name: ""})[setting.name]
    assert r.source == "default"
    r = resolve({setting.name: None}, {}, {})[setting.name]
    assert r.source == "default"


def test_one_setting_does_not_leak_into_others():
    r = resolve({"seed": "7"}, {"VQ_DATASET": "dummy"}, {"data-dir": "d"})
    assert {name for name, v in r.items() if v.source != "default"} == {"seed", "dataset", "data-dir"}
    assert set(r) == set(BY_NAME)


def test_lower_precedence_values_are_not_validated_when_shadowed():
    r = resolve({"seed": "3"}, {"VQ_SEED": "not-a-number"}, {"seed": "-5"})
    assert r["seed"].value == 3


def test_defaults():
    r = resolve()
    assert r["dataset"].value is None
    assert r["run-id"].value is None
    assert r["seed"].value == 0
    assert r["train-size"].value == 100_000
    assert r["threads"].value == 0
    assert r["data-dir"].value == CWD / "data"
    assert r["db-path"].value == CWD / "results/benchmark_runs.db"
    assert all(v.source == "default" for v in r.values())


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("setting", PATH_SETTINGS, ids=_ids)
def test_relative_paths_resolve_against_cwd_or_ini_dir(setting: Setting, tmp_path: Path):
    cwd, ini_dir = tmp_path / "cwd", tmp_path / "cfg"
    rel = "sub/dir/thing"
    opt = resolve({setting.name: rel}, cwd=cwd, ini_dir=ini_dir)[setting.name].value
    env = resolve(environ={setting.env[-1]: rel}, cwd=cwd, ini_dir=ini_dir)[setting.name].value
    ini = resolve(ini={setting.name: rel}, cwd=cwd, ini_dir=ini_dir)[setting.name].value
    assert opt == env == cwd / rel
    assert ini == ini_dir / rel
    # without an ini directory, ini paths fall back to cwd
    assert resolve(ini={setting.name: rel}, cwd=cwd, ini_dir=None)[setting.name].value == cwd / rel


@pytest.mark.parametrize("setting", PATH_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
def test_absolute_paths_stay_absolute(setting: Setting, level: str, tmp_path: Path):
    absolute = str(tmp_path / "abs" / "file")
    kwargs = {
        "option": {"options": {setting.name: absolute}},
        "env": {"environ": {setting.env[0]: absolute}},
        "ini": {"ini": {setting.name: absolute}},
    }[level]
    assert resolve(**kwargs)[setting.name].value == Path(absolute)


@pytest.mark.parametrize("setting", PATH_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
def test_tilde_expands_to_home(setting: Setting, level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    kwargs = {
        "option": {"options": {setting.name: "~/x/y"}},
        "env": {"environ": {setting.env[0]: "~/x/y"}},
        "ini": {"ini": {setting.name: "~/x/y"}},
    }[level]
    value = resolve(**kwargs)[setting.name].value
    assert value == home / "x" / "y"
    assert value.is_absolute()


def test_str_settings_are_not_path_resolved():
    r = resolve({"dataset": "sub/name", "run-id": "~abc"})
    assert r["dataset"].value == "sub/name"
    assert r["run-id"].value == "~abc"


@_HYP
@given(value=st.text(min_size=1).filter(lambda v: "\x00" not in v))
def test_str_settings_pass_through_unchanged(value: str):
    r = resolve({"dataset": value}, {"VQ_RUN_ID": value})
    assert r["dataset"].value == value
    assert r["run-id"].value == value


# ---------------------------------------------------------------- integers


def _int_kwargs(setting: Setting, level: str, raw: str) -> tuple[dict, str]:
    if level == "option":
        return {"options": {setting.name: raw}}, f"option {setting.option}"
    if level == "env":
        return {"environ": {setting.env[0]: raw}}, f"env {setting.env[0]}"
    return {"ini": {setting.name: raw}}, f"ini {setting.ini}"


@pytest.mark.parametrize("setting", INT_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("raw", ["abc", "1.5", "0x10", "1e3", "12abc", " ", "--1"])
def test_int_settings_reject_non_integers(setting: Setting, level: str, raw: str):
    kwargs, source = _int_kwargs(setting, level, raw)
    with pytest.raises(SettingError) as info:
        resolve(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert setting.option in msg
    assert source in msg
    assert "integer" in msg


@pytest.mark.parametrize("setting", INT_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
def test_int_settings_enforce_minimum(setting: Setting, level: str):
    assert setting.minimum is not None
    below = str(setting.minimum - 1)
    kwargs, source = _int_kwargs(setting, level, below)
    with pytest.raises(SettingError) as info:
        resolve(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert setting.option in msg and source in msg
    assert f">= {setting.minimum}" in msg
    # the minimum itself is accepted
    kwargs, source = _int_kwargs(setting, level, str(setting.minimum))
    r = resolve(**kwargs)[setting.name]
    assert (r.value, r.source) == (setting.minimum, source)


def test_seed_error_message_example():
    with pytest.raises(SettingError, match=r"^--vq-seed: .*\(from env VQ_SEED\)$"):
        resolve(environ={"VQ_SEED": "many"})
    with pytest.raises(SettingError, match=r"^--vq-train-size: expected >= 1, got 0 \(from option --vq-train-size\)$"):
        resolve({"train-size": "0"})


def test_setting_error_is_a_value_error():
    assert issubclass(SettingError, ValueError)


@_HYP
@given(setting=st.sampled_from(INT_SETTINGS), offset=st.integers(min_value=0, max_value=10**12))
def test_valid_ints_round_trip(setting: Setting, offset: int):
    value = (setting.minimum or 0) + offset
    r = resolve(environ={setting.env[0]: str(value)})[setting.name]
    assert r.value == value
    assert type(r.value) is int


@_HYP
@given(setting=st.sampled_from(INT_SETTINGS), below=st.integers(min_value=1, max_value=10**12))
def test_ints_below_minimum_always_rejected(setting: Setting, below: int):
    with pytest.raises(SettingError, match=setting.option):
        resolve({setting.name: str((setting.minimum or 0) - below)})


@_HYP
@given(raw=st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Nd"]), min_size=1))
def test_digitless_strings_are_never_integers(raw: str):
    with pytest.raises(SettingError) as info:
        resolve({"threads": raw})
    assert "\n" not in str(info.value)
    assert "--vq-threads" in str(info.value)


# ---------------------------------------------------------------- pyproject


def _no_pyproject_above(path: Path) -> bool:
    return not any((d / "pyproject.toml").exists() for d in (path, *path.parents))


def test_read_pyproject_ini_finds_parent(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n"
        "[tool.pytest.ini_options]\n"
        "testpaths = ['tests']\n"
        "vq_seed = 5\n"
        "vq_data_dir = 'data'\n"
        "vq_codebooks_dir = '/abs/cb'\n"
    )
    child = tmp_path / "a" / "b"
    child.mkdir(parents=True)
    ini, ini_dir = read_pyproject_ini(child)
    assert ini == {"seed": "5", "data-dir": "data", "codebooks-dir": "/abs/cb"}
    assert ini_dir == tmp_path

    resolved = resolve_settings({}, {}, ini, cwd=child, ini_dir=ini_dir)
    assert resolved["data-dir"].value == tmp_path / "data"
    assert resolved["data-dir"].source == "ini vq_data_dir"
    assert resolved["codebooks-dir"].value == Path("/abs/cb")
    assert resolved["seed"].value == 5


def test_read_pyproject_ini_prefers_nearest(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\nvq_seed = 1\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[tool.pytest.ini_options]\nvq_seed = 2\n")
    assert read_pyproject_ini(inner) == ({"seed": "2"}, inner)
    assert read_pyproject_ini(tmp_path) == ({"seed": "1"}, tmp_path)


def test_read_pyproject_ini_skips_files_without_pytest_section(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\nvq_threads = 4\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[project]\nname = 'no-pytest-here'\n")
    assert read_pyproject_ini(inner) == ({"threads": "4"}, tmp_path)


def test_read_pyproject_ini_nothing_found(tmp_path: Path):
    if not _no_pyproject_above(tmp_path):
        pytest.skip("a pyproject.toml exists above the temporary directory")
    assert read_pyproject_ini(tmp_path) == ({}, None)


def test_read_pyproject_ini_invalid_toml(tmp_path: Path):
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.pytest.ini_options\nvq_seed = \n")
    child = tmp_path / "c"
    child.mkdir()
    with pytest.raises(SettingError) as info:
        read_pyproject_ini(child)
    msg = str(info.value)
    assert str(bad) in msg
    assert "TOML" in msg
    assert "\n" not in msg


# ---------------------------------------------------------------- describe


def test_describe_lists_every_setting_with_source():
    resolved = resolve({"seed": "4"}, {"DB_PATH": "/db/x.db"}, {"data-dir": "d"})
    lines = describe(resolved)
    assert len(lines) == len(SETTINGS)
    for line, s in zip(lines, SETTINGS, strict=True):
        assert line.split("=")[0].strip() == s.name
        assert line.endswith(f"[{resolved[s.name].source}]")
    by_name = dict(zip((s.name for s in SETTINGS), lines, strict=True))
    assert "= 4  [option --vq-seed]" in by_name["seed"]
    assert "= /db/x.db  [env DB_PATH]" in by_name["db-path"]
    assert f"= {INI_DIR / 'd'}  [ini vq_data_dir]" in by_name["data-dir"]
    assert "= (unset)  [default]" in by_name["dataset"]
    # values line up in one column
    assert len({line.index("=") for line in lines}) == 1


def test_describe_uses_formatter_for_set_values_only():
    lines = describe(resolve({"seed": "9"}), fmt=lambda v: f"<{v}>")
    by_name = dict(zip((s.name for s in SETTINGS), lines, strict=True))
    assert "<9>" in by_name["seed"]
    assert "(unset)" in by_name["run-id"] and "<" not in by_name["run-id"]
