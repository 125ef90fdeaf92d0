"""The one codec interface every quantizer is measured through, and its faiss implementation.

A codec is trained on a sample, encodes base vectors to fixed-size byte codes, decodes codes back to vectors
(for distortion), holds codes for asymmetric search (raw float queries against codes), and reports its code
size. Timing the encode separately from adding codes keeps `encode_s` about the quantizer, not index bookkeeping.

Not every faiss index can be handed precomputed codes: `add_sa_codes` is unimplemented for the fast-scan
layouts, and on IVF fast-scan indexes (IVFPQ/IVFRaBitQ fast-scan) faiss 1.15.1 accepts the call and then
corrupts the heap or silently stores garbage. `FaissCodec` therefore picks a route per index type (see
`add_route`): codes directly; codes through a non-fast-scan twin for flat PQ/RaBitQ fast-scan; or, where no
faithful route exists, `adds_vectors` is True and the runner must call `add_vectors` with the base vectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import faiss
import numpy as np

from vq_benchmark.reports.atomic import atomic_write_bytes

FAISS_METRIC = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}
_FAISS_LOCATION = re.compile(r"^Error in .*? at \S+:\d+: (Error: )?")
AddRoute = Literal["codes", "fastscan_twin", "vectors"]
SearchValue = int | float | str | bool
_TRAINING_SEED: ContextVar[int | None] = ContextVar("vq_training_seed", default=None)


def faiss_message(exc: BaseException, limit: int = 200) -> str:
    """faiss errors start with a C++ signature and source location: the part a user can act on, on one line."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return _FAISS_LOCATION.sub("", text)[:limit]


class CodecError(ValueError):
    """A codec that cannot do what the runner asked (train, decode, add codes), in one line naming the codec."""


class CodecMismatch(ValueError):
    """Serialized bytes that do not hold a trained, empty codec of the expected kind (another dimension, code
    size, metric or index type): a cached file that must not be trusted."""


class Codec(Protocol):
    """What the case runner needs from a quantizer.

    Besides these, the runner reads two optional attributes with getattr: `search_mode` ("asymmetric": raw
    queries against codes, the default; "symmetric": queries are encoded too, e.g. binary hashes;
    "decode-then-search": exact search over decoded vectors) and `adds_vectors` (True: `add_codes` cannot be
    used, call `add_vectors(x)` with the base vectors, chunk by chunk, instead). `serialize` may return None
    when the codec has no file format (python quantizers): nothing is cached or written then.
    """

    description: str

    @property
    def code_bytes(self) -> int: ...

    def train(self, x: np.ndarray) -> None: ...

    def encode(self, x: np.ndarray) -> np.ndarray: ...

    def decode(self, codes: np.ndarray) -> np.ndarray: ...

    def add_codes(self, codes: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def serialize(self) -> bytes | None: ...

    def save(self, path: Path) -> None: ...


@runtime_checkable
class Restorable(Protocol):
    """A codec that can be rebuilt from its `serialize` bytes, which lets the codec cache skip training.

    `restore` is called on a freshly built, untrained codec of the same method and parameters; it returns the
    trained codec the bytes hold, or raises CodecMismatch (or the reader's own error) when they hold anything
    else. Codecs without it are simply trained every time.
    """

    def restore(self, blob: bytes) -> Codec: ...


def _index_signature(index: faiss.Index) -> tuple[object, ...]:
    """What must agree between a built and a loaded index for the loaded one to stand in for training."""
    index = faiss.downcast_index(index)
    sig: tuple[object, ...] = (type(index).__name__, int(index.d), int(index.metric_type), int(index.sa_code_size()))
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):  # by shape only: faiss reads an OPQMatrix back as a LinearTransform
            vt = index.chain.at(i)
            sig += ((int(vt.d_in), int(vt.d_out)),)
        sig += (_index_signature(index.index),)
    return sig


def _mismatch(loaded: faiss.Index, built: faiss.Index) -> str | None:
    """How a loaded index differs from the built one, in a few words (None: it can stand in for training)."""
    got, want = _index_signature(loaded), _index_signature(built)
    if got == want:
        return None
    if got[:4] != want[:4]:
        return f"holds {_describe(got)}, expected {_describe(want)}"
    return f"holds {_describe(got)} with transforms/inner index {got[4:]}, expected {want[4:]}"


def _describe(sig: tuple[object, ...]) -> str:
    name, d, metric, code = sig[:4]
    return f"{name} d={d} metric={metric} code={code} B"


def _inner(index: faiss.Index) -> faiss.Index:
    """The index a pre-transform wraps (downcast), or the index itself."""
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index


