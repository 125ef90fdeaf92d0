"""One resolver for every setting: `--vq-NAME` option > environment variable > ini key > default.

The pytest plugin and the `vq-benchmark` command both resolve through `resolve_settings`, so a value means the
same thing everywhere, and each value remembers where it came from (printed in the pytest header). Every value is
checked here (and `plugin.output_paths` checks that results can be written), so a bad setting is one line before
the first case rather than a traceback an hour into a run. Relative paths from an option or env var are taken from the
current directory; from an ini key, from the directory of the ini file (so a pyproject can point at `data/` next
to itself). Imports stay light: the pytest plugin imports this module in every pytest session.
"""

from __future__ import annotations

import errno
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

Kind = Literal["str", "path", "int", "name", "flag", "choice"]

INT64_MAX = 2**63 - 1  # the largest SQLite INTEGER; numpy's default_rng takes any non-negative int
C_INT_MAX = 2**31 - 1  # faiss.omp_set_num_threads takes a C int
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_MAX = 128


class SettingError(ValueError):
    """A setting whose value cannot be used; one line naming the option, the value, its source and what was expected."""


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[str, ...]  # in priority order: the VQ_ name first, a legacy name after it
    default: str | None
    kind: Kind
    help: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    @property
    def option(self) -> str:
        return f"--vq-{self.name}"

    @property
    def dest(self) -> str:
        return "vq_" + self.name.replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest

    @property
    def field(self) -> str:
        """The attribute of `Settings` holding this setting."""
        return self.name.replace("-", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "dataset",
        ("VQ_DATASET",),
        None,
        "str",
        "dataset(s) to benchmark, comma-separated: a,b,c (see `vq-benchmark datasets`)",
    ),
    Setting(
        "dataset-limit",
        ("VQ_DATASET_LIMIT",),
        None,
        "int",
        "benchmark on the first N base vectors only (ground truth is then computed for that prefix)",
        1,
        INT64_MAX,
    ),
    Setting("datasets-file", ("VQ_DATASETS_FILE",), None, "path", "TOML file declaring user datasets"),
    Setting("data-dir", ("VQ_DATA_DIR",), "data", "path", "root for relative dataset paths"),
    Setting("cache-dir", ("VQ_CACHE_DIR",), ".vq-cache", "path", "where computed ground truth is cached"),
    Setting(
        "codebooks-dir",
        ("VQ_CODEBOOKS_DIR", "CODEBOOKS_DIR"),
        "codebooks",
        "path",
        "where trained codecs are written (<fingerprint>/<training_id>-<key>.faissindex)",
    ),
    Setting("db-path", ("VQ_DB_PATH", "DB_PATH"), "results/benchmark_runs.db", "path", "SQLite results file"),
    Setting(
        "run-dir", ("VQ_RUN_DIR",), "results/runs", "path", "per-run results.jsonl, results.json and result arrays"
    ),
    Setting("sweep", ("VQ_SWEEP",), None, "path", "sweep TOML (default: the one shipped in vq_cases/)"),
    Setting(
        "seed", ("VQ_SEED",), "0", "int", "training seed (sample drawn from the base, faiss k-means)", 0, INT64_MAX
    ),
    Setting("train-size", ("VQ_TRAIN_SIZE",), "100000", "int", "training sample size (capped at n_base)", 1, INT64_MAX),
    Setting(
        "repeats",
        ("VQ_REPEATS",),
        "1",
        "int",
        "training seeds per configuration (seed, seed+1, ...; each a case with id suffix -seed<N>)",
        1,
        10_000,
    ),
    Setting(
        "threads",
        ("VQ_THREADS",),
        "0",
        "int",
        "faiss OpenMP threads per process (0 = cores / xdist workers)",
        0,
        C_INT_MAX,
    ),
    Setting(
        "run-id",
        ("VQ_RUN_ID",),
        None,
        "name",
        "run id shared by all shards (default: slurm-<SLURM_ARRAY_JOB_ID> in a job array, else generated)",
    ),
    Setting(
        "shard-id",
        ("VQ_SHARD_ID",),
        None,
        "int",
        "this process's shard, in [0, num-shards) (default in a job array: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN)",
        0,
        C_INT_MAX - 1,
    ),
    Setting(
        "num-shards",
        ("VQ_NUM_SHARDS",),
        None,
        "int",
        "how many shards split the selected cases (default in a job array: SLURM_ARRAY_TASK_COUNT)",
        1,
        C_INT_MAX,
    ),
    Setting(
        "shard-mode",
        ("VQ_SHARD_MODE",),
        "cost",
        "choice",
        "cost: balance estimated cost, keeping datasets together; hash: stable when cases are added",
        choices=("cost", "hash"),
    ),
    Setting("resume", ("VQ_RESUME",), "false", "flag", "skip cases that already have an ok row for this data"),
    Setting("no-codec-cache", ("VQ_NO_CODEC_CACHE",), "false", "flag", "retrain codecs instead of loading them"),
    Setting(
        "search-rounds",
        ("VQ_SEARCH_ROUNDS",),
        "3",
        "int",
        "timed rounds of each case's batched search: qps is the best round, qps_min/median/max their spread",
        1,
        10_000,
    ),
    Setting(
        "benchmark-json",
        ("VQ_BENCHMARK_JSON",),
        None,
        "path",
        "also write the run's rows to this file in pytest-benchmark's JSON layout (pytest-benchmark compare FILE)",
    ),
)
FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Every resolved setting; the fields are the names of `SETTINGS` (a test keeps the two in step)."""

    dataset: str | None
    dataset_limit: int | None
    datasets_file: Path | None
    data_dir: Path
    cache_dir: Path
    codebooks_dir: Path
    db_path: Path
    run_dir: Path
    sweep: Path | None
    seed: int
    train_size: int
    repeats: int
    threads: int
    run_id: str | None
    shard_id: int | None
    num_shards: int | None
    shard_mode: str
    resume: bool
    no_codec_cache: bool
    search_rounds: int
    benchmark_json: Path | None
    sources: Mapping[str, str]
    warnings: tuple[str, ...] = ()

    def value(self, name: str) -> Any:
        """A value by table name (`value("db-path")`), for code that walks `SETTINGS`."""
        if name not in BY_NAME:
            raise KeyError(name)
        return getattr(self, BY_NAME[name].field)


def available_cores() -> int:
    """The cores this process may run on (the affinity mask, e.g. under taskset or a container), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def show_value(value: object, limit: int = 200) -> str:
    """A value as one short line: quoted when it holds control characters, cut when very long."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() else repr(text)


def setting_error(setting: Setting, problem: str, source: str) -> SettingError:
    return SettingError(f"{setting.option}: {problem} (from {source})")


def os_reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk full"
    return show_value(getattr(exc, "strerror", None) or exc)


def _to_path(setting: Setting, raw: str, source: str, base: Path) -> Path:
    if "\x00" in raw:
        raise setting_error(setting, f"{show_value(raw)} contains a NUL byte", source)
    try:
        path = Path(raw).expanduser()
    except (RuntimeError, KeyError, ValueError, OSError):  # pathlib raises RuntimeError for an unknown ~user
        why = "no such user" if raw[1:].split("/", 1)[0] else "no home directory (HOME is unset)"
        raise setting_error(setting, f"cannot expand {show_value(repr(raw))}: {why}", source) from None
    return path if path.is_absolute() else base / path


def _to_int(setting: Setting, raw: str, source: str) -> int:
    try:
        value = int(raw)
    except ValueError:  # also for more digits than int() accepts
        raise setting_error(setting, f"expected an integer, got {show_value(repr(raw))}", source) from None
    if setting.minimum is not None and value < setting.minimum:
        raise setting_error(setting, f"expected >= {setting.minimum}, got {show_value(value)}", source)
    if setting.maximum is not None and value > setting.maximum:
        raise setting_error(setting, f"expected <= {setting.maximum}, got {show_value(value)}", source)
    return value


def _to_name(setting: Setting, raw: str, source: str) -> str:
    """A run id names a folder under --vq-run-dir, so it must never climb out of it or nest."""
    if len(raw) > NAME_MAX or ".." in raw or not NAME_RE.fullmatch(raw):
        expected = f"a name, not a path ([A-Za-z0-9][A-Za-z0-9_.-]*, at most {NAME_MAX} characters, no '..')"
        raise setting_error(setting, f"expected {expected}, got {show_value(repr(raw))}", source)
    return raw


def _to_word(setting: Setting, raw: str, source: str) -> Any:
    """A flag (true/false words) or one of a setting's choices."""
    word = raw.strip().lower()
    if setting.kind == "flag":
        if word not in FLAG_WORDS:
            raise setting_error(
                setting, f"expected true or false (1/0, yes/no, on/off), got {show_value(repr(raw))}", source
            )
        return FLAG_WORDS[word]
    if word not in setting.choices:
        raise setting_error(
            setting, f"expected one of {', '.join(setting.choices)}, got {show_value(repr(raw))}", source
        )
    return word


