"""A uniform scalar quantizer in plain numpy: the worked example of docs/ADDING_A_QUANTIZER.md.

Each dimension j gets the range [lo_j, hi_j] seen in training, cut into 2**bits - 1 equal steps; a value is
stored as the index of the nearest level (values outside the training range are clipped). Codes are bit-packed:
ceil(d * bits / 8) bytes per vector. On the training vectors each coordinate is off by at most step_j / 2.
"""

from __future__ import annotations

import numpy as np

from vq_benchmark.vq_cases.quantizers import pack_bits, packed_bytes, unpack_bits


class UniformSQ:
    """Per-dimension min/max scalar quantizer with `bits` (1..8) bits per dimension."""

    def __init__(self, bits: int = 8) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
        self.bits = bits
        self.levels = 2**bits - 1
        self.lo: np.ndarray | None = None
        self.step: np.ndarray | None = None

    @property
    def code_bytes(self) -> int | None:
        return None if self.lo is None else packed_bytes(self.lo.shape[0], self.bits)

    def fit(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        self.lo = x.min(axis=0)
        self.step = (x.max(axis=0) - self.lo) / self.levels  # 0 for a constant dimension

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.lo is None or self.step is None:
            raise RuntimeError("UniformSQ: call fit() first")
        return self.lo, self.step

    def compress(self, x: np.ndarray) -> np.ndarray:
        lo, step = self._fitted()
        q = np.rint((np.asarray(x, dtype=np.float64) - lo) / np.where(step > 0, step, 1.0))
        return pack_bits(np.clip(q, 0, self.levels).astype(np.uint8), self.bits)

    def decompress(self, codes: np.ndarray) -> np.ndarray:
        lo, step = self._fitted()
        q = unpack_bits(codes, lo.shape[0], self.bits)
        return (lo + step * q).astype(np.float32)
