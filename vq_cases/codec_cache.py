"""The codec cache: a trained codec is stored under a key of everything that shaped its training, and a later
case with the same key loads it instead of training again.

Training is often the slowest step of a case (OPQ, large PQ), and it is a pure function of the key: dataset
fingerprint, method, parameters, training sample size, seed and faiss version. The codec file is faiss's own
format; next to it a JSON sidecar keeps the original training time, so a row of a loaded codec still reports
what training cost. Both are written atomically, so concurrent writers of one key each leave a whole, valid file
(the last rename wins), and a reader sees the old file or a new one, never half of one. Nothing read back is
trusted blindly: a file faiss cannot read, or one holding another kind of index, is retrained and overwritten;
a sidecar that does not describe the codec file next to it leaves the original training time unknown (NULL).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import faiss

from vq_benchmark.reports.atomic import atomic_write_bytes
from vq_benchmark.vq_cases.codec import Codec, Restorable

CODEC_SUFFIX = ".faissindex"
SIDECAR_SUFFIX = ".json"
REASON_MAX_CHARS = 160
_FAISS_LOCATION = re.compile(r"^Error in .*? at \S+:\d+: ")


@dataclass(frozen=True)
class CodecSlot:
    """Where one case's codec is cached; `read` False (--vq-no-codec-cache) still writes a trained codec."""

    path: Path
    read: bool = True


@dataclass(frozen=True)
class Cached:
    """A codec loaded from the cache; `original_train_s` is None (with `unknown_reason`) without a sidecar."""

    codec: Codec
    blob: bytes
    load_s: float
    original_train_s: float | None
    unknown_reason: str | None


class UntrustedCodecFile(Exception):
    """A codec cache file that must be retrained: unreadable, truncated, or holding another index."""


def codec_file_key(
    dataset_fingerprint: str,
    method: str,
    params_json: str,
    n_train: int,
    seed: int,
    faiss_version: str = faiss.__version__,
) -> str:
    """12 hex digits (BLAKE2b) of everything that shapes a trained codec, so different trainings get different
    files. JSON keeps the fields apart ("a","bc" never hashes like "ab","c")."""
    fields = [dataset_fingerprint, method, params_json, int(n_train), int(seed), faiss_version]
    return hashlib.blake2b(json.dumps(fields).encode(), digest_size=6).hexdigest()


def codec_file_path(codebooks_dir: Path, dataset_fingerprint: str, case_id: str, key: str) -> Path:
    """Where the trained codec of a case is stored."""
    return Path(codebooks_dir) / dataset_fingerprint / f"{case_id}-{key}{CODEC_SUFFIX}"


def sidecar_path(codec_path: Path) -> Path:
    """The JSON next to a codec file (same stem) that records how it was trained."""
    return Path(codec_path).with_suffix(SIDECAR_SUFFIX)


def _digest(blob: bytes) -> str:
    """Ties a sidecar to the exact codec bytes it describes (another writer may have replaced the codec)."""
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _short(exc: BaseException) -> str:
    """faiss errors start with a C++ signature and source location; keep the part a user can act on."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return _FAISS_LOCATION.sub("", text)[:REASON_MAX_CHARS]


def read_sidecar(codec_path: Path, blob: bytes, n_train: int) -> tuple[float | None, str | None]:
    """The original training time from the sidecar, or None and why it cannot be told."""
    path = sidecar_path(codec_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"codec loaded from the cache has no sidecar {path.name}: original training time unknown"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"sidecar {path.name} is unreadable ({_short(exc)}): original training time unknown"
    train_s = meta.get("train_s") if isinstance(meta, dict) else None
    if type(train_s) not in (int, float) or not math.isfinite(train_s) or train_s < 0:
        return None, f"sidecar {path.name} holds no valid train_s: original training time unknown"
    if meta.get("n_train") != n_train or meta.get("codec_blake2b") != _digest(blob):
        return None, f"sidecar {path.name} describes another codec file: original training time unknown"
    return float(train_s), None


def load_codec(path: Path, template: Restorable, n_train: int) -> Cached:
    """Load and check the cached codec at `path` against `template` (the built, untrained codec); the time
    spent is `load_s`. Raises FileNotFoundError when there is none, UntrustedCodecFile when it is not usable."""
    t0 = time.perf_counter()
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UntrustedCodecFile(_short(exc)) from exc
    try:
        codec = template.restore(blob)
    except Exception as exc:  # whatever the reader makes of foreign bytes, the answer is to retrain
        raise UntrustedCodecFile(_short(exc)) from exc
    original, reason = read_sidecar(path, blob, n_train)
    return Cached(codec, blob, time.perf_counter() - t0, original, reason)


def load_cached(slot: CodecSlot | None, template: Codec, n_train: int) -> tuple[Cached | None, str | None]:
    """The cached codec of `slot` if one is there and trusted, else None and a note when a file was rejected."""
    if slot is None or not slot.read or not isinstance(template, Restorable):
        return None, None
    try:
        return load_codec(slot.path, template, n_train), None
    except FileNotFoundError:
        return None, None
    except UntrustedCodecFile as exc:
        return None, f"codec cache file {slot.path} was unreadable ({exc}): retrained"


def _sidecar_bytes(blob: bytes, train_s: float | None, n_train: int) -> bytes:
    meta = {
        "train_s": None if train_s is None else float(train_s),
        "n_train": int(n_train),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "faiss_version": faiss.__version__,
        "codec_blake2b": _digest(blob),
    }
    return (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode()


def _same_bytes(path: Path, blob: bytes) -> bool:
    try:
        return path.read_bytes() == blob
    except OSError:
        return False


def store_codec(path: Path, blob: bytes, *, train_s: float | None, n_train: int) -> None:
    """Write a freshly trained codec, then its sidecar, each atomically. Bytes already there are not written
    again (that would only race readers), nor is a sidecar that already describes them; a sidecar that lost a
    race to another writer's codec names other bytes, so it is never taken for this file's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not _same_bytes(path, blob):
        atomic_write_bytes(path, blob)
    elif read_sidecar(path, blob, n_train)[0] is not None:
        return
    atomic_write_bytes(sidecar_path(path), _sidecar_bytes(blob, train_s, n_train))
