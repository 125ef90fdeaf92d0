"""Quantizer methods the sweep can name: their parameters, defaults and how to build the codec.

Adding a method is one `Method` entry here (see docs/ADDING_A_QUANTIZER.md). Parameters are validated when the
sweep is read, so a typo fails at collection with a clear line instead of in the middle of a sweep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import faiss

from vq_benchmark.vq_cases.codec import FAISS_METRIC, Codec, FaissCodec

ParamValue = int | str


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: ParamValue | None = None  # None: required
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Built:
    codec: Codec
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    params: tuple[Param, ...]
    build: Callable[[Mapping[str, ParamValue], int, str], Built]
    null_metrics: Mapping[str, str] = field(default_factory=dict)  # metric -> why it does not apply
    min_train: Callable[[Mapping[str, ParamValue]], int] | None = None  # faiss's recommended sample size


def _padded_dim(dim: int, m: int) -> int:
    return math.ceil(dim / m) * m


def _build_pq(params: Mapping[str, ParamValue], dim: int, metric: str) -> Built:
    """PQ without polysemous training (it costs ~90% of train time and does not change ADC codes).

    When M does not divide d the vectors are zero-padded, spread evenly over the sub-spaces, which leaves L2
    distances, inner products and reconstruction error unchanged."""
    m, nbits = int(params["M"]), int(params["nbits"])
    inner = f"PQ{m}x{nbits}np"
    d_pad = _padded_dim(dim, m)
    if d_pad == dim:
        return Built(FaissCodec.from_factory(inner, dim, metric))
    pq = faiss.index_factory(d_pad, inner, FAISS_METRIC[metric])
    index = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(dim, d_pad, True), pq)
    return Built(FaissCodec(index, f"Pad{d_pad},{inner}"), (f"d={dim} not divisible by M={m}: zero-padded to {d_pad}",))


def _build_opq(params: Mapping[str, ParamValue], dim: int, metric: str) -> Built:
    """OPQ rotation then PQ; the rotation outputs a multiple of M dimensions when M does not divide d."""
    m, nbits = int(params["M"]), int(params["nbits"])
    d_out = _padded_dim(dim, m)
    opq = f"OPQ{m}" if d_out == dim else f"OPQ{m}_{d_out}"
    return Built(FaissCodec.from_factory(f"{opq},PQ{m}x{nbits}np", dim, metric))


def _sq(qtype: str) -> Callable[[Mapping[str, ParamValue], int, str], Built]:
    def build(params: Mapping[str, ParamValue], dim: int, metric: str) -> Built:
        return Built(FaissCodec.from_factory(qtype, dim, metric))

    return build


def _pq_min_train(params: Mapping[str, ParamValue]) -> int:
    return 39 * 2 ** int(params["nbits"])  # faiss warns below 39 points per centroid


_PQ_PARAMS = (Param("M", int, None, 1, 1024), Param("nbits", int, 8, 1, 16))

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "pq", "product quantizer, M sub-quantizers of nbits each", _PQ_PARAMS, _build_pq, min_train=_pq_min_train
        ),
        Method("opq", "OPQ rotation + product quantizer", _PQ_PARAMS, _build_opq, min_train=_pq_min_train),
        Method("sq8", "8-bit scalar quantizer per dimension", (), _sq("SQ8")),
        Method("sq4", "4-bit scalar quantizer per dimension", (), _sq("SQ4")),
        Method("sqfp16", "float16 per dimension", (), _sq("SQfp16")),
    )
}


class MethodError(ValueError):
    """An unknown method or bad parameter in a sweep; the message names the sweep file."""


def get_method(name: str, where: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise MethodError(f"{where}: unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def check_params(method: Method, params: Mapping[str, object], where: str) -> dict[str, ParamValue]:
    """Validate one parameter combination and fill defaults, in the method's declared order."""
    known = {p.name for p in method.params}
    unknown = sorted(set(params) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise MethodError(f"{where}: method {method.name!r} has no parameter {unknown[0]!r}; allowed: {allowed}")
    out: dict[str, ParamValue] = {}
    for p in method.params:
        value = params.get(p.name, p.default)
        if value is None:
            raise MethodError(f"{where}: method {method.name!r} needs parameter {p.name!r}")
        if type(value) is not p.type:
            raise MethodError(f"{where}: {method.name} {p.name} must be {p.type.__name__}, got {value!r}")
        if isinstance(value, int) and (
            (p.minimum is not None and value < p.minimum) or (p.maximum is not None and value > p.maximum)
        ):
            raise MethodError(f"{where}: {method.name} {p.name}={value} outside [{p.minimum}, {p.maximum}]")
        out[p.name] = value
    return out
