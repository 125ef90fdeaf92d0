"""Equal-budget sweeps: `bits_per_dim = [1, 2, 4, 8]` in a sweep entry becomes each method's own parameters.

A budget of b bits per dimension is d*b/8 bytes per vector. Since d belongs to the dataset, the mapping is done
per dataset when the cases are generated (ids show the resulting parameters, e.g. glove-50d-pq-M25-nbits8; the
budget asked is the row's `bits_per_dim`). Where d*b is not a whole multiple of a method's step, the nearest
valid value is taken and a note says what the code really spends. A budget a method cannot represent at all
(SQ at 1 bit, PQ needing more sub-quantizers than dimensions) raises `Unmappable` with the reason: the sweep
turns it into a skipped case.

| method | parameters set | code bytes |
|---|---|---|
| pq, opq | M = d*b/nbits (nbits from the entry, default 8) | M*nbits/8 = d*b/8 |
| pqfs | M = d*b/4 | M/2 = d*b/8 |
| sq (family) | b = 4, 6, 8, 16 -> sq4, sq6, sq8, sqfp16 | d*b/8 |
| rq, lsq | M = d*b/nbits stages | d*b/8 (+1 norm byte under L2) |
| prq, plsq | M = d*b/(nsplits*nbits) | d*b/8 (+1 norm byte under L2) |
| rabitq, rabitqfs | nbits = b (1..9) | d*b/8 + per-vector factors |
| itq_lsh | nbits = d (b = 1 only) | d/8 |
| python | bits = b (the quantizer's constructor argument) | the quantizer's (lvq: + 8 bytes) |
| ivf | the inner method's mapping | + the list id |
"""

from __future__ import annotations

from collections.abc import Mapping

from vq_benchmark.vq_cases.method_spec import MethodError, ParamValue

SQ_FAMILY = "sq"
SQ_BY_BITS = {4: "sq4", 6: "sq6", 8: "sq8", 16: "sqfp16"}
MIN_BITS, MAX_BITS = 1, 32
_MAX_STAGES = 256  # rq/lsq/prq/plsq M


class Unmappable(Exception):
    """This budget cannot be expressed by the method on this dataset; the message is the skip reason."""


def budget_methods() -> tuple[str, ...]:
    return ("ivf", "itq_lsh", "lsq", "opq", "plsq", "pq", "pqfs", "prq", "python", "rabitq", "rabitqfs", "rq", "sq")


def check_budget_entry(method: str, grid: Mapping[str, list[object]], where: str) -> None:
    """Sweep-time checks that need no dataset: the method (each ivf inner) maps budgets, and the entry does not
    also set what the budget sets. `grid` holds the entry's other keys, each a list of values."""
    targets = [str(v) for v in grid.get("inner", [])] if method == "ivf" else [method]
    for target in targets:
        if target not in budget_methods() or target == "ivf":
            names = ", ".join(budget_methods())
            what = f"ivf inner {target!r}" if method == "ivf" else f"method {method!r}"
            raise MethodError(f"{where}: {what} has no bits_per_dim mapping; methods with one: {names}")
        clash = sorted(k for k in _owned(target) if k in grid)
        if clash:
            raise MethodError(f"{where}: bits_per_dim sets {clash[0]} for {target}; remove {clash[0]} from the entry")


def _owned(method: str) -> tuple[str, ...]:
    """The parameters a budget sets for `method`."""
    return {
        "pq": ("M",),
        "opq": ("M",),
        "pqfs": ("M",),
        "rq": ("M",),
        "lsq": ("M",),
        "prq": ("M",),
        "plsq": ("M",),
        "rabitq": ("nbits",),
        "rabitqfs": ("nbits",),
        "itq_lsh": ("nbits",),
        "python": ("bits",),
    }.get(method, ())


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def _stages(dim: int, bits: int, per_stage: int, limit: int, what: str) -> tuple[int, list[str]]:
    """The count of `per_stage`-bit units spending d*b bits: exact when whole, else the nearest (at least 1)."""
    exact = dim * bits / per_stage
    count = max(1, int(exact + 0.5))
    if count > limit:
        raise Unmappable(f"bits_per_dim={bits} needs {what}={exact:g} on d={dim}, more than {limit}")
    if count == exact:
        return count, []
    real = count * per_stage / dim
    note = f"bits_per_dim={bits}: d*b/{per_stage} = {exact:g} is not whole; {what}={count} spends {real:.3g} bits/dim"
    return count, [note]


def map_budget(
    method: str, given: Mapping[str, object], dim: int, bits: int
) -> tuple[str, dict[str, ParamValue], list[str]]:
    """(method, parameters to add, notes) spending `bits` per dimension of a d=`dim` vector; Unmappable when
    the method has no such configuration. `given` holds the entry's other parameters (e.g. nbits)."""
    if method == SQ_FAMILY:
        if bits not in SQ_BY_BITS:
            have = ", ".join(f"{b} ({m})" for b, m in SQ_BY_BITS.items())
            raise Unmappable(f"sq has no {bits}-bit variant; bits per dimension: {have}")
        return SQ_BY_BITS[bits], {}, []
    if method == "ivf":
        inner = str(given.get("inner", ""))
        inner_method, params, notes = map_budget(inner, given, dim, bits)
        if inner_method != inner:  # the sq family picks the inner codec itself
            params = {**params, "inner": inner_method}
        return "ivf", params, [*notes, "the code also holds the IVF list id"]
    if method in ("pq", "opq"):
        nbits = _int(given.get("nbits"), 8)
        m, notes = _stages(dim, bits, nbits, dim, "M")
        return method, {"M": m}, notes
    if method == "pqfs":
        m, notes = _stages(dim, bits, 4, dim, "M")
        return method, {"M": m}, notes
    if method in ("rq", "lsq"):
        m, notes = _stages(dim, bits, _int(given.get("nbits"), 8), _MAX_STAGES, "M")
        return method, {"M": m}, notes
    if method in ("prq", "plsq"):
        per = _int(given.get("nsplits"), 2) * _int(given.get("nbits"), 8)
        m, notes = _stages(dim, bits, per, _MAX_STAGES, "M")
        return method, {"M": m}, notes
    if method in ("rabitq", "rabitqfs"):
        if not 1 <= bits <= 9:
            raise Unmappable(f"{method} has 1 to 9 bits per dimension, not {bits}")
        return method, {"nbits": bits}, []
    if method == "itq_lsh":
        if bits != 1:
            raise Unmappable(f"itq_lsh codes hold at most d bits: 1 bit per dimension, not {bits}")
        return method, {"nbits": dim}, []
    if method == "python":
        return method, {"bits": bits}, []
    raise Unmappable(f"method {method!r} has no bits_per_dim mapping")
