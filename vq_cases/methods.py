"""Quantizer methods the sweep can name: their parameters, defaults and how to build the codec.

The faiss methods live in vq_cases/faiss_methods.py (pq, pqfs, opq, sq*, rq, lsq, prq, plsq, rabitq, rabitqfs,
ivf, itq_lsh, and `faiss` for any factory string), python quantizers in vq_cases/python_codec.py (`python`).
Parameters are validated when the sweep is read, so a typo fails at collection with a clear line instead of in
the middle of a sweep; whether a valid configuration fits a dataset (d, training sample size) is `skip_reason`,
asked before a case builds its codec. See docs/ADDING_A_QUANTIZER.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from vq_benchmark.vq_cases.codec import FAISS_METRIC, Codec, CodecError, FaissCodec
from vq_benchmark.vq_cases.faiss_methods import FAISS_METHODS, INNER, factory_skip_reason
from vq_benchmark.vq_cases.method_spec import Built, Method, MethodError, Param, ParamValue, check_params
from vq_benchmark.vq_cases.python_codec import PYTHON_METHOD, QuantizerError

__all__ = [
    "BUILD_ERRORS",
    "FAISS_METRIC",
    "INNER",
    "METHODS",
    "Built",
    "Codec",
    "CodecError",
    "FaissCodec",
    "Method",
    "MethodError",
    "Param",
    "ParamValue",
    "QuantizerError",
    "check_params",
    "factory_skip_reason",
    "get_method",
    "methods_table",
    "null_metrics",
    "skip_reason",
]

METHODS: dict[str, Method] = {m.name: m for m in (*FAISS_METHODS, PYTHON_METHOD)}

# What building, training or running one case can raise for reasons a user can act on: each is one line, for
# that case only (the test body reports it as the case's failure, without a traceback).
BUILD_ERRORS: tuple[type[Exception], ...] = (MethodError, QuantizerError, CodecError)


def get_method(name: str, where: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise MethodError(f"{where}: unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def skip_reason(
    method_name: str, params: Mapping[str, ParamValue], dim: int, n_train: int, metric: str = "l2"
) -> str | None:
    """Why this configuration cannot run on a dataset of dimension `dim` with `n_train` training vectors (one
    line), or None when it can: PQ with more sub-quantizers than dimensions, a k-means (PQ/RQ nbits, IVF nlist)
    with more centroids than training vectors, ITQ with more bits than dimensions, a factory string faiss cannot
    build for this d. Python quantizers are never skipped here (their errors come at build time)."""
    method = get_method(method_name, "skip_reason")
    if method.skip is None:
        return None
    return method.skip(method.full(params), int(dim), int(n_train), metric)


def null_metrics(method_name: str, built: Built) -> dict[str, str]:
    """The metrics a case must store as NULL (metric -> reason): the method's declaration, then the built
    configuration's own (a factory string or ivf inner codec holding RaBitQ or LSH, a quantizer's
    `null_metrics`)."""
    return {**METHODS[method_name].null_metrics, **built.null_metrics}


def methods_table() -> str:
    """A markdown table of every method: parameters (defaults, ranges), a grid to start from, code bytes,
    NULL metrics. Generated from the declarations, so the docs can be checked against it."""
    lines = [
        "| method | parameters | grid to start from | code bytes | NULL metrics |",
        "|---|---|---|---|---|",
    ]
    for m in METHODS.values():
        params = []
        for p in (*m.params, *m.options):
            span = f" {p.minimum}..{p.maximum}" if p.minimum is not None else ""
            default = "required" if p.default is None else f"default {p.default}"
            option = " (option)" if p in m.options else ""
            params.append(f"`{p.name}` {p.type.__name__}, {default}{span}{option}")
        if m.extra is not None:
            params.append("+ " + ("the inner method's parameters" if m.name == "ivf" else "constructor arguments"))
        grid = ", ".join(f"{k}={list(v)}" for k, v in m.grid.items()) or "-"
        nulls = ", ".join(m.null_metrics) or "-"
        lines.append(f"| `{m.name}` | {'; '.join(params) or 'none'} | {grid} | {m.code_bytes} | {nulls} |")
    return "\n".join(lines)
