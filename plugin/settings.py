"""One resolver for every setting: `--vq-NAME` option > environment variable > ini key > default.

The pytest plugin and the `vq-benchmark` command both resolve through `resolve_settings`, so a value means the
same thing everywhere, and each resolved value remembers where it came from (printed in the pytest header).
Relative paths from an option or env var are taken from the current directory; from an ini key, from the
directory of the ini file (so a pyproject can point at `data/` next to itself).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["str", "path", "int"]


class SettingError(ValueError):
    """A setting whose value cannot be used; the message names the option and its source."""


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[str, ...]
    default: str | None
    kind: Kind
    help: str
    minimum: int | None = None

    @property
    def option(self) -> str:
        return f"--vq-{self.name}"

    @property
    def dest(self) -> str:
        return "vq_" + self.name.replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest


SETTINGS: tuple[Setting, ...] = (
    Setting("dataset", ("VQ_DATASET",), None, "str", "dataset to benchmark (see `vq-benchmark datasets`)"),
    Setting("datasets-file", ("VQ_DATASETS_FILE",), None, "path", "TOML file declaring user datasets"),
    Setting("data-dir", ("VQ_DATA_DIR",), "data", "path", "root for relative dataset paths"),
    Setting("cache-dir", ("VQ_CACHE_DIR",), ".vq-cache", "path", "where computed ground truth is cached"),
    Setting(
        "codebooks-dir",
        ("CODEBOOKS_DIR", "VQ_CODEBOOKS_DIR"),
        "codebooks",
        "path",
        "where trained codecs are written (faiss.write_index)",
    ),
    Setting("db-path", ("DB_PATH", "VQ_DB_PATH"), "results/benchmark_runs.db", "path", "SQLite results file"),
    Setting("run-dir", ("VQ_RUN_DIR",), "results/runs", "path", "JSON reports and per-case result arrays"),
    Setting("sweep", ("VQ_SWEEP",), None, "path", "sweep TOML (default: the one shipped in vq_cases/)"),
    Setting("seed", ("VQ_SEED",), "0", "int", "seed of the training sample drawn from the base", minimum=0),
    Setting("train-size", ("VQ_TRAIN_SIZE",), "100000", "int", "training sample size (capped at n_base)", 1),
    Setting(
        "threads",
        ("VQ_THREADS",),
        "0",
        "int",
        "faiss OpenMP threads per process (0 = cores / xdist workers)",
        minimum=0,
    ),
    Setting("run-id", ("VQ_RUN_ID",), None, "str", "run id shared by all shards (default: generated)"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: str


def _convert(setting: Setting, raw: str, source: str, base_dir: Path) -> Any:
    if setting.kind == "path":
        path = Path(raw).expanduser()
        return path if path.is_absolute() else (base_dir / path)
    if setting.kind == "int":
        try:
            value = int(raw)
        except ValueError:
            raise SettingError(f"{setting.option}: expected an integer, got {raw!r} (from {source})") from None
        if setting.minimum is not None and value < setting.minimum:
            raise SettingError(f"{setting.option}: expected >= {setting.minimum}, got {value} (from {source})")
        return value
    return raw


def resolve_settings(
    options: Mapping[str, str | None],
    environ: Mapping[str, str],
    ini: Mapping[str, str],
    *,
    cwd: Path,
    ini_dir: Path | None = None,
) -> dict[str, Resolved]:
    """Resolve every setting. `options` and `ini` are keyed by setting name; empty strings count as unset."""
    out: dict[str, Resolved] = {}
    ini_base = ini_dir or cwd
    for s in SETTINGS:
        candidates: list[tuple[str | None, str, Path]] = [(options.get(s.name), f"option {s.option}", cwd)]
        candidates += [(environ.get(var), f"env {var}", cwd) for var in s.env]
        candidates.append((ini.get(s.name), f"ini {s.ini}", ini_base))
        for raw, source, base in candidates:
            if raw not in (None, ""):
                out[s.name] = Resolved(_convert(s, str(raw), source, base), source)
                break
        else:
            value = None if s.default is None else _convert(s, s.default, "default", cwd)
            out[s.name] = Resolved(value, "default")
    return out


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


def describe(resolved: Mapping[str, Resolved], fmt: Callable[[Any], str] = str) -> list[str]:
    """Lines `name = value  (source)` for the pytest header, in declaration order."""
    width = max(len(s.name) for s in SETTINGS)
    lines = []
    for s in SETTINGS:
        r = resolved[s.name]
        value = "(unset)" if r.value is None else fmt(r.value)
        lines.append(f"  {s.name:<{width}} = {value}  [{r.source}]")
    return lines
