"""LVQ: locally-adaptive vector quantization (Aguerrebere et al., "Similarity search in the blink of an eye
with compressed indices", VLDB 2023), one level, in numpy.

The global mean is subtracted; each centred vector r then gets its own range: lo = min_j r_j and
step = (max_j r_j - lo) / (2**bits - 1), stored as two float32 (8 bytes), and every coordinate is stored as
round((r_j - lo) / step) in `bits` bits, bit-packed. Code: [lo float32 | step float32 | ceil(d*bits/8) bytes].
Each coordinate is reconstructed to within step / 2.

Search is asymmetric: the float query against the codes, without building the decoded vectors,
    <q, x̂> = <q, mean> + lo * sum(q) + step * <q, c>      and      ||q - x̂||² = ||q||² - 2 <q, x̂> + ||x̂||²
with ||x̂||² computed once when the codes are added.
"""

from __future__ import annotations

import numpy as np

from vq_benchmark.vq_cases.quantizers import pack_bits, packed_bytes, unpack_bits

HEADER_BYTES = 8  # lo and step, float32 each
SEARCH_ROWS = 16384  # codes unpacked per search step


class LVQ:
    """Per-vector scalar quantization around the global mean, `bits` (1..8) bits per dimension."""

    def __init__(self, bits: int = 8, metric: str = "l2") -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
        if metric not in ("l2", "ip"):
            raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
        self.bits, self.metric = bits, metric
        self.levels = 2**bits - 1
        self.mean: np.ndarray | None = None
        self._db: list[np.ndarray] = []
        self._db_norms: list[np.ndarray] = []

    @property
    def dim(self) -> int:
        if self.mean is None:
            raise RuntimeError("LVQ: call fit() first")
        return int(self.mean.shape[0])

    @property
    def code_bytes(self) -> int | None:
        return None if self.mean is None else packed_bytes(self.dim, self.bits) + HEADER_BYTES

    def fit(self, x: np.ndarray) -> None:
        self.mean = np.asarray(x, dtype=np.float64).mean(axis=0).astype(np.float32)

    def compress(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError("LVQ: call fit() first")
        r = np.asarray(x, dtype=np.float64) - self.mean
        lo = r.min(axis=1).astype(np.float32)
        step = ((r.max(axis=1) - lo) / self.levels).astype(np.float32)
        safe = np.where(step > 0, step, 1.0).astype(np.float64)
        q = np.rint((r - lo[:, None].astype(np.float64)) / safe[:, None])
        header = np.stack([lo, step], axis=1).view(np.uint8)  # n x 8
        return np.hstack([header, pack_bits(np.clip(q, 0, self.levels).astype(np.uint8), self.bits)])

    def _split(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lo, step, integer codes as float32) of a block of codes."""
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        header = np.ascontiguousarray(codes[:, :HEADER_BYTES]).view(np.float32)
        q = unpack_bits(codes[:, HEADER_BYTES:], self.dim, self.bits).astype(np.float32)
        return header[:, 0], header[:, 1], q

    def decompress(self, codes: np.ndarray) -> np.ndarray:
        lo, step, q = self._split(codes)
        return self.mean + lo[:, None] + step[:, None] * q

    # -- asymmetric search over the codes given to add() ------------------------------------------------------

    def add(self, codes: np.ndarray) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        norms = np.empty(len(codes), dtype=np.float32)
        for start in range(0, len(codes), SEARCH_ROWS):
            x_hat = self.decompress(codes[start : start + SEARCH_ROWS]).astype(np.float64)
            norms[start : start + len(x_hat)] = np.einsum("ij,ij->i", x_hat, x_hat)
        self._db.append(codes)
        self._db_norms.append(norms)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best k per query: squared L2 ascending, or inner product descending; ids count from 0 over add()s."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        codes = np.concatenate(self._db) if len(self._db) != 1 else self._db[0]
        norms = np.concatenate(self._db_norms) if len(self._db_norms) != 1 else self._db_norms[0]
        n = len(codes)
        k_eff = min(k, n)
        q_mean = q @ self.mean
        q_sum = q.sum(axis=1)
        best_s = np.full((len(q), 0), np.inf, dtype=np.float32)  # smaller is better: -ip or l2
        best_i = np.empty((len(q), 0), dtype=np.int64)
        for start in range(0, n, SEARCH_ROWS):
            lo, step, c = self._split(codes[start : start + SEARCH_ROWS])
            ip = q_mean[:, None] + q_sum[:, None] * lo[None, :] + (q @ c.T) * step[None, :]
            if self.metric == "ip":
                score = -ip
            else:
                score = norms[None, start : start + len(lo)] - 2 * ip + np.einsum("ij,ij->i", q, q)[:, None]
            ids = np.broadcast_to(np.arange(start, start + len(lo)), score.shape)
            best_s, best_i = _top_k(np.hstack([best_s, score]), np.hstack([best_i, ids]), k_eff)
        dists = -best_s if self.metric == "ip" else best_s
        out_d = np.full((len(q), k), np.inf if self.metric == "l2" else -np.inf, dtype=np.float32)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        out_d[:, :k_eff], out_i[:, :k_eff] = dists, best_i
        return out_d, out_i


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest scores per row, sorted (ties by id), with their ids."""
    if scores.shape[1] > k:
        part = np.argpartition(scores, k - 1, axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, part, axis=1), np.take_along_axis(ids, part, axis=1)
    order = np.lexsort((ids, scores), axis=1) if scores.size else np.empty(scores.shape, dtype=np.int64)
    return np.take_along_axis(scores, order, axis=1).astype(np.float32), np.take_along_axis(ids, order, axis=1)
