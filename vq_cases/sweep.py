"""Sweeps as data: a TOML file lists methods and parameter grids; this module expands them into cases.

Reading a sweep touches no vectors, so `pytest --collect-only` stays instant. Case ids are stable and use only
`[A-Za-z0-9_.-]`, and the expansion order is the file order, so every xdist worker collects the same list.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from vq_benchmark.fixtures.toml_file import read_toml
from vq_benchmark.vq_cases.methods import MethodError, ParamValue, check_params, get_method
from vq_benchmark.vq_cases.python_codec import add_search_dir

DEFAULT_SWEEP = Path(__file__).with_name("default_sweep.toml")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


def id_value(value: ParamValue) -> str:
    """A parameter value as it appears in a case id: bools as 1/0; in strings ',' becomes '.' (so a factory
    string such as OPQ16_64,IVF256,PQ16x4fs reads OPQ16_64.IVF256.PQ16x4fs, and `factory_from_id` gives it
    back) and any other character outside [A-Za-z0-9_.] becomes '_'."""
    if isinstance(value, bool):
        return str(int(value))
    return _UNSAFE.sub("_", str(value).replace(",", "."))


def factory_from_id(text: str) -> str:
    """The factory string of a case id's factory part (exact for strings of [A-Za-z0-9_,], i.e. faiss's)."""
    return text.replace(".", ",")


@dataclass(frozen=True)
class Case:
    dataset: str
    method: str
    params: tuple[tuple[str, ParamValue], ...]  # declared parameter order

    @property
    def case_id(self) -> str:
        parts = [self.dataset, self.method, *(f"{k}{id_value(v)}" for k, v in self.params)]
        return "-".join(parts)

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=False, separators=(",", ":"))


def _grid_values(value: object, where: str, key: str) -> list[object]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise MethodError(f"{where}: parameter {key!r} has an empty list")
    return values


def read_sweep(path: Path) -> list[dict[str, object]]:
    """Parse the sweep file into its raw entries; file problems are one-line MethodErrors naming the file."""
    doc = read_toml(path, "sweep file", "--vq-sweep / VQ_SWEEP", MethodError)
    entries = doc.get("sweep")
    extra = sorted(set(doc) - {"sweep"})
    if extra or not isinstance(entries, list) or not entries:
        raise MethodError(f"sweep file {path}: expected one or more [[sweep]] tables with a 'method' key")
    return entries


def expand_sweep(path: Path, dataset: str) -> list[Case]:
    """All cases of the sweep for one dataset, validated, in file order; duplicate ids are an error."""
    cases: list[Case] = []
    seen: set[str] = set()
    for i, entry in enumerate(read_sweep(path), start=1):
        where = f"sweep file {path}: [[sweep]] #{i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
            raise MethodError(f"{where}: needs a string 'method' key")
        method = get_method(entry["method"], where)
        if method.name == "python":  # quantizer files are looked up next to the sweep file first
            add_search_dir(Path(path).parent)
        grid = {k: _grid_values(v, where, k) for k, v in entry.items() if k != "method"}
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            params = check_params(method, dict(zip(keys, combo, strict=True)), where)
            case = Case(dataset, method.name, tuple(params.items()))
            if case.case_id in seen:
                raise MethodError(f"{where}: case {case.case_id} appears twice in the sweep")
            seen.add(case.case_id)
            cases.append(case)
    return cases
