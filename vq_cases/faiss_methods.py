"""The faiss methods: each is a small recipe (factory pieces, padding, tuning) built into a `FaissCodec`.

A recipe is shared by the flat method and by `ivf`, which puts the same codec behind an inverted file, so
`method = "ivf"`, `inner = "pq"`, `M = 16` builds `IVF{nlist},PQ16x8np` with the padding and pre-transforms
the flat `pq` would use. `faiss` takes any factory string as is. Invalid combinations (a k-means with more
centroids than training vectors, an unparsable factory string) are found by the `skip` checks before anything
is trained; building raises MethodError with the same one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss

from vq_benchmark.vq_cases.codec import FAISS_METRIC, FaissCodec, decode_nulls, faiss_message
from vq_benchmark.vq_cases.method_spec import Built, Method, MethodError, Param, ParamValue, check_params

P = dict[str, ParamValue]
KMEANS_POINTS_PER_CENTROID = 39  # below this faiss's k-means warns
RQ_DEFAULT_BEAM = 5  # faiss ResidualQuantizer.max_beam_size
RABITQ_NULL = {"mse": "faiss RaBitQ sa_decode rebuilds only the 1-bit code, whatever nbits: not a reconstruction"}
HASH_NULL = {"mse": "binary hash codes (ITQ/LSH): faiss cannot decode them to vectors"}


@dataclass(frozen=True)
class Recipe:
    """How to build one codec: `pre` (pre-transforms, before any IVF) + `body` (the codec's factory piece);
    `multiple`: the codec needs d to be a multiple of it, so vectors are zero-padded when it is not."""

    body: str
    pre: str = ""
    multiple: int = 1
    multiple_name: str = "M"
    beam: int | None = None  # ResidualQuantizer.max_beam_size (training and encoding)


def padded_dim(dim: int, m: int) -> int:
    return math.ceil(dim / m) * m


def make_index(dim: int, factory: str, metric: str) -> faiss.Index:
    """faiss's index_factory, its errors as one MethodError line naming the string and d; an index without the
    standalone-codec API (sa_encode/sa_decode, e.g. HNSW) cannot be measured as a codec and is refused too."""
    try:
        index = faiss.index_factory(dim, factory, FAISS_METRIC[metric])
    except RuntimeError as exc:
        raise MethodError(f"faiss cannot build {factory!r} for d={dim}: {faiss_message(exc)}") from None
    try:
        index.sa_code_size()
    except RuntimeError:
        kind = type(faiss.downcast_index(index)).__name__
        raise MethodError(
            f"faiss {factory!r}: {kind} has no standalone codec (sa_encode), so no code to measure"
        ) from None
    return index


def _set_beam(index: faiss.Index, beam: int) -> None:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    index.rq.max_beam_size = beam


def build_recipe(recipe: Recipe, dim: int, metric: str, nlist: int | None = None) -> Built:
    """The codec of `recipe` (behind IVF{nlist} when given), zero-padded when d is not a multiple it needs."""
    d_pad = padded_dim(dim, recipe.multiple)
    factory = ",".join([*filter(None, [recipe.pre, f"IVF{nlist}" if nlist else ""]), recipe.body])
    index = make_index(d_pad, factory, metric)
    description, notes = factory, []
    if d_pad != dim:  # zeros spread evenly over the sub-spaces leave L2, inner products and errors unchanged
        index = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(dim, d_pad, True), index)
        description = f"Pad{d_pad},{factory}"
        notes.append(f"d={dim} not divisible by {recipe.multiple_name}={recipe.multiple}: zero-padded to {d_pad}")
    if recipe.beam is not None:
        _set_beam(index, recipe.beam)
        if recipe.beam != RQ_DEFAULT_BEAM:
            description += f" (max_beam_size={recipe.beam})"
    return Built(FaissCodec(index, description), tuple(notes), decode_nulls(index))


# ---------------------------------------------------------------- recipes


def _norm(metric: str) -> str:
    """Additive codes under L2 store ||x̂||² in one byte, or search decodes every vector (DESIGN.md)."""
    return "_Nqint8" if metric == "l2" else ""


def _pq(p: P, dim: int, metric: str) -> Recipe:
    m, nbits = p["M"], p["nbits"]
    return Recipe(f"PQ{m}x{nbits}{'' if p['polysemous'] else 'np'}", multiple=int(m))


def _pqfs(p: P, dim: int, metric: str) -> Recipe:
    return Recipe(f"PQ{p['M']}x4fs", multiple=int(p["M"]))


def _opq(p: P, dim: int, metric: str) -> Recipe:
    m, nbits = int(p["M"]), p["nbits"]
    d_out = padded_dim(dim, m)  # the rotation outputs a multiple of M dimensions
    return Recipe(f"PQ{m}x{nbits}np", pre=f"OPQ{m}" if d_out == dim else f"OPQ{m}_{d_out}")


def _sq(qtype: str) -> Callable[[P, int, str], Recipe]:
    return lambda p, dim, metric: Recipe(qtype)


def _rq(p: P, dim: int, metric: str) -> Recipe:
    return Recipe(f"RQ{p['M']}x{p['nbits']}{_norm(metric)}", beam=int(p["beam"]))


def _lsq(p: P, dim: int, metric: str) -> Recipe:
    return Recipe(f"LSQ{p['M']}x{p['nbits']}{_norm(metric)}")


def _product_aq(kind: str) -> Callable[[P, int, str], Recipe]:
    def recipe(p: P, dim: int, metric: str) -> Recipe:
        body = f"{kind}{p['nsplits']}x{p['M']}x{p['nbits']}{_norm(metric)}"
        return Recipe(body, multiple=int(p["nsplits"]), multiple_name="nsplits")

    return recipe


def _rabitq(suffix: str) -> Callable[[P, int, str], Recipe]:
    return lambda p, dim, metric: Recipe(f"RaBitQ{suffix}{p['nbits']}")


def _flat(p: P, dim: int, metric: str) -> Recipe:
    return Recipe("Flat")


def _from_recipe(recipe: Callable[[P, int, str], Recipe]) -> Callable[[P, int, str], Built]:
    return lambda p, dim, metric: build_recipe(recipe(p, dim, metric), dim, metric)


# ---------------------------------------------------------------- what cannot run


def _kmeans(n_train: int, centroids: int, what: str) -> str | None:
    if n_train < centroids:
        return f"training sample {n_train} < {centroids} vectors: {what} needs at least one per centroid"
    return None


def _nbits_reason(p: P, n_train: int, nbits: int | None = None) -> str | None:
    nbits = int(p["nbits"]) if nbits is None else nbits
    return _kmeans(n_train, 2**nbits, f"nbits={nbits} (k-means with 2^{nbits} centroids)")


def _skip_split(p: P, dim: int, n_train: int, metric: str) -> str | None:
    """pq, opq: M sub-spaces of d cannot outnumber the dimensions (padding would make most of them zeros)."""
    if int(p["M"]) > dim:
        return f"M={p['M']} > d={dim}: more sub-quantizers than dimensions"
    return _nbits_reason(p, n_train)


def _skip_pqfs(p: P, dim: int, n_train: int, metric: str) -> str | None:
    if int(p["M"]) > dim:
        return f"M={p['M']} > d={dim}: more sub-quantizers than dimensions"
    return _nbits_reason(p, n_train, 4)


def _skip_aq(p: P, dim: int, n_train: int, metric: str) -> str | None:
    if "nsplits" in p and int(p["nsplits"]) > dim:
        return f"nsplits={p['nsplits']} > d={dim}: more splits than dimensions"
    return _nbits_reason(p, n_train)


def _skip_ivf(p: P, dim: int, n_train: int, metric: str) -> str | None:
    nlist, inner = int(p["nlist"]), str(p["inner"])
    reason = _kmeans(n_train, nlist, f"nlist={nlist}")
    if reason is not None:
        return reason
    if inner in INNER:
        method = INNER[inner]
        inner_params = method.full({k: v for k, v in p.items() if k not in ("nlist", "inner")})
        return method.skip(inner_params, dim, n_train, metric) if method.skip else None
    return factory_skip_reason(f"IVF{nlist},{inner}", dim, metric, n_train)


def _skip_itq(p: P, dim: int, n_train: int, metric: str) -> str | None:
    n = int(p["nbits"])
    if n > dim:
        return f"ITQ{n} projects d={dim} to {n} bits: nbits must be <= d"
    if n_train < n:
        return f"training sample {n_train} < nbits={n}: the ITQ PCA needs at least nbits vectors"
    return None


def _train_needs(index: faiss.Index) -> list[tuple[int, str]]:
    """(vectors, what) for the k-means and PCA steps of a built index: what its training cannot go below."""
    needs: list[tuple[int, str]] = []
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.PCAMatrix | faiss.ITQTransform):
                needs.append((int(vt.d_out), f"{type(vt).__name__} to {vt.d_out} dimensions"))
        return needs + _train_needs(index.index)
    if isinstance(index, faiss.IndexIVF):
        needs.append((int(index.nlist), f"IVF nlist={index.nlist}"))
    pq = getattr(index, "pq", None)
    if isinstance(pq, faiss.ProductQuantizer):
        needs.append((int(pq.ksub), f"PQ nbits={pq.nbits} ({pq.ksub} centroids)"))
    for name in ("rq", "lsq", "prq", "plsq", "aq"):
        aq = getattr(index, name, None)
        if isinstance(aq, faiss.AdditiveQuantizer) and aq.M > 0:
            nbits = max(int(aq.nbits.at(i)) for i in range(aq.nbits.size()))
            needs.append((2**nbits, f"{type(aq).__name__} nbits={nbits} ({2**nbits} centroids)"))
            break
    return needs


def factory_skip_reason(factory: str, dim: int, metric: str, n_train: int) -> str | None:
    """Why `factory` cannot run for d and this many training vectors: faiss cannot build it, or one of its
    k-means/PCA steps needs more vectors than the sample holds."""
    try:
        index = make_index(dim, factory, metric)
    except MethodError as exc:
        return str(exc)
    for points, what in _train_needs(index):
        if n_train < points:
            return f"training sample {n_train} < {points} vectors that {what} needs ({factory})"
    return None


def _skip_faiss(p: P, dim: int, n_train: int, metric: str) -> str | None:
    return factory_skip_reason(str(p["factory"]), dim, metric, n_train)


# ---------------------------------------------------------------- builders beyond recipes


def _build_ivf(p: P, dim: int, metric: str) -> Built:
    nlist, inner = int(p["nlist"]), str(p["inner"])
    if inner in INNER:
        method = INNER[inner]
        inner_params = method.full({k: v for k, v in p.items() if k not in ("nlist", "inner")})
        recipe = RECIPES[inner](inner_params, dim, metric)
    else:  # a factory fragment: the codec after the inverted file, e.g. "PQ16x4fs" or "RQ4x8_Nqint8"
        recipe = Recipe(inner)
    return build_recipe(recipe, dim, metric, nlist=nlist)


def _ivf_extra(declared: P, extras: dict[str, object], where: str) -> P:
    """ivf's other keys are its inner method's parameters (validated as that method's); none for a fragment."""
    inner = str(declared["inner"])
    if inner in INNER:
        return check_params(INNER[inner], extras, f"{where}: ivf inner {inner!r}")
    if inner.lower() in NOT_INNER:
        raise MethodError(
            f"{where}: ivf inner {inner!r} cannot sit behind an inverted file; use one of {_inner_names()}"
        )
    if extras:
        raise MethodError(
            f"{where}: ivf inner {inner!r} is a faiss factory fragment, so parameter {sorted(extras)[0]!r} does not "
            f"apply; inner methods that take parameters: {_inner_names()}"
        )
    return {}


def _build_itq(p: P, dim: int, metric: str) -> Built:
    """ITQ rotation (PCA to nbits dims, then learned rotation) + sign bits; faiss builds LSH only as an L2 index,
    and a Hamming ranking is the same under either metric."""
    n = int(p["nbits"])
    factory = f"ITQ{n},LSH"
    index = make_index(dim, factory, "l2")
    notes = ("ranked by Hamming distance between binary codes (faiss builds ITQ+LSH only as an L2 index)",)
    return Built(FaissCodec(index, factory), notes if metric != "l2" else (), decode_nulls(index))


def _build_factory(p: P, dim: int, metric: str) -> Built:
    factory = str(p["factory"])
    index = make_index(dim, factory, metric)
    return Built(FaissCodec(index, factory), (), decode_nulls(index))


# ---------------------------------------------------------------- the methods


def _points(nbits: int | None = None) -> Callable[[P], int]:
    return lambda p: KMEANS_POINTS_PER_CENTROID * 2 ** (int(p["nbits"]) if nbits is None else nbits)


def _ivf_points(p: P) -> int:
    inner = INNER.get(str(p["inner"]))
    own = KMEANS_POINTS_PER_CENTROID * int(p["nlist"])
    if inner is None or inner.train_points is None:
        return own
    return max(own, inner.train_points(inner.full({k: v for k, v in p.items() if k not in ("nlist", "inner")})))


_M = Param("M", int, None, 1, 1024, help="sub-quantizers")
_NBITS = Param("nbits", int, 8, 1, 16, help="bits per sub-quantizer code")
_AQ_M = Param("M", int, None, 1, 256, help="codebooks (stages)")
_NSPLITS = Param("nsplits", int, 2, 1, 1024, help="independent sub-spaces, each with its own additive quantizer")
_RABITQ_BITS = Param("nbits", int, 1, 1, 9, help="bits per dimension (1: RaBitQ, 2-9: extended RaBitQ)")
_AQ_BYTES = "ceil(M*nbits/8) + 1 (L2: the norm byte _Nqint8) / ceil(M*nbits/8) (ip)"
_PAQ_BYTES = "ceil(nsplits*M*nbits/8) + 1 (L2) / ceil(nsplits*M*nbits/8) (ip)"
_RABITQ_BYTES = "ceil(d/8) + 8 (nbits 1); ceil(d/8) + 12 + ceil(d*(nbits-1)/8) + 8 (nbits 2-9)"

RECIPES: dict[str, Callable[[P, int, str], Recipe]] = {
    "pq": _pq,
    "pqfs": _pqfs,
    "opq": _opq,
    "sq8": _sq("SQ8"),
    "sq6": _sq("SQ6"),
    "sq4": _sq("SQ4"),
    "sqfp16": _sq("SQfp16"),
    "sqbf16": _sq("SQbf16"),
    "rq": _rq,
    "lsq": _lsq,
    "prq": _product_aq("PRQ"),
    "plsq": _product_aq("PLSQ"),
    "rabitq": _rabitq(""),
    "rabitqfs": _rabitq("fs"),
    "flat": _flat,
}


def _method(name: str, description: str, params: tuple[Param, ...] = (), **kw: object) -> Method:
    return Method(name, description, params, _from_recipe(RECIPES[name]), **kw)  # type: ignore[arg-type]


def _sq_method(name: str, what: str, bytes_: str) -> Method:
    return _method(name, what, code_bytes=bytes_)


FAISS_METHODS: tuple[Method, ...] = (
    _method(
        "pq",
        "product quantizer, M sub-quantizers of nbits each (ADC search; polysemous training only when asked)",
        (_M, _NBITS),
        options=(Param("polysemous", bool, False, help="polysemous training (slow; ADC codes unchanged)"),),
        train_points=_points(),
        skip=_skip_split,
        grid={"M": (8, 16, 32), "nbits": (4, 8, 12)},
        code_bytes="ceil(M*nbits/8)",
    ),
    _method(
        "pqfs",
        "product quantizer with 4-bit codes searched by SIMD fast-scan (PQ{M}x4fs)",
        (_M,),
        train_points=_points(4),
        skip=_skip_pqfs,
        grid={"M": (16, 32, 64)},
        code_bytes="ceil(M/2)",
    ),
    _method(
        "opq",
        "OPQ rotation + product quantizer",
        (_M, _NBITS),
        train_points=_points(),
        skip=_skip_split,
        grid={"M": (8, 16, 32), "nbits": (8,)},
        code_bytes="ceil(M*nbits/8)",
    ),
    _sq_method("sq8", "8-bit scalar quantizer per dimension (per-dimension min/max)", "d"),
    _sq_method("sq6", "6-bit scalar quantizer per dimension", "ceil(6*d/8)"),
    _sq_method("sq4", "4-bit scalar quantizer per dimension", "ceil(d/2)"),
    _sq_method("sqfp16", "float16 per dimension", "2*d"),
    _sq_method("sqbf16", "bfloat16 per dimension", "2*d"),
    _method(
        "rq",
        "residual quantizer, M stages of nbits (beam search); the L2 norm stored in one byte",
        (_AQ_M, _NBITS),
        options=(Param("beam", int, RQ_DEFAULT_BEAM, 1, 1024, help="beam size of training and encoding"),),
        train_points=_points(),
        skip=_skip_aq,
        grid={"M": (4, 8, 16), "nbits": (8,)},
        code_bytes=_AQ_BYTES,
    ),
    _method(
        "lsq",
        "local search quantizer, M codebooks of nbits; the L2 norm stored in one byte",
        (_AQ_M, _NBITS),
        train_points=_points(),
        skip=_skip_aq,
        grid={"M": (4, 8), "nbits": (8,)},
        code_bytes=_AQ_BYTES,
    ),
    *(
        _method(
            name,
            f"product {kind}: nsplits sub-spaces, each an {inner} of M {stages} of nbits",
            (_NSPLITS, _AQ_M, _NBITS),
            train_points=_points(),
            skip=_skip_aq,
            grid={"nsplits": (2, 4), "M": (2, 4), "nbits": (8,)},
            code_bytes=_PAQ_BYTES,
        )
        for name, kind, inner, stages in (
            ("prq", "residual quantizer", "RQ", "stages"),
            ("plsq", "local search quantizer", "LSQ", "codebooks"),
        )
    ),
    _method(
        "rabitq",
        "RaBitQ (nbits 1) and extended RaBitQ (nbits 2-9), faiss RaBitQ{nbits}",
        (_RABITQ_BITS,),
        null_metrics=RABITQ_NULL,
        grid={"nbits": (1, 2, 4, 8)},
        code_bytes=_RABITQ_BYTES,
    ),
    _method(
        "rabitqfs",
        "RaBitQ / extended RaBitQ with SIMD fast-scan search, faiss RaBitQfs{nbits}",
        (_RABITQ_BITS,),
        null_metrics=RABITQ_NULL,
        grid={"nbits": (1, 4)},
        code_bytes=_RABITQ_BYTES,
    ),
    Method(
        "ivf",
        "inverted file with nlist lists around an inner codec (a method name + its parameters, or a factory piece)",
        (
            Param("nlist", int, None, 1, 1 << 24, help="inverted lists (k-means centroids)"),
            Param("inner", str, None, help="method name (pq, sq8, rabitq, ...) or factory piece (PQ16x4fs)"),
        ),
        _build_ivf,
        train_points=_ivf_points,
        skip=_skip_ivf,
        extra=_ivf_extra,
        grid={"nlist": (256, 1024, 4096), "inner": ("sq8", "rabitq")},
        code_bytes="list id (0 bytes for nlist 1, 1 up to 256, 2 up to 65536, ...) + the inner codec's code",
    ),
    Method(
        "itq_lsh",
        "ITQ rotation + sign bits (binary hash, Hamming search; cannot decode), faiss ITQ{nbits},LSH",
        (Param("nbits", int, None, 1, 1 << 16, help="code bits, at most d"),),
        _build_itq,
        null_metrics=HASH_NULL,
        skip=_skip_itq,
        grid={"nbits": (64, 128, 256)},
        code_bytes="ceil(nbits/8)",
    ),
    Method(
        "faiss",
        "any faiss index_factory string, built with the dataset's d and metric",
        (Param("factory", str, None, help="e.g. OPQ16_64,IVF256,PQ16x4fs"),),
        _build_factory,
        skip=_skip_faiss,
        grid={"factory": ("OPQ16_64,IVF256,PQ16x4fs",)},
        code_bytes="the index's sa_code_size()",
    ),
)

_BY_NAME = {m.name: m for m in FAISS_METHODS}
INNER: dict[str, Method] = {
    **{name: _BY_NAME[name] for name in RECIPES if name in _BY_NAME},
    "flat": Method("flat", "uncompressed float32 vectors (IVF-Flat)", (), _from_recipe(_flat), code_bytes="4*d"),
}
NOT_INNER = ("ivf", "itq_lsh", "faiss", "python")


def _inner_names() -> str:
    return ", ".join(sorted(INNER))
