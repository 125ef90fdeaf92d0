"""Sweeps as data: a TOML file lists methods and parameter grids; this module expands them into cases.

Reading a sweep touches no vectors, so `pytest --collect-only` stays instant (only `bits_per_dim` needs each
dataset's d, which the caller looks up from file headers through `dim_of`). Case ids are stable and use only
`[A-Za-z0-9_.-]`, and the expansion order is dataset by dataset, then file order, so every xdist worker collects
the same list.

Besides `method` and the method's parameters (list values form a grid), an entry may hold:
- `datasets = [...]`: the datasets the entry runs on (intersected with --vq-dataset; see `select_datasets`);
- `bits_per_dim = [...]`: equal-budget cases, mapped to the method's parameters per dataset (vq_cases/budget.py);
- `search.NAME = [...]`: search-time parameters, varied over one trained and encoded codec
  (vq_cases/search_params.py); ids append them after the training parameters;
- `seeds = [...]`: training seeds, each a case with the id suffix `-seed<N>` (--vq-repeats N does the same for
  every entry without `seeds`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vq_benchmark.fixtures.toml_file import read_toml
from vq_benchmark.vq_cases.budget import MAX_BITS, SQ_FAMILY, Unmappable, check_budget_entry, map_budget
from vq_benchmark.vq_cases.methods import METHODS, MethodError, ParamValue, check_params, get_method
from vq_benchmark.vq_cases.python_codec import add_search_dir
from vq_benchmark.vq_cases.search_params import check_search_params, search_notes

DEFAULT_SWEEP = Path(__file__).with_name("default_sweep.toml")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")
RESERVED_KEYS = ("method", "datasets", "bits_per_dim", "search", "seeds")
UNSEEDED = frozenset({"sqfp16", "sqbf16"})  # nothing random in their training: --vq-repeats leaves them alone
SEED_MAX = 2**63 - 1
Params = tuple[tuple[str, ParamValue], ...]


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


def _id_parts(params: Params) -> list[str]:
    return [f"{k}{id_value(v)}" for k, v in params]


@dataclass(frozen=True)
class Case:
    """One benchmark case. `params` shape training (and key the codec cache); `search` only the search, so cases
    differing in `search` alone share one trained and encoded codec. `seed` None: the session's --vq-seed.
    `skip` (a budget the method cannot represent) makes the case a skipped one without opening any data."""

    dataset: str
    method: str
    params: Params  # declared parameter order
    search: Params = ()
    seed: int | None = None
    bits_per_dim: int | None = None
    notes: tuple[str, ...] = ()
    skip: str | None = None

    @property
    def training_id(self) -> str:
        """The id without search parameters: what one trained codec is named by (the codec cache file too)."""
        parts = [self.dataset, self.method, *_id_parts(self.params)]
        if self.skip is not None and self.bits_per_dim is not None:
            parts.append(f"bpd{self.bits_per_dim}")
        return "-".join(parts + ([f"seed{self.seed}"] if self.seed is not None else []))

    @property
    def case_id(self) -> str:
        parts = [self.dataset, self.method, *_id_parts(self.params), *_id_parts(self.search)]
        if self.skip is not None and self.bits_per_dim is not None:
            parts.append(f"bpd{self.bits_per_dim}")
        return "-".join(parts + ([f"seed{self.seed}"] if self.seed is not None else []))

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=False, separators=(",", ":"))

    @property
    def search_json(self) -> str | None:
        """The search parameters as JSON (None when the case has none)."""
        return json.dumps(dict(self.search), separators=(",", ":")) if self.search else None

    def training_seed(self, default: int) -> int:
        return default if self.seed is None else self.seed


@dataclass(frozen=True)
class Entry:
    """One [[sweep]] table, validated as far as no dataset is needed."""

    number: int
    where: str
    method: str  # as written: a method name, or the "sq" family (with bits_per_dim)
    grid: dict[str, list[object]]
    search: dict[str, list[object]]
    seeds: tuple[int, ...] | None
    bits_per_dim: tuple[int, ...] | None
    datasets: tuple[str, ...] | None


def _grid_values(value: object, where: str, key: str) -> list[object]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise MethodError(f"{where}: parameter {key!r} has an empty list")
    return values


def _ints(value: object, where: str, key: str, low: int, high: int) -> tuple[int, ...]:
    values = _grid_values(value, where, key)
    for v in values:
        if type(v) is not int or not low <= v <= high:
            raise MethodError(f"{where}: {key} must hold integers in [{low}, {high}], got {v!r}")
    return tuple(dict.fromkeys(values))  # type: ignore[arg-type]


def _names(value: object, where: str) -> tuple[str, ...]:
    values = _grid_values(value, where, "datasets")
    for v in values:
        if not isinstance(v, str) or not v.strip() or "," in v:
            raise MethodError(f"{where}: datasets must hold dataset names, got {v!r}")
    return tuple(dict.fromkeys(v.strip() for v in values))  # type: ignore[union-attr]


def read_sweep(path: Path) -> list[dict[str, object]]:
    """Parse the sweep file into its raw entries; file problems are one-line MethodErrors naming the file."""
    doc = read_toml(path, "sweep file", "--vq-sweep / VQ_SWEEP", MethodError)
    entries = doc.get("sweep")
    extra = sorted(set(doc) - {"sweep"})
    if extra or not isinstance(entries, list) or not entries:
        raise MethodError(f"sweep file {path}: expected one or more [[sweep]] tables with a 'method' key")
    return entries


def read_entries(path: Path) -> list[Entry]:
    """The sweep's entries, each checked as far as that needs no dataset (methods, key types, search keys of
    every parameter combination that is not a bits_per_dim one)."""
    out = []
    for i, raw in enumerate(read_sweep(path), start=1):
        where = f"sweep file {path}: [[sweep]] #{i}"
        if not isinstance(raw, dict) or not isinstance(raw.get("method"), str):
            raise MethodError(f"{where}: needs a string 'method' key")
        name = raw["method"]
        budget = raw.get("bits_per_dim")
        if name == SQ_FAMILY and budget is None:
            raise MethodError(f"{where}: method 'sq' (the scalar quantizer family) needs bits_per_dim")
        if name != SQ_FAMILY:
            name = get_method(name, where).name
        if name == "python":  # quantizer files are looked up next to the sweep file first
            add_search_dir(Path(path).parent)
        search = raw.get("search", {})
        if not isinstance(search, dict):
            raise MethodError(f"{where}: search must be a table of search parameters (search.nprobe = [1, 4])")
        grid = {k: _grid_values(v, where, k) for k, v in raw.items() if k not in RESERVED_KEYS}
        entry = Entry(
            i,
            where,
            name,
            grid,
            {k: _grid_values(v, where, f"search.{k}") for k, v in search.items()},
            _ints(raw["seeds"], where, "seeds", 0, SEED_MAX) if "seeds" in raw else None,
            _ints(budget, where, "bits_per_dim", 1, MAX_BITS) if budget is not None else None,
            _names(raw["datasets"], where) if "datasets" in raw else None,
        )
        if entry.bits_per_dim is not None:
            check_budget_entry(name, grid, where)
        else:  # parameter and search-key errors now, whatever datasets the entry runs on
            for method, params, _, _, _ in _configs(entry, None, ""):
                for combo in _search_combos(entry):
                    check_search_params(method, params, dict(combo), where)
        out.append(entry)
    return out


def sweep_datasets(entries: Sequence[Entry]) -> tuple[str, ...]:
    """Every dataset the entries name, in order of first appearance."""
    return tuple(dict.fromkeys(name for e in entries for name in (e.datasets or ())))


def select_datasets(entries: Sequence[Entry], selected: Sequence[str]) -> tuple[str, ...]:
    """The datasets of a run: --vq-dataset when given (an entry's `datasets` then only narrows it), else every
    dataset the entries name (entries without `datasets` run on all of them)."""
    return tuple(dict.fromkeys(selected)) if selected else sweep_datasets(entries)


Config = tuple[str, dict[str, ParamValue], list[str], int | None, str | None]


def _configs(entry: Entry, dim: int | None, dataset: str) -> list[Config]:
    """(method, training params, notes, bits_per_dim, skip reason) of every grid combination (and budget)."""
    keys = list(entry.grid)
    out: list[Config] = []
    for combo in itertools.product(*(entry.grid[k] for k in keys)):
        given = dict(zip(keys, combo, strict=True))
        if entry.bits_per_dim is None:
            params = check_params(METHODS[entry.method], given, entry.where)
            out.append((entry.method, params, [], None, None))
            continue
        if dim is None:
            raise MethodError(f"{entry.where}: bits_per_dim needs the dimension of dataset {dataset!r}")
        for bits in entry.bits_per_dim:
            try:
                method, mapped, notes = map_budget(entry.method, given, dim, bits)
            except Unmappable as exc:
                raw = {k: v for k, v in given.items() if isinstance(v, int | float | str | bool)}
                out.append((entry.method, raw, [], bits, str(exc)))
                continue
            params = check_params(get_method(method, entry.where), {**given, **mapped}, entry.where)
            out.append((method, params, notes, bits, None))
    return out


def _search_combos(entry: Entry) -> list[tuple[tuple[str, object], ...]]:
    keys = list(entry.search)
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*(entry.search[k] for k in keys))]


def _seeds(entry: Entry, method: str, repeats: int, base_seed: int) -> tuple[int | None, ...]:
    if entry.seeds is not None:
        return entry.seeds
    if repeats > 1 and method not in UNSEEDED:
        if base_seed + repeats - 1 > SEED_MAX:
            raise MethodError(f"--vq-seed {base_seed} + --vq-repeats {repeats} exceeds the largest seed {SEED_MAX}")
        return tuple(range(base_seed, base_seed + repeats))
    return (None,)


def expand_entries(
    entries: Sequence[Entry],
    datasets: Sequence[str],
    *,
    dim_of: Callable[[str], int] | None = None,
    repeats: int = 1,
    base_seed: int = 0,
) -> list[Case]:
    """The cases of every entry for every dataset it runs on, dataset by dataset, then in file order.

    Duplicate ids are an error, except where bits_per_dim made them: budgets that map to one configuration on a
    dataset are one case (the first budget is recorded, a note names the others)."""
    cases: list[Case] = []
    for dataset in datasets:
        at: dict[str, int] = {}
        for entry in entries:
            if entry.datasets is not None and dataset not in entry.datasets:
                continue
            dim = dim_of(dataset) if entry.bits_per_dim is not None and dim_of is not None else None
            for method, params, notes, bits, skip in _configs(entry, dim, dataset):
                for seed in (None,) if skip else _seeds(entry, method, repeats, base_seed):
                    for combo in [()] if skip else _search_combos(entry):
                        search = check_search_params(method, params, dict(combo), entry.where) if combo else {}
                        case = Case(
                            dataset,
                            method,
                            tuple(params.items()),
                            tuple(search.items()),
                            seed,
                            bits,
                            (*notes, *search_notes(method, params, search)),
                            skip,
                        )
                        _add(cases, at, case, entry)
    return cases


def _add(cases: list[Case], at: dict[str, int], case: Case, entry: Entry) -> None:
    cid = case.case_id
    if cid not in at:
        at[cid] = len(cases)
        cases.append(case)
        return
    first = cases[at[cid]]
    if case.bits_per_dim is None and first.bits_per_dim is None:
        raise MethodError(f"{entry.where}: case {cid} appears twice in the sweep")
    if case.bits_per_dim is not None and case.bits_per_dim != first.bits_per_dim:
        note = f"bits_per_dim={case.bits_per_dim} maps to this configuration too"
        cases[at[cid]] = dataclasses.replace(first, notes=(*first.notes, note))


def expand_sweep(
    path: Path,
    dataset: str | Sequence[str],
    *,
    dim_of: Callable[[str], int] | None = None,
    repeats: int = 1,
    base_seed: int = 0,
) -> list[Case]:
    """All cases of the sweep for one dataset (or several, dataset by dataset), validated; duplicate ids are an
    error. `dim_of(name)` gives a dataset's d, needed only by bits_per_dim entries."""
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    return expand_entries(read_entries(path), names, dim_of=dim_of, repeats=repeats, base_seed=base_seed)