def add_route(index: faiss.Index) -> AddRoute:
    """How precomputed codes reach `index`: "codes" (add_sa_codes, verified for flat-code and non-fast-scan IVF
    indexes), "fastscan_twin" (flat PQ/RaBitQ fast-scan: codes go to a plain twin index, which is converted and
    merged in), or "vectors" (no faithful route: IVF fast-scan, additive fast-scan, graph and other indexes)."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexIVFFastScan):
        return "vectors"
    if isinstance(inner, faiss.IndexPQFastScan | faiss.IndexRaBitQFastScan):
        return "fastscan_twin"
    if isinstance(inner, faiss.IndexFlatCodes | faiss.IndexIVF):
        return "codes"
    return "vectors"


def _fastscan_twin(fs: faiss.Index, codes: np.ndarray) -> faiss.Index:
    """A fast-scan index holding `codes`, built through the plain index with the same quantizer (which accepts
    sa codes), for merging into `fs`. Verified equal, ids and distances, to `fs.add` of the vectors."""
    if isinstance(fs, faiss.IndexPQFastScan):
        twin = faiss.IndexPQ(fs.d, fs.pq.M, fs.pq.nbits, fs.metric_type)
        twin.pq = fs.pq
        twin.is_trained = True
        twin.add_sa_codes(codes)
        return faiss.IndexPQFastScan(twin, fs.bbs)
    twin = faiss.IndexRaBitQ(fs.d, fs.metric_type, int(fs.rabitq.nb_bits))
    twin.rabitq = fs.rabitq
    twin.center = fs.center
    twin.is_trained = True
    twin.add_sa_codes(codes)
    return faiss.IndexRaBitQFastScan(twin, fs.bbs)


def _walk(index: faiss.Index) -> list[object]:
    """The index, its pre-transforms and nested indexes (IVF coarse quantizers excluded), downcast."""
    index = faiss.downcast_index(index)
    out: list[object] = [index]
    if isinstance(index, faiss.IndexPreTransform):
        out += [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]
        out += _walk(index.index)
    return out


def decode_nulls(index: faiss.Index) -> dict[str, str]:
    """Metrics that must be NULL because `sa_decode` of this index is no faithful reconstruction."""
    names = [type(part).__name__ for part in _walk(index)]
    if any("ITQ" in n for n in names) or any("LSH" in n for n in names):
        return {"mse": "binary hash codes (ITQ/LSH): faiss cannot decode them to vectors"}
    if any("RaBitQ" in n for n in names):
        return {"mse": "faiss RaBitQ sa_decode rebuilds only the 1-bit code, whatever nbits: not a reconstruction"}
    return {}


def search_mode_of(index: faiss.Index) -> str:
    """Binary hashes compare the query's hash with the codes ("symmetric"); the rest score raw queries."""
    return "symmetric" if any("LSH" in type(part).__name__ for part in _walk(index)) else "asymmetric"


@contextmanager
def training_seed(seed: int | None) -> Iterator[None]:
    """Within this block `FaissCodec.train` seeds faiss's own randomness (k-means initialisation and
    subsampling of IVF, PQ and RQ, LSQ's random seed) with `seed`, so one training seed shapes both the sample and
    the codebooks. None leaves faiss's defaults."""
    token = _TRAINING_SEED.set(seed)
    try:
        yield
    finally:
        _TRAINING_SEED.reset(token)


def _kmeans_seed(value: int) -> int:
    return int(value) % (2**31)  # faiss stores the seeds as C int


def seed_index(index: faiss.Index, seed: int) -> None:
    """Set every training seed faiss exposes in `index`: IVF coarse k-means, PQ, RQ/PRQ stages (ClusteringParameters
    seeds), LSQ/PLSQ (random_seed), the ITQ rotation. RaBitQ and SQ have nothing random to seed."""
    s = _kmeans_seed(seed)
    for part in _walk(index):
        if isinstance(part, faiss.IndexIVF):
            part.cp.seed = s
        if isinstance(part, faiss.ITQTransform):
            part.itq.seed = s
        pq = getattr(part, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer):
            pq.cp.seed = s
        for rq in _residual_quantizers(part):
            rq.cp.seed = s
        lsq = getattr(part, "lsq", None)
        plsq = getattr(part, "plsq", None)
        lsqs = [lsq] if isinstance(lsq, faiss.LocalSearchQuantizer) else []
        if isinstance(plsq, faiss.ProductLocalSearchQuantizer):
            lsqs += [faiss.downcast_AdditiveQuantizer(plsq.subquantizer(i)) for i in range(plsq.nsplits)]
        for q in lsqs:
            q.random_seed = s


def _residual_quantizers(index: object) -> list[faiss.ResidualQuantizer]:
    """The residual quantizers of an index: its `rq`, or each split of a product RQ."""
    rq = getattr(index, "rq", None)
    if isinstance(rq, faiss.ResidualQuantizer):
        return [rq]
    prq = getattr(index, "prq", None)
    if isinstance(prq, faiss.ProductResidualQuantizer):
        return [faiss.downcast_AdditiveQuantizer(prq.subquantizer(i)) for i in range(prq.nsplits)]
    return []


