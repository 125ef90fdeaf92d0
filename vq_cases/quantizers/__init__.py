"""Quantizers written in Python on the `method = "python"` interface (docs/ADDING_A_QUANTIZER.md), and the
bit-packing helpers they share.

    fit(X)                      learn from n_train x d float32 vectors
    compress(X) -> codes        n x code_bytes uint8, one row per vector
    decompress(codes) -> X_hat  n x d floats
    code_bytes                  optional: bytes per code (after fit)
    add(codes), search(q, k)    optional, together: asymmetric search over the codes given to `add`

Shipped: `lvq` (LVQ, locally-adaptive scalar quantization) and `uniform_sq` (per-dimension uniform scalar
quantization, the worked example of the docs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_bits", "packed_bytes", "unpack_bits"]

_BLOCK_BITS = 1 << 24  # unpacked bits handled at once (16 MiB of uint8 temporaries)


def packed_bytes(d: int, bits: int) -> int:
    """Bytes that d values of `bits` bits take, bit-packed: ceil(d * bits / 8)."""
    return (d * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """n x d integers in [0, 2**bits) -> n x ceil(d*bits/8) uint8, each row a big-endian bit string."""
    _check_bits(bits)
    values = np.asarray(values, dtype=np.uint8)
    n, d = values.shape
    if bits == 8:
        return np.ascontiguousarray(values)
    out = np.empty((n, packed_bytes(d, bits)), dtype=np.uint8)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    rows = max(1, _BLOCK_BITS // max(1, d * bits))
    for start in range(0, n, rows):
        block = values[start : start + rows]
        planes = (block[:, :, None] >> shifts) & 1  # m x d x bits, most significant bit first
        out[start : start + len(block)] = np.packbits(planes.reshape(len(block), d * bits), axis=1)
    return out


def unpack_bits(packed: np.ndarray, d: int, bits: int) -> np.ndarray:
    """The inverse of pack_bits: n x ceil(d*bits/8) uint8 -> n x d uint8 values."""
    _check_bits(bits)
    packed = np.asarray(packed, dtype=np.uint8)
    n = packed.shape[0]
    if bits == 8:
        return np.ascontiguousarray(packed[:, :d])
    out = np.empty((n, d), dtype=np.uint8)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    rows = max(1, _BLOCK_BITS // max(1, d * bits))
    for start in range(0, n, rows):
        block = packed[start : start + rows]
        planes = np.unpackbits(block, axis=1, count=d * bits).reshape(len(block), d, bits)
        out[start : start + len(block)] = planes @ weights
    return out
