"""The one codec interface every quantizer is measured through, and its faiss implementation.

A codec is trained on a sample, encodes base vectors to fixed-size byte codes, decodes codes back to vectors
(for distortion), holds codes for asymmetric search (raw float queries against codes), and reports its code
size. Timing the encode separately from adding codes keeps `encode_s` about the quantizer, not index bookkeeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import faiss
import numpy as np

from vq_benchmark.reports.atomic import atomic_write_bytes

FAISS_METRIC = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}


class CodecMismatch(ValueError):
    """Serialized bytes that do not hold a trained, empty codec of the expected kind (another dimension, code
    size, metric or index type): a cached file that must not be trusted."""


class Codec(Protocol):
    """What the case runner needs from a quantizer."""

    description: str

    @property
    def code_bytes(self) -> int: ...

    def train(self, x: np.ndarray) -> None: ...

    def encode(self, x: np.ndarray) -> np.ndarray: ...

    def decode(self, codes: np.ndarray) -> np.ndarray: ...

    def add_codes(self, codes: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def serialize(self) -> bytes: ...

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


class FaissCodec:
    """A faiss index used as a codec via its standalone-codec API (`sa_encode`/`sa_decode`)."""

    def __init__(self, index: faiss.Index, description: str) -> None:
        self.index = index
        self.description = description

    @classmethod
    def from_factory(cls, factory: str, dim: int, metric: str) -> FaissCodec:
        return cls(faiss.index_factory(dim, factory, FAISS_METRIC[metric]), factory)

    @property
    def code_bytes(self) -> int:
        return int(self.index.sa_code_size())

    def train(self, x: np.ndarray) -> None:
        self.index.train(np.ascontiguousarray(x, dtype=np.float32))

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self.index.sa_encode(np.ascontiguousarray(x, dtype=np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.index.sa_decode(codes)

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
        codes of the transformed vectors, so they go to the inner index and the wrapper's count is updated."""
        target = self.index
        if isinstance(target, faiss.IndexPreTransform):
            inner = faiss.downcast_index(target.index)
            inner.add_sa_codes(codes)
            target.ntotal = inner.ntotal
        else:
            target.add_sa_codes(codes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
