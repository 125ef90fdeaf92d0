"""The one codec interface every quantizer is measured through, and its faiss implementation.

A codec is trained on a sample, encodes base vectors to fixed-size byte codes, decodes codes back to vectors
(for distortion), holds codes for asymmetric search (raw float queries against codes), and reports its code
size. Timing the encode separately from adding codes keeps `encode_s` about the quantizer, not index bookkeeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from vq_benchmark.reports.atomic import atomic_write_bytes

FAISS_METRIC = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}


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