class FaissCodec:
    """A faiss index used as a codec via its standalone-codec API (`sa_encode`/`sa_decode`)."""

    def __init__(self, index: faiss.Index, description: str) -> None:
        self.index = index
        self.description = description
        self.search_mode = search_mode_of(index)
        self.route: AddRoute = add_route(index)
        self._search_defaults: dict[str, SearchValue] = {}  # what set_search_params changed, as it was

    def _search_targets(self, name: str) -> list[object]:
        """The faiss objects holding search parameter `name` (none: the index does not have it)."""
        inner = _inner(self.index)
        if name == "nprobe":
            return [inner] if isinstance(inner, faiss.IndexIVF) else []
        if name == "qb":
            return [inner] if "RaBitQ" in type(inner).__name__ and hasattr(inner, "qb") else []
        if name == "max_beam_size":
            return list(_residual_quantizers(inner))
        return []

    def set_search_params(self, params: Mapping[str, SearchValue]) -> None:
        """Search (and, for `max_beam_size`, encode) with exactly `params`: IVF `nprobe`, RaBitQ query bits `qb`,
        residual-quantizer `max_beam_size`; a parameter set by an earlier call and absent now goes back to its
        value before that call. A parameter this index does not have is a CodecError (one line)."""
        for name in [n for n in self._search_defaults if n not in params]:
            for target in self._search_targets(name):
                setattr(target, name, self._search_defaults[name])
            del self._search_defaults[name]
        for name, value in params.items():
            targets = self._search_targets(name)
            if not targets:
                kind = type(_inner(self.index)).__name__
                raise CodecError(f"faiss {self.description}: {kind} has no search parameter {name!r}")
            self._search_defaults.setdefault(name, getattr(targets[0], name))
            for target in targets:
                setattr(target, name, value)

    @classmethod
    def from_factory(cls, factory: str, dim: int, metric: str) -> FaissCodec:
        return cls(faiss.index_factory(dim, factory, FAISS_METRIC[metric]), factory)

    @property
    def adds_vectors(self) -> bool:
        """True when codes cannot be added faithfully: the runner must call `add_vectors` instead."""
        return self.route == "vectors"

    @property
    def code_bytes(self) -> int:
        return int(self.index.sa_code_size())

    def train(self, x: np.ndarray) -> None:
        seed = _TRAINING_SEED.get()
        if seed is not None:
            seed_index(self.index, seed)
        try:
            self.index.train(np.ascontiguousarray(x, dtype=np.float32))
        except RuntimeError as exc:
            raise CodecError(f"faiss {self.description}: training failed: {faiss_message(exc)}") from None

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.index.sa_encode(np.ascontiguousarray(x, dtype=np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        try:
            return self.index.sa_decode(np.ascontiguousarray(codes, dtype=np.uint8))
        except RuntimeError as exc:
            raise CodecError(f"faiss {self.description}: cannot decode codes: {faiss_message(exc)}") from None

    def serialize(self) -> bytes:
        """The index as faiss's own file format (never pickle); take it before codes are added for codebooks only."""
        return faiss.serialize_index(self.index).tobytes()

    def save(self, path: Path) -> None:
        """Write the index atomically: a full disk or a crash never leaves a truncated file at ``path``."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.serialize())

    def restore(self, blob: bytes) -> FaissCodec:
        """The trained codec held by `blob` (faiss's format), checked against this built one so that a foreign
        or stale file is rejected instead of measured; raises CodecMismatch, or faiss's RuntimeError for bytes
        it cannot read."""
        index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        mismatch = _mismatch(index, self.index)
        if mismatch is not None:
            raise CodecMismatch(mismatch)
        if not index.is_trained or index.ntotal != 0:
            raise CodecMismatch(f"holds an index with is_trained={index.is_trained}, ntotal={index.ntotal}")
        return FaissCodec(index, self.description)

    def add_codes(self, codes: np.ndarray) -> None:
        """Add precomputed codes without re-encoding. A pre-transform wrapper's codes are its inner index's
        codes of the transformed vectors, so they go to the inner index and the wrapper's count is updated.
        Raises CodecError for an index with no faithful route (`adds_vectors`): call `add_vectors` there."""
        if self.route == "vectors":
            kind = type(_inner(self.index)).__name__
            raise CodecError(
                f"faiss {self.description}: {kind} cannot take precomputed codes (faiss add_sa_codes is missing or "
                "broken for it); add the base vectors with add_vectors (codec.adds_vectors is True)"
            )
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        wrapper = faiss.downcast_index(self.index)
        wrapped = isinstance(wrapper, faiss.IndexPreTransform)
        target = faiss.downcast_index(wrapper.index) if wrapped else wrapper
        if self.route == "fastscan_twin":
            target.merge_from(_fastscan_twin(target, codes), target.ntotal)
        else:
            target.add_sa_codes(codes)
        if wrapped:
            wrapper.ntotal = target.ntotal

    def add_vectors(self, x: np.ndarray) -> None:
        """Add base vectors (faiss encodes them again, exactly as `encode` did): the route for indexes that
        cannot take codes. Works for every index; call it chunk by chunk, ids continue across calls."""
        self.index.add(np.ascontiguousarray(x, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