def _convert(setting: Setting, raw: str, source: str, base: Path) -> Any:
    if setting.kind == "path":
        return _to_path(setting, raw, source, base)
    if setting.kind == "int":
        return _to_int(setting, raw, source)
    if setting.kind in ("flag", "choice"):
        return _to_word(setting, raw, source)
    return _to_name(setting, raw, source) if setting.kind == "name" else raw


def _candidates(
    s: Setting, options: Mapping[str, str | None], environ: Mapping[str, str], ini: Mapping[str, str]
) -> Iterator[tuple[str, str, bool]]:
    """The set values of one setting, best first: (raw, source, from_ini). Empty strings count as unset."""
    if (raw := options.get(s.name)) not in (None, ""):
        yield str(raw), f"option {s.option}", False
    set_env = [var for var in s.env if environ.get(var) not in (None, "")]
    for i, var in enumerate(set_env):
        shadowed = ", ".join(set_env[i + 1 :])
        yield environ[var], f"env {var}" + (f" (overrides {shadowed})" if shadowed else ""), False
    if (raw := ini.get(s.name)) not in (None, ""):
        yield str(raw), f"ini {s.ini}", True
    if (fallback := _slurm_array_value(s.name, environ)) is not None:
        yield fallback[0], fallback[1], False


def _slurm_array_value(name: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """Inside a SLURM job array every task shares the array's job id and finds its shard from its task id."""
    get = environ.get
    if name == "run-id" and get("SLURM_ARRAY_JOB_ID"):
        return f"slurm-{get('SLURM_ARRAY_JOB_ID')}", "env SLURM_ARRAY_JOB_ID"
    if name == "num-shards" and get("SLURM_ARRAY_TASK_COUNT"):
        return str(get("SLURM_ARRAY_TASK_COUNT")), "env SLURM_ARRAY_TASK_COUNT"
    if name == "shard-id" and get("SLURM_ARRAY_TASK_ID"):
        task, first = get("SLURM_ARRAY_TASK_ID", ""), get("SLURM_ARRAY_TASK_MIN") or "0"
        if task.isdigit() and first.isdigit():
            return str(int(task) - int(first)), "env SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN"
    return None


def dataset_names(value: str | None, source: str = "option --vq-dataset") -> tuple[str, ...]:
    """The datasets of a `--vq-dataset a,b,c` value, in order, each once (empty: none selected). An empty name
    ("a,,b", "a,") is a typo that would silently drop a dataset: SettingError naming `source`."""
    if not value:
        return ()
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        expected = "comma-separated dataset names (a,b,c)"
        raise setting_error(BY_NAME["dataset"], f"expected {expected}, got {show_value(repr(value))}", source)
    return tuple(dict.fromkeys(names))


def _check_shards(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """A shard id without a count, or outside [0, count), would silently run the wrong cases."""
    shard, count = values["shard_id"], values["num_shards"]
    sid, num = BY_NAME["shard-id"], BY_NAME["num-shards"]
    if shard is None and count is not None and count > 1:
        raise setting_error(sid, f"is needed with --vq-num-shards {count}", sources["num-shards"])
    if shard is not None and count is None:
        raise setting_error(num, f"is needed with --vq-shard-id {shard}", sources["shard-id"])
    if shard is not None and count is not None and shard >= count:
        raise setting_error(
            sid,
            f"expected a shard in [0, {count}) (--vq-num-shards from {sources['num-shards']}), got {shard}",
            sources["shard-id"],
        )


def _warnings(threads: int) -> tuple[str, ...]:
    cores = available_cores()
    if threads > cores:
        return (f"--vq-threads {threads} exceeds the {cores} available cores: faiss will oversubscribe them",)
    return ()


def resolve_settings(
    options: Mapping[str, str | None],
    environ: Mapping[str, str],
    ini: Mapping[str, str],
    *,
    cwd: Path,
    ini_dir: Path | None = None,
) -> Settings:
    """Resolve and check every setting (`options` and `ini` keyed by setting name); raises SettingError.

    Only the winning value of each setting is converted, so a broken value shadowed by a better one is harmless.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        raw, source, from_ini = next(_candidates(s, options, environ, ini), (s.default, "default", False))
        base = (ini_dir or cwd) if from_ini else cwd
        values[s.field] = None if raw is None else _convert(s, raw, source, base)
        sources[s.name] = source
    _check_shards(values, sources)
    return Settings(**values, sources=MappingProxyType(sources), warnings=_warnings(values["threads"]))


def read_pyproject_ini(directory: Path) -> tuple[dict[str, str], Path | None]:
    """The `vq_*` keys of `[tool.pytest.ini_options]` in the nearest pyproject.toml, for use outside pytest."""
    for d in (directory, *directory.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            try:
                doc = tomllib.loads(candidate.read_text())
            except OSError as exc:
                raise SettingError(f"{candidate}: unreadable ({exc})") from exc
            except tomllib.TOMLDecodeError as exc:
                raise SettingError(f"{candidate}: not valid TOML ({exc})") from exc
            tool = doc.get("tool")
            pytest_table = tool.get("pytest") if isinstance(tool, dict) else None
            section = pytest_table.get("ini_options") if isinstance(pytest_table, dict) else None
            if not isinstance(section, dict):
                continue  # like pytest: only a pyproject with [tool.pytest.ini_options] is a config file
            return {s.name: str(section[s.ini]) for s in SETTINGS if s.ini in section}, d
    return {}, None


def describe(settings: Settings) -> list[str]:
    """Header lines `name = value  [source]` in table order, then one `warning: ...` line per warning."""
    width = max(len(s.name) for s in SETTINGS)
    lines = []
    for s in SETTINGS:
        value = settings.value(s.name)
        shown = "(unset)" if value is None else show_value(value, limit=4096)
        lines.append(f"  {s.name:<{width}} = {shown}  [{settings.sources[s.name]}]")
    return lines + [f"  warning: {w}" for w in settings.warnings]
