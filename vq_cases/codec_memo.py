"""The in-process codec memo: one trained and encoded codec reused by every search-parameter case of its training.

Cases that differ only in search parameters (`search.nprobe = [1, 4, 16]`) share everything that shaped the
codec, so the first of them trains (or loads from the on-disk codec cache) and encodes the base, and the others
only search. The memo is keyed exactly as the on-disk codec cache (`codec_cache.codec_file_key`: dataset
fingerprint, method, training parameters, training sample size, seed, faiss version), so "same key" means the
same thing in memory and on disk.

Memory: the memo keeps at most `capacity` codecs (default 1, the most recently stored): the cases are ordered so
that the search variants of one training run one after another, so one is all it needs, and the codes of a big
base are never held twice. `drop_dataset` forgets a dataset's codec when the dataset is released. Under xdist the
variants may run on different workers; each worker then loads the codec from the on-disk cache (no retraining)
but encodes the base again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from vq_benchmark.vq_cases.codec_cache import codec_file_key
from vq_benchmark.vq_cases.phases import Encoded, Trained
from vq_benchmark.vq_cases.sweep import Case

DEFAULT_CAPACITY = 1


def memo_key(case: Case, fingerprint: str, n_train: int, seed: int) -> str:
    """The key of a case's training: the on-disk codec cache's own key function."""
    return codec_file_key(fingerprint, case.method, case.params_json, n_train, seed)


@dataclass
class MemoEntry:
    """A trained codec with the base encoded into it; `encode_params` are the encoding-time parameters
    (max_beam_size) the codes were made with."""

    key: str
    dataset: str
    trained: Trained
    encoded: Encoded
    encode_params: Mapping[str, object] = field(default_factory=dict)


class CodecMemo:
    """Trained and encoded codecs of this process, by training key (at most `capacity`, least recent dropped)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, MemoEntry] = OrderedDict()
        self.stored = 0  # codecs trained (or loaded) and encoded in this process
        self.hits = 0  # cases that reused one

    def get(self, key: str) -> MemoEntry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return entry

    def put(self, entry: MemoEntry) -> None:
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        self.stored += 1
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def replace(self, entry: MemoEntry) -> None:
        """Store a re-encoded codec of a key already held (another max_beam_size): not a new training."""
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)

    def drop_dataset(self, dataset: str) -> None:
        for key in [k for k, e in self._entries.items() if e.dataset == dataset]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
