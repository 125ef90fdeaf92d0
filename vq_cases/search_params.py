"""Search-time parameters: knobs a trained and encoded codec can change without training again.

A sweep entry writes them as `search.nprobe = [1, 4, 16]` (a TOML dotted key, i.e. a `search` table). Which ones
a configuration takes is known when the sweep is read, so a typo or a knob the codec does not have is one
MethodError line before any vector is loaded:

- `nprobe` (int >= 1): inverted lists an IVF search visits (`ivf`, and `faiss` factory strings with an IVF);
- `qb` (int 0..8): bits a RaBitQ query is quantized to, 0 = float queries (`rabitq`, `rabitqfs`, an ivf inner
  RaBitQ, factory strings with RaBitQ); faiss aborts the process above 8, so the range is enforced here;
- `max_beam_size` (int >= 1): the beam of residual-quantizer encoding (`rq`, `prq`, an ivf inner rq/prq, factory
  strings with RQ/PRQ). faiss's ADC search has no beam: the codebooks are reused and the base is encoded again
  with the new beam, so each value costs an encoding but no training;
- a python quantizer's own keyword arguments of `search(queries, k, **kw)`.

`vq_cases/codec.py` (`FaissCodec.set_search_params`) and `vq_cases/python_codec.py` apply them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass

from vq_benchmark.vq_cases.faiss_methods import INNER
from vq_benchmark.vq_cases.method_spec import MethodError, ParamValue
from vq_benchmark.vq_cases.python_codec import QuantizerError, load_quantizer_class


@dataclass(frozen=True)
class SearchParam:
    name: str
    minimum: int
    maximum: int
    help: str
    encodes: bool = False  # True: changing it re-encodes the base (no retraining)


FAISS_SEARCH_PARAMS: dict[str, SearchParam] = {
    p.name: p
    for p in (
        SearchParam("nprobe", 1, 1 << 24, "inverted lists visited per query (IVF)"),
        SearchParam("qb", 0, 8, "RaBitQ query quantization bits (0: float queries)"),
        SearchParam("max_beam_size", 1, 1024, "residual quantizer encoding beam (re-encodes, no retraining)", True),
    )
}
ENCODE_PARAMS = frozenset(p.name for p in FAISS_SEARCH_PARAMS.values() if p.encodes)
_RQ = re.compile(r"(^|[^L])RQ")  # RQ and PRQ, not LSQ/PLSQ


def _factory_keys(factory: str) -> set[str]:
    keys = set()
    if "IVF" in factory:
        keys.add("nprobe")
    if "RaBitQ" in factory:
        keys.add("qb")
    if _RQ.search(factory):
        keys.add("max_beam_size")
    return keys


def faiss_search_keys(method: str, params: Mapping[str, ParamValue]) -> set[str]:
    """The faiss search parameters a configuration of `method` takes."""
    if method in ("rabitq", "rabitqfs"):
        return {"qb"}
    if method in ("rq", "prq"):
        return {"max_beam_size"}
    if method == "faiss":
        return _factory_keys(str(params.get("factory", "")))
    if method == "ivf":
        inner = str(params.get("inner", ""))
        return {"nprobe"} | (faiss_search_keys(inner, params) if inner in INNER else _factory_keys(inner))
    return set()


def _python_search_keys(ref: str, where: str) -> tuple[set[str], bool]:
    """The keyword parameters of the quantizer's search() beyond (queries, k), and whether it takes **kwargs."""
    try:
        cls = load_quantizer_class(ref)
    except QuantizerError as exc:
        raise MethodError(f"{where}: search parameters need the quantizer class: {exc}") from None
    search = getattr(cls, "search", None)
    if not callable(search):
        raise MethodError(
            f"{where}: quantizer {ref!r} has no search(): it is searched by decoding, which takes no search parameters"
        )
    try:
        sig = inspect.signature(search)
    except (TypeError, ValueError):
        return set(), True
    names = list(sig.parameters.values())[3:]  # self, queries, k
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in names)
    keys = {p.name for p in names if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return keys, var_kw


def check_search_params(
    method: str, params: Mapping[str, ParamValue], search: Mapping[str, object], where: str
) -> dict[str, ParamValue]:
    """Validate one combination of search parameters for a configuration; returns them in the given order."""
    if not search:
        return {}
    clash = sorted(set(search) & set(params))
    if clash:
        raise MethodError(f"{where}: search.{clash[0]} is a training parameter of {method}; set it outside search")
    if method == "python":
        keys, any_key = _python_search_keys(str(params["quantizer"]), where)
        out: dict[str, ParamValue] = {}
        for key, value in search.items():
            if not key.isidentifier() or (key not in keys and not any_key):
                allowed = ", ".join(sorted(keys)) or "none"
                raise MethodError(
                    f"{where}: quantizer {params['quantizer']!r} search() takes no keyword {key!r}; allowed: {allowed}"
                )
            if not isinstance(value, int | float | str | bool):
                raise MethodError(f"{where}: search.{key} must be a number, string or bool, got {value!r}")
            out[key] = value
        return out
    allowed_keys = faiss_search_keys(method, params)
    out = {}
    for key, value in search.items():
        if key not in allowed_keys:
            allowed = ", ".join(sorted(allowed_keys)) or "none"
            raise MethodError(f"{where}: method {method!r} has no search parameter {key!r}; allowed: {allowed}")
        spec = FAISS_SEARCH_PARAMS[key]
        if type(value) is not int:
            raise MethodError(f"{where}: search.{key} must be int, got {value!r}")
        if not spec.minimum <= value <= spec.maximum:
            raise MethodError(f"{where}: search.{key}={value} outside [{spec.minimum}, {spec.maximum}]")
        out[key] = value
    return out


def search_notes(method: str, params: Mapping[str, ParamValue], search: Mapping[str, ParamValue]) -> tuple[str, ...]:
    """Caveats worth keeping next to the numbers (an nprobe beyond nlist scans every list)."""
    nlist, nprobe = params.get("nlist"), search.get("nprobe")
    if method == "ivf" and isinstance(nlist, int) and isinstance(nprobe, int) and nprobe > nlist:
        return (f"nprobe={nprobe} > nlist={nlist}: faiss visits all {nlist} lists",)
    return ()
