"""Tests for plugin.settings: precedence, conversion and checks, output paths, pyproject lookup and `describe`."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vq_benchmark.plugin.output_paths as output_paths_module
import vq_benchmark.plugin.settings as settings_module
from vq_benchmark.plugin.output_paths import check_output_paths
from vq_benchmark.plugin.settings import (
    BY_NAME,
    SETTINGS,
    Setting,
    SettingError,
    Settings,
    available_cores,
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
OUTPUT_DIRS = ["run-dir", "codebooks-dir", "cache-dir"]
NO_USER = "~nosuchuser-vq-bench/x"
INT64_MAX = 2**63 - 1


def _ids(s: Setting) -> str:
    return s.name


def raw_value(s: Setting, level: str) -> str:
    """A valid, level-specific raw value for a setting."""
    if s.kind == "int":
        base = s.minimum or 0
        return str(base + 10 + LEVELS.index(level))
    if s.kind == "path":
        return f"from-{level}/{s.name}"
    if s.kind == "flag":
        return {"option": "true", "env": "0", "ini": "On"}[level]
    if s.kind == "choice":
        return s.choices[LEVELS.index(level) % len(s.choices)]
    return f"{s.name}-from-{level}"


def expected_value(s: Setting, raw: str, base: Path) -> object:
    if s.kind == "int":
        return int(raw)
    if s.kind == "path":
        return base / raw
    if s.kind == "flag":
        return raw.lower() in ("true", "1", "on", "yes")
    return raw


def _is_set(name: str, options: dict, environ: dict, ini: dict) -> bool:
    return any(
        v not in (None, "") for v in (options.get(name), ini.get(name), *(environ.get(e) for e in BY_NAME[name].env))
    )


def _shard_companion(options: dict, environ: dict, ini: dict) -> dict:
    """A shard id needs a shard count and vice versa: tests of one of them get the other at the ini level."""
    ini = dict(ini)
    if _is_set("shard-id", options, environ, ini) and not _is_set("num-shards", options, environ, ini):
        ini["num-shards"] = str(BY_NAME["num-shards"].maximum)
    if _is_set("num-shards", options, environ, ini) and not _is_set("shard-id", options, environ, ini):
        ini["shard-id"] = "0"
    return ini


def resolve(options=None, environ=None, ini=None, *, cwd: Path = CWD, ini_dir: Path | None = INI_DIR) -> Settings:
    options, environ = options or {}, environ or {}
    ini = _shard_companion(options, environ, ini or {})
    return resolve_settings(options, environ, ini, cwd=cwd, ini_dir=ini_dir)


def at_level(setting: Setting, level: str, raw: str) -> tuple[dict, str]:
    """resolve() keyword arguments that set `raw` at one level, and the source that level reports."""
    if level == "option":
        return {"options": {setting.name: raw}}, f"option {setting.option}"
    if level == "env":
        return {"environ": {setting.env[0]: raw}}, f"env {setting.env[0]}"
    return {"ini": {setting.name: raw}}, f"ini {setting.ini}"


def one_line_error(info: pytest.ExceptionInfo[SettingError], setting: Setting, source: str) -> str:
    """The message, after checking the shape every SettingError must have."""
    msg = str(info.value)
    assert type(info.value) is SettingError
    assert "\n" not in msg and "\r" not in msg
    assert msg.startswith(f"{setting.option}: ")
    assert msg.endswith(f"(from {source})")
    return msg


# ---------------------------------------------------------------- declarations


def test_settings_table_is_consistent():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert set(BY_NAME) == set(names)
    for s in SETTINGS:
        assert s.option == f"--vq-{s.name}"
        assert s.dest == s.ini == "vq_" + s.name.replace("-", "_")
        assert s.env and s.env[0] == "VQ_" + s.name.replace("-", "_").upper(), s.name
        if s.kind == "int":
            assert s.minimum is not None and s.maximum is not None and s.maximum <= INT64_MAX
            assert s.default is None or s.minimum <= int(s.default) <= s.maximum


def test_settings_fields_are_exactly_the_table():
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert fields == [s.name.replace("-", "_") for s in SETTINGS] + ["sources", "warnings"]


def test_vq_env_names_come_before_legacy_names():
    assert BY_NAME["codebooks-dir"].env == ("VQ_CODEBOOKS_DIR", "CODEBOOKS_DIR")
    assert BY_NAME["db-path"].env == ("VQ_DB_PATH", "DB_PATH")
    assert {s.name for s in MULTI_ENV} == {"codebooks-dir", "db-path"}


def test_settings_are_frozen_and_sources_read_only():
    s = resolve({"seed": "3"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.sources["seed"] = "default"  # type: ignore[index]
    assert s.seed == 3 and s.sources["seed"] == "option --vq-seed"


def test_value_reads_by_table_name():
    s = resolve({"db-path": "/db/x.db", "seed": "5", "run-id": "r1"})
    for setting in SETTINGS:
        assert s.value(setting.name) is getattr(s, setting.name.replace("-", "_"))
    assert s.value("db-path") == Path("/db/x.db")
    assert s.value("seed") == 5
    with pytest.raises(KeyError):
        s.value("db_path")
    with pytest.raises(KeyError):
        s.value("sources")


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

    s = resolve(options, environ, ini)
    value, source = s.value(setting.name), s.sources[setting.name]

    if "option" in present:
        assert source == f"option {setting.option}"
        assert value == expected_value(setting, raw_value(setting, "option"), CWD)
    elif "env" in present:
        assert source == f"env {setting.env[0]}"
        assert value == expected_value(setting, raw_value(setting, "env"), CWD)
    elif "ini" in present:
        assert source == f"ini {setting.ini}"
        assert value == expected_value(setting, raw_value(setting, "ini"), INI_DIR)
    else:
        assert source == "default"
        assert value == (None if setting.default is None else expected_value(setting, setting.default, CWD))


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_every_env_name_is_honoured(setting: Setting):
    for var in setting.env:
        s = resolve(environ={var: raw_value(setting, "env")})
        assert s.sources[setting.name] == f"env {var}"
        assert s.value(setting.name) == expected_value(setting, raw_value(setting, "env"), CWD)


@pytest.mark.parametrize("setting", MULTI_ENV, ids=_ids)
def test_vq_env_name_overrides_legacy_name(setting: Setting):
    vq, legacy = setting.env
    s = resolve(environ={legacy: "legacy/path", vq: "vq/path"})
    assert (s.value(setting.name), s.sources[setting.name]) == (CWD / "vq/path", f"env {vq} (overrides {legacy})")
    # the legacy name is used when the VQ_ name is unset or empty, and still beats ini
    for env in ({legacy: "legacy/path"}, {vq: "", legacy: "legacy/path"}):
        s = resolve(environ=env, ini={setting.name: "ini/path"})
        assert (s.value(setting.name), s.sources[setting.name]) == (CWD / "legacy/path", f"env {legacy}")
    # an empty legacy name overrides nothing; an option beats both names
    assert resolve(environ={vq: "vq/path", legacy: ""}).sources[setting.name] == f"env {vq}"
    s = resolve({setting.name: "opt/path"}, {vq: "vq/path", legacy: "legacy/path"})
    assert (s.value(setting.name), s.sources[setting.name]) == (CWD / "opt/path", f"option {setting.option}")


def test_named_legacy_env_vars():
    s = resolve(environ={"VQ_CODEBOOKS_DIR": "/cb2", "CODEBOOKS_DIR": "/cb1", "DB_PATH": "/x/one.db"})
    assert s.codebooks_dir == Path("/cb2")
    assert s.sources["codebooks-dir"] == "env VQ_CODEBOOKS_DIR (overrides CODEBOOKS_DIR)"
    assert s.db_path == Path("/x/one.db")
    assert s.sources["db-path"] == "env DB_PATH"
    s = resolve(environ={"DB_PATH": "/x/one.db", "VQ_DB_PATH": "/x/two.db"})
    assert (s.db_path, s.sources["db-path"]) == (Path("/x/two.db"), "env VQ_DB_PATH (overrides DB_PATH)")


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_empty_strings_count_as_unset(setting: Setting):
    empty_env = dict.fromkeys(setting.env, "")
    s = resolve({setting.name: ""}, empty_env, {setting.name: raw_value(setting, "ini")})
    assert s.sources[setting.name] == f"ini {setting.ini}"
    assert resolve({setting.name: ""}, empty_env, {setting.name: ""}).sources[setting.name] == "default"
    assert resolve({setting.name: None}, {}, {}).sources[setting.name] == "default"


def test_one_setting_does_not_leak_into_others():
    s = resolve({"seed": "7"}, {"VQ_DATASET": "dummy"}, {"data-dir": "d"})
    assert {name for name, source in s.sources.items() if source != "default"} == {"seed", "dataset", "data-dir"}
    assert set(s.sources) == set(BY_NAME)


def test_lower_precedence_values_are_not_validated_when_shadowed():
    s = resolve(
        {"seed": "3", "run-id": "ok", "threads": "1"},
        {"VQ_SEED": "not-a-number", "VQ_RUN_ID": "../../etc", "VQ_DB_PATH": "/db/x.db", "DB_PATH": NO_USER},
        {"seed": "-5", "db-path": NO_USER, "threads": "1e9"},
    )
    assert (s.seed, s.run_id, s.threads, s.db_path) == (3, "ok", 1, Path("/db/x.db"))


def test_defaults():
    s = resolve()
    assert s.dataset is None and s.run_id is None and s.sweep is None and s.datasets_file is None
    assert (s.seed, s.train_size, s.threads) == (0, 100_000, 0)
    assert s.data_dir == CWD / "data"
    assert s.cache_dir == CWD / ".vq-cache"
    assert s.codebooks_dir == CWD / "codebooks"
    assert s.db_path == CWD / "results/benchmark_runs.db"
    assert s.run_dir == CWD / "results/runs"
    assert s.warnings == ()
    assert set(s.sources.values()) == {"default"}


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("setting", PATH_SETTINGS, ids=_ids)
def test_relative_paths_resolve_against_cwd_or_ini_dir(setting: Setting, tmp_path: Path):
    cwd, ini_dir = tmp_path / "cwd", tmp_path / "cfg"
    rel = "sub/dir/thing"
    opt = resolve({setting.name: rel}, cwd=cwd, ini_dir=ini_dir).value(setting.name)
    env = resolve(environ={setting.env[-1]: rel}, cwd=cwd, ini_dir=ini_dir).value(setting.name)
    ini = resolve(ini={setting.name: rel}, cwd=cwd, ini_dir=ini_dir).value(setting.name)
    assert opt == env == cwd / rel
    assert ini == ini_dir / rel
    # without an ini directory, ini paths fall back to cwd
    assert resolve(ini={setting.name: rel}, cwd=cwd, ini_dir=None).value(setting.name) == cwd / rel


@pytest.mark.parametrize("setting", PATH_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
def test_absolute_paths_stay_absolute(setting: Setting, level: str, tmp_path: Path):
    absolute = str(tmp_path / "abs" / "file")
    kwargs, _ = at_level(setting, level, absolute)
    assert resolve(**kwargs).value(setting.name) == Path(absolute)


@pytest.mark.parametrize("setting", PATH_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
def test_tilde_expands_to_home(setting: Setting, level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    kwargs, _ = at_level(setting, level, "~/x/y")
    value = resolve(**kwargs).value(setting.name)
    assert value == home / "x" / "y"
    assert value.is_absolute()


@pytest.mark.parametrize("setting", PATH_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
def test_unknown_user_in_tilde_is_a_setting_error(setting: Setting, level: str):
    kwargs, source = at_level(setting, level, NO_USER)
    with pytest.raises(SettingError) as info:
        resolve(**kwargs)
    msg = one_line_error(info, setting, source)
    assert f"cannot expand {NO_USER!r}: no such user" in msg


def test_unknown_user_message_example():
    with pytest.raises(SettingError) as info:
        resolve(environ={"VQ_DB_PATH": "~nosuchuser/x"})
    assert str(info.value) == "--vq-db-path: cannot expand '~nosuchuser/x': no such user (from env VQ_DB_PATH)"


def test_nul_byte_in_a_path_is_a_setting_error():
    with pytest.raises(SettingError) as info:
        resolve(ini={"run-dir": "a\x00b"})
    assert "NUL" in one_line_error(info, BY_NAME["run-dir"], "ini vq_run_dir")


def test_dataset_is_not_path_resolved():
    assert resolve({"dataset": "sub/name"}).dataset == "sub/name"


@_HYP
@given(value=st.text(min_size=1))
def test_dataset_passes_through_unchanged(value: str):
    assert resolve({"dataset": value}).dataset == value


@_HYP
@given(setting=st.sampled_from(SETTINGS), level=st.sampled_from(LEVELS), raw=st.text())
def test_any_raw_value_resolves_or_fails_with_one_line(setting: Setting, level: str, raw: str):
    """Whatever a user types, the result is a value or a one-line SettingError, never another exception."""
    kwargs, source = at_level(setting, level, raw)
    try:
        resolve(**kwargs)
    except SettingError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg.startswith(f"{setting.option}: ") and msg.endswith(f"(from {source})")
        assert len(msg) < 600


# ---------------------------------------------------------------- integers


@pytest.mark.parametrize("setting", INT_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("raw", ["abc", "1.5", "0x10", "1e3", "12abc", " ", "--1", "9" * 5000])
def test_int_settings_reject_non_integers(setting: Setting, level: str, raw: str):
    kwargs, source = at_level(setting, level, raw)
    with pytest.raises(SettingError) as info:
        resolve(**kwargs)
    msg = one_line_error(info, setting, source)
    assert "integer" in msg
    assert len(msg) < 400


@pytest.mark.parametrize("setting", INT_SETTINGS, ids=_ids)
@pytest.mark.parametrize("level", LEVELS)
def test_int_settings_enforce_bounds(setting: Setting, level: str):
    assert setting.minimum is not None and setting.maximum is not None
    for bad, expected in (
        (setting.minimum - 1, f">= {setting.minimum}"),
        (setting.maximum + 1, f"<= {setting.maximum}"),
    ):
        kwargs, source = at_level(setting, level, str(bad))
        with pytest.raises(SettingError) as info:
            resolve(**kwargs)
        assert f"expected {expected}, got {bad}" in one_line_error(info, setting, source)
    for good in (setting.minimum, setting.maximum):
        kwargs, source = at_level(setting, level, str(good))
        s = resolve(**kwargs)
        assert (s.value(setting.name), s.sources[setting.name]) == (good, source)


def test_int_bounds_fit_numpy_seeds_and_sqlite():
    assert (BY_NAME["seed"].minimum, BY_NAME["seed"].maximum) == (0, INT64_MAX)
    assert (BY_NAME["train-size"].minimum, BY_NAME["train-size"].maximum) == (1, INT64_MAX)
    assert BY_NAME["threads"].minimum == 0 and BY_NAME["threads"].maximum <= INT64_MAX
    assert resolve({"seed": str(INT64_MAX)}).seed == INT64_MAX
    with pytest.raises(SettingError, match=r"^--vq-seed: expected <= 9223372036854775807, got 9223372036854775808 "):
        resolve({"seed": str(2**63)})


def test_int_error_message_examples():
    with pytest.raises(SettingError, match=r"^--vq-seed: expected an integer, got 'many' \(from env VQ_SEED\)$"):
        resolve(environ={"VQ_SEED": "many"})
    with pytest.raises(SettingError, match=r"^--vq-train-size: expected >= 1, got 0 \(from option --vq-train-size\)$"):
        resolve({"train-size": "0"})


def test_setting_error_is_a_value_error():
    assert issubclass(SettingError, ValueError)


@_HYP
@given(data=st.data(), setting=st.sampled_from(INT_SETTINGS), level=st.sampled_from(LEVELS))
def test_ints_in_range_round_trip(data: st.DataObject, setting: Setting, level: str):
    value = data.draw(st.integers(min_value=setting.minimum, max_value=setting.maximum))
    kwargs, source = at_level(setting, level, str(value))
    s = resolve(**kwargs)
    assert s.value(setting.name) == value
    assert type(s.value(setting.name)) is int
    assert s.sources[setting.name] == source


@_HYP
@given(data=st.data(), setting=st.sampled_from(INT_SETTINGS))
def test_ints_out_of_range_always_rejected(data: st.DataObject, setting: Setting):
    value = data.draw(
        st.integers(max_value=setting.minimum - 1) | st.integers(min_value=setting.maximum + 1), label="value"
    )
    with pytest.raises(SettingError) as info:
        resolve({setting.name: str(value)})
    one_line_error(info, setting, f"option {setting.option}")


@_HYP
@given(raw=st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Nd"]), min_size=1))
def test_digitless_strings_are_never_integers(raw: str):
    with pytest.raises(SettingError) as info:
        resolve({"threads": raw})
    one_line_error(info, BY_NAME["threads"], "option --vq-threads")


# ---------------------------------------------------------------- run id


@pytest.mark.parametrize(
    "raw",
    [
        "../../x",
        "/abs",
        "a/b",
        "a\\b",
        "   ",
        " x",
        "x ",
        "a..b",
        "..",
        "x/..",
        ".hidden",
        "-x",
        "_x",
        "a b",
        "a" * 129,
        "a\nb",
        "caf\u00e9",
        "~abc",
        "a:b",
    ],
)
@pytest.mark.parametrize("level", LEVELS)
def test_run_id_must_be_a_name(raw: str, level: str):
    setting = BY_NAME["run-id"]
    kwargs, source = at_level(setting, level, raw)
    with pytest.raises(SettingError) as info:
        resolve(**kwargs)
    assert "not a path" in one_line_error(info, setting, source)


@pytest.mark.parametrize("raw", ["a", "1", "20240101T000000Z-abc123", "A.b_c-d", "v1.2", "a" * 128])
def test_run_id_accepts_names(raw: str):
    s = resolve(environ={"VQ_RUN_ID": raw})
    assert (s.run_id, s.sources["run-id"]) == (raw, "env VQ_RUN_ID")


@_HYP
@given(left=st.text(max_size=20), sep=st.sampled_from(["/", ".."]), right=st.text(max_size=20))
def test_run_id_with_slash_or_dotdot_is_rejected(left: str, sep: str, right: str):
    with pytest.raises(SettingError, match=r"^--vq-run-id: "):
        resolve({"run-id": left + sep + right})


@_HYP
@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True).filter(lambda n: ".." not in n))
def test_run_id_valid_names_are_accepted(name: str):
    assert resolve({"run-id": name}).run_id == name


# ---------------------------------------------------------------- threads and cores


def test_threads_above_cores_is_a_warning(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(settings_module, "available_cores", lambda: 2)
    s = resolve({"threads": "64"})
    assert s.threads == 64
    assert s.warnings == ("--vq-threads 64 exceeds the 2 available cores: faiss will oversubscribe them",)
    assert resolve({"threads": "2"}).warnings == ()
    assert resolve({"threads": "0"}).warnings == ()


def test_threads_warning_uses_the_real_core_count():
    cores = available_cores()
    assert resolve({"threads": str(cores)}).warnings == ()
    assert f"exceeds the {cores} available cores" in resolve({"threads": str(cores + 1)}).warnings[0]


def test_available_cores(monkeypatch: pytest.MonkeyPatch):
    if hasattr(os, "sched_getaffinity"):
        assert available_cores() == len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 3, 5})
        assert available_cores() == 3
        monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert available_cores() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cores() == 1


# ---------------------------------------------------------------- output paths


def outputs(root: Path, **overrides: str) -> Settings:
    """Settings whose four output locations lie under `root` unless overridden (keys: field names)."""
    options = {
        "db-path": str(root / "db" / "runs.db"),
        "run-dir": str(root / "runs"),
        "codebooks-dir": str(root / "codebooks"),
        "cache-dir": str(root / "cache"),
    }
    options.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return resolve(options)


def output_error(s: Settings, name: str) -> str:
    with pytest.raises(SettingError) as info:
        check_output_paths(s)
    return one_line_error(info, BY_NAME[name], s.sources[name])


def test_check_output_paths_creates_missing_directories(tmp_path: Path):
    s = outputs(tmp_path / "deep" / "er")
    check_output_paths(s)
    for path in (s.db_path.parent, s.run_dir, s.codebooks_dir, s.cache_dir):
        assert path.is_dir()
        assert list(path.iterdir()) == []  # the write probe is removed
    assert not s.db_path.exists()  # the database itself is SQLite's to create


def test_check_output_paths_accepts_existing_database(tmp_path: Path):
    s = outputs(tmp_path)
    s.db_path.parent.mkdir()
    s.db_path.write_bytes(b"SQLite format 3\x00")
    check_output_paths(s)
    check_output_paths(s)
    assert s.db_path.read_bytes() == b"SQLite format 3\x00"


@pytest.mark.parametrize("name", OUTPUT_DIRS)
def test_output_dir_that_is_a_file(name: str, tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    s = outputs(tmp_path, **{name: str(blocker)})
    assert f"{blocker} is not a directory (a file is in the way: {blocker})" in output_error(s, name)


@pytest.mark.parametrize("name", OUTPUT_DIRS)
def test_output_dir_below_a_file(name: str, tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    var = BY_NAME[name].env[0]
    s = resolve_settings({}, {var: "blocker/sub/dir"}, {}, cwd=tmp_path)
    msg = output_error(s, name)
    assert msg == (
        f"--vq-{name}: {blocker}/sub/dir is not a directory (a file is in the way: {blocker}) (from env {var})"
    )


def test_database_below_a_file(tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    s = outputs(tmp_path, db_path=str(blocker / "runs.db"))
    msg = output_error(s, "db-path")
    assert f"{blocker} (directory of {blocker}/runs.db) is not a directory (a file is in the way: {blocker})" in msg


def test_database_that_is_a_directory(tmp_path: Path):
    s = outputs(tmp_path, db_path=str(tmp_path))
    assert f"{tmp_path} is a directory, expected a database file" in output_error(s, "db-path")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_database_that_is_not_a_regular_file(tmp_path: Path):
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    s = outputs(tmp_path, db_path=str(fifo))
    assert f"{fifo} is not a regular file" in output_error(s, "db-path")


def test_output_dir_below_a_proc_file():
    if not Path("/proc/version").is_file():
        pytest.skip("needs Linux /proc")
    s = outputs(Path(tempfile.gettempdir()), run_dir="/proc/version/x")
    assert "/proc/version/x is not a directory (a file is in the way: /proc/version)" in output_error(s, "run-dir")


def _sys_kernel_is_read_only() -> bool:
    """/sys/kernel refuses new files even to root; skip where it does not exist or (oddly) accepts them."""
    try:
        fd, probe = tempfile.mkstemp(dir="/sys/kernel")
    except OSError:
        return Path("/sys/kernel").is_dir()
    os.close(fd)
    os.unlink(probe)
    return False


needs_sys = pytest.mark.skipif(not _sys_kernel_is_read_only(), reason="needs a read-only Linux /sys/kernel")


@needs_sys
def test_output_dir_not_writable(tmp_path: Path):
    s = outputs(tmp_path, cache_dir="/sys/kernel")
    msg = output_error(s, "cache-dir")
    assert "--vq-cache-dir: /sys/kernel is not writable (" in msg
    assert "Traceback" not in msg


@needs_sys
def test_output_dir_cannot_be_created(tmp_path: Path):
    s = outputs(tmp_path, codebooks_dir="/sys/kernel/vq-bench-new/sub")
    assert "--vq-codebooks-dir: /sys/kernel/vq-bench-new/sub cannot be created (" in output_error(s, "codebooks-dir")


@needs_sys
def test_database_file_not_writable(tmp_path: Path):
    if not Path("/sys/kernel/address_bits").is_file():
        pytest.skip("needs /sys/kernel/address_bits")
    s = outputs(tmp_path, db_path="/sys/kernel/address_bits")
    assert "/sys/kernel/address_bits is not writable (Permission denied)" in output_error(s, "db-path")


@needs_sys
def test_database_directory_not_writable(tmp_path: Path):
    s = outputs(tmp_path, db_path="/sys/kernel/vq-bench-new.db")
    assert "/sys/kernel (directory of /sys/kernel/vq-bench-new.db) is not writable (" in output_error(s, "db-path")


def _raise(code: int):
    def fail(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EIO, errno.EDQUOT, errno.ENOSPC])
def test_any_write_failure_is_a_setting_error(code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    s = outputs(tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", _raise(code))
    reason = "disk full" if code == errno.ENOSPC else os.strerror(code)
    assert f"(directory of {s.db_path}) is not writable ({reason})" in output_error(s, "db-path")


def test_disk_full_while_creating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    s = outputs(tmp_path)
    monkeypatch.setattr(os, "mkdir", _raise(errno.ENOSPC))
    assert output_error(s, "db-path").endswith("cannot be created (disk full) (from option --vq-db-path)")


def test_disk_full_opening_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    s = outputs(tmp_path)
    s.db_path.parent.mkdir()
    s.db_path.write_bytes(b"")
    monkeypatch.setattr(output_paths_module, "open", _raise(errno.ENOSPC), raising=False)
    assert f"{s.db_path} is not writable (disk full)" in output_error(s, "db-path")


def test_later_output_dirs_are_checked_too(tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    s = outputs(tmp_path, cache_dir=str(blocker))
    output_error(s, "cache-dir")
    assert s.run_dir.is_dir() and s.codebooks_dir.is_dir()


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

    s = resolve_settings({}, {}, ini, cwd=child, ini_dir=ini_dir)
    assert s.data_dir == tmp_path / "data"
    assert s.sources["data-dir"] == "ini vq_data_dir"
    assert s.codebooks_dir == Path("/abs/cb")
    assert s.seed == 5


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
    environ = {"DB_PATH": "/db/x.db", "VQ_CODEBOOKS_DIR": "/cb", "CODEBOOKS_DIR": "/old"}
    s = resolve({"seed": "4"}, environ, {"data-dir": "d"})
    lines = describe(s)
    assert len(lines) == len(SETTINGS)
    for line, setting in zip(lines, SETTINGS, strict=True):
        assert line.startswith("  ")
        assert line.split("=")[0].strip() == setting.name
        assert line.endswith(f"[{s.sources[setting.name]}]")
    by_name = dict(zip((setting.name for setting in SETTINGS), lines, strict=True))
    assert "= 4  [option --vq-seed]" in by_name["seed"]
    assert "= /db/x.db  [env DB_PATH]" in by_name["db-path"]
    assert "= /cb  [env VQ_CODEBOOKS_DIR (overrides CODEBOOKS_DIR)]" in by_name["codebooks-dir"]
    assert f"= {INI_DIR / 'd'}  [ini vq_data_dir]" in by_name["data-dir"]
    assert "= (unset)  [default]" in by_name["dataset"]
    # values line up in one column
    assert len({line.index("=") for line in lines}) == 1


def test_describe_appends_warnings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(settings_module, "available_cores", lambda: 2)
    lines = describe(resolve({"threads": "64"}))
    assert len(lines) == len(SETTINGS) + 1
    assert lines[-1] == "  warning: --vq-threads 64 exceeds the 2 available cores: faiss will oversubscribe them"


def test_describe_keeps_each_value_on_one_line():
    lines = describe(resolve({"dataset": "two\nlines"}))
    assert len(lines) == len(SETTINGS)
    assert "= 'two\\nlines'  [option --vq-dataset]" in lines[0]


# ---------------------------------------------------------------- shards, SLURM arrays, flags

SLURM_ARRAY = {
    "SLURM_ARRAY_JOB_ID": "4242",
    "SLURM_ARRAY_TASK_ID": "7",
    "SLURM_ARRAY_TASK_MIN": "5",
    "SLURM_ARRAY_TASK_COUNT": "4",
}


def test_slurm_array_gives_shard_and_run_id():
    s = resolve(environ=SLURM_ARRAY)
    assert (s.shard_id, s.num_shards, s.run_id) == (2, 4, "slurm-4242")
    assert s.sources["shard-id"] == "env SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN"
    assert s.sources["num-shards"] == "env SLURM_ARRAY_TASK_COUNT"
    assert s.sources["run-id"] == "env SLURM_ARRAY_JOB_ID"


def test_explicit_shard_settings_win_over_the_array():
    s = resolve({"shard-id": "0", "num-shards": "2", "run-id": "mine"}, SLURM_ARRAY)
    assert (s.shard_id, s.num_shards, s.run_id) == (0, 2, "mine")
    assert s.sources["shard-id"] == "option --vq-shard-id"


def test_outside_an_array_nothing_is_sharded():
    s = resolve()
    assert (s.shard_id, s.num_shards, s.run_id, s.shard_mode) == (None, None, None, "cost")


@pytest.mark.parametrize(
    ("options", "named", "words"),
    [
        ({"shard-id": "3", "num-shards": "3"}, "--vq-shard-id", "expected a shard in [0, 3)"),
        ({"shard-id": "1"}, "--vq-num-shards", "is needed with --vq-shard-id 1"),
        ({"num-shards": "4"}, "--vq-shard-id", "is needed with --vq-num-shards 4"),
        ({"num-shards": "0", "shard-id": "0"}, "--vq-num-shards", "expected >= 1"),
        ({"shard-mode": "random"}, "--vq-shard-mode", "expected one of cost, hash"),
        ({"resume": "maybe"}, "--vq-resume", "expected true or false"),
    ],
)
def test_bad_shard_settings_are_one_line(options: dict, named: str, words: str):
    with pytest.raises(SettingError) as info:
        resolve_settings(options, {}, {}, cwd=CWD)
    msg = str(info.value)
    assert msg.startswith(f"{named}: ") and words in msg and "\n" not in msg


def test_single_shard_needs_no_id():
    assert resolve_settings({"num-shards": "1"}, {}, {}, cwd=CWD).shard_id is None


@given(word=st.sampled_from(["1", "true", "YES", "on", " On ", "0", "false", "No", "OFF"]))
def test_flag_words(word: str):
    s = resolve_settings({}, {"VQ_RESUME": word}, {}, cwd=CWD)
    assert s.resume is (word.strip().lower() in ("1", "true", "yes", "on"))
