"""Your own quantizer in Python, measured through the Codec interface (`method = "python"`).

A quantizer is any class with `fit(X)`, `compress(X) -> codes` (2-D uint8, one row per vector) and
`decompress(codes) -> X_hat`; optionally `code_bytes` (bytes per code, read after fit) and, together,
`add(codes)` + `search(queries, k) -> (distances, ids)` for asymmetric search over the codes given to `add`
(its constructor must then take `metric`, "l2" or "ip", which the codec passes from the dataset; a sweep's
`search.NAME = [...]` keys are passed to `search` as keyword arguments). Without
`search`, the codec searches exactly over the decoded codes, decoding chunk by chunk ("decode-then-search").

`quantizer = "..."` in a sweep names the class: a built-in name (`lvq`, `uniform_sq`), a name registered in the
entry point group `vq_benchmark.quantizers`, `"module:Class"`, or `"path/to/file.py:Class"` (relative paths are
looked up in the sweep file's folder, then the current directory). Every other key of the sweep entry is a
constructor argument. Whatever the quantizer does wrong (raises, returns codes of the wrong dtype or shape,
decodes to the wrong shape) is a QuantizerError of one line naming the class and what was expected, so only
its own case fails. Python codecs have no file format: `serialize()` returns None, and they are trained in
every case.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from vq_benchmark.fixtures.ground_truth import exact_knn
from vq_benchmark.fixtures.vector_source import VectorSource
from vq_benchmark.vq_cases.method_spec import Built, Method, MethodError, Param, ParamValue

ENTRY_POINT_GROUP = "vq_benchmark.quantizers"
BUILTIN_QUANTIZERS = {
    "lvq": "vq_benchmark.vq_cases.quantizers.lvq:LVQ",
    "uniform_sq": "vq_benchmark.vq_cases.quantizers.uniform_sq:UniformSQ",
}
RESERVED_KEYS = ("metric",)  # set from the dataset, never from the sweep
_SEARCH_DIRS: list[Path] = []


class QuantizerError(ValueError):
    """A python quantizer that cannot be loaded or broke its contract; one line naming the class."""


def add_search_dir(folder: Path) -> None:
    """Look up relative quantizer file paths in `folder` (the sweep file's) before the current directory."""
    folder = Path(folder).resolve()
    if folder not in _SEARCH_DIRS:
        _SEARCH_DIRS.insert(0, folder)


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- finding the class


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _load_file(target: str, ref: str) -> object:
    path = Path(target).expanduser()
    tried = [path] if path.is_absolute() else [*(d / path for d in _SEARCH_DIRS), Path.cwd() / path]
    found = next((p.resolve() for p in tried if p.is_file()), None)
    if found is None:
        where = ", ".join(str(p.parent) for p in tried)
        raise QuantizerError(f"quantizer {ref!r}: file {target} not found (looked in {where})")
    name = "vq_benchmark_user_quantizer_" + hashlib.blake2b(str(found).encode(), digest_size=6).hexdigest()
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, found)
    if spec is None or spec.loader is None:
        raise QuantizerError(f"quantizer {ref!r}: cannot import {found} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise QuantizerError(f"quantizer {ref!r}: importing {found} raised {_first_line(exc)}") from None
    return module


def _load_module(target: str, ref: str) -> object:
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise QuantizerError(f"quantizer {ref!r}: cannot import module {target!r} ({_first_line(exc)})") from None


def _named(ref: str) -> str:
    """The 'module:Class' of a built-in or entry-point name."""
    if ref in BUILTIN_QUANTIZERS:
        return BUILTIN_QUANTIZERS[ref]
    registered = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if ref in registered:
        return registered[ref]
    names = ", ".join(sorted({*BUILTIN_QUANTIZERS, *registered}))
    raise QuantizerError(
        f"unknown quantizer {ref!r}: known names {names} (entry point group {ENTRY_POINT_GROUP}); "
        "or give 'module:Class' or 'path/to/file.py:Class'"
    )


def load_quantizer_class(ref: str) -> type:
    """The class a `quantizer = ...` reference names; QuantizerError (one line) when it cannot be found or
    lacks fit/compress/decompress, or has `search` without `add`."""
    spec = ref if ":" in ref else _named(ref)
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise QuantizerError(f"quantizer {ref!r}: expected 'module:Class' or 'path/to/file.py:Class'")
    obj: object = _load_file(target, ref) if _is_path(target) else _load_module(target, ref)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise QuantizerError(f"quantizer {ref!r}: {target} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise QuantizerError(f"quantizer {ref!r}: {attr} is not a class")
    missing = [m for m in ("fit", "compress", "decompress") if not callable(getattr(obj, m, None))]
    if missing:
        raise QuantizerError(f"quantizer {ref!r}: class {obj.__qualname__} has no {', '.join(missing)} method")
    if callable(getattr(obj, "search", None)) and not callable(getattr(obj, "add", None)):
        raise QuantizerError(
            f"quantizer {ref!r}: class {obj.__qualname__} defines search() but not add(codes), which hands it "
            "the codes to search"
        )
    return obj


def _takes_metric(cls: type) -> bool:
    try:
        return "metric" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- decode-then-search


class DecodedSource(VectorSource):
    """Codes seen as the vectors they decode to, decoded chunk by chunk on read (exact search over them)."""

    def __init__(self, codes: np.ndarray, decode: Callable[[np.ndarray], np.ndarray], dim: int) -> None:
        super().__init__(codes.shape[0], dim, np.dtype(np.float32), "decoded codes")
        self.codes, self._decode = codes, decode

    def _read(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray(self._decode(self.codes[start:stop]), dtype=np.float32)


# ---------------------------------------------------------------- the codec


class PythonCodec:
    """A python quantizer behind the Codec interface, checking every answer it gives."""

    adds_vectors = False

    def __init__(self, quantizer: object, ref: str, kwargs: Mapping[str, ParamValue], dim: int, metric: str) -> None:
        self.quantizer, self.ref, self.dim, self.metric = quantizer, ref, dim, metric
        self.name = f"{type(quantizer).__qualname__} ({ref})"  # what error messages call it
        args = ",".join(f"{k}={v}" for k, v in kwargs.items())
        self.description = f"python:{ref}({args})"
        self.asymmetric = callable(getattr(quantizer, "search", None))
        self.search_mode = "asymmetric" if self.asymmetric else "decode-then-search"
        self._code_bytes: int | None = None
        self._codes: list[np.ndarray] = []
        self._search_kwargs: dict[str, ParamValue] = {}

    @classmethod
    def create(cls, ref: str, kwargs: Mapping[str, ParamValue], dim: int, metric: str) -> PythonCodec:
        """Load the class `ref` names and construct it with `kwargs` (+ metric when it takes one)."""
        klass = load_quantizer_class(ref)
        call = dict(kwargs)
        if _takes_metric(klass):
            call["metric"] = metric
        elif callable(getattr(klass, "search", None)):
            raise QuantizerError(
                f"quantizer {ref!r}: class {klass.__qualname__} defines search() but its constructor takes no "
                "'metric' argument, so it cannot be told the dataset's metric ('l2' or 'ip')"
            )
        try:
            quantizer = klass(**call)
        except Exception as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in call.items())
            raise QuantizerError(
                f"quantizer {ref!r}: {klass.__qualname__}({shown}) raised {_first_line(exc)}"
            ) from None
        return cls(quantizer, ref, kwargs, dim, metric)

    # -- checked calls ----------------------------------------------------------------------------------------

    def _call(self, method: str, *args: object, **kwargs: object) -> object:
        try:
            return getattr(self.quantizer, method)(*args, **kwargs)
        except QuantizerError:
            raise
        except Exception as exc:
            raise QuantizerError(f"quantizer {self.name}: {method}() raised {_first_line(exc)}") from None

    def _fail(self, what: str, expected: str, got: object) -> QuantizerError:
        shown = f"a {got.dtype} array of shape {got.shape}" if isinstance(got, np.ndarray) else type(got).__name__
        return QuantizerError(f"quantizer {self.name}: {what} must return {expected}, got {shown}")

    def _declared_code_bytes(self) -> int | None:
        try:
            value = getattr(self.quantizer, "code_bytes", None)
        except Exception as exc:
            raise QuantizerError(f"quantizer {self.name}: code_bytes raised {_first_line(exc)}") from None
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise QuantizerError(f"quantizer {self.name}: code_bytes must be a positive int, got {value!r}")
        return int(value)

    def _compress(self, x: np.ndarray) -> np.ndarray:
        codes = self._call("compress", x)
        width = "code_bytes" if self._code_bytes is None else str(self._code_bytes)
        expected = f"a 2-D uint8 array of shape ({len(x)}, {width})"
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2:
            raise self._fail("compress(X)", expected, codes)
        if codes.shape[0] != len(x) or (self._code_bytes is not None and codes.shape[1] != self._code_bytes):
            raise self._fail("compress(X)", expected, codes)
        return np.ascontiguousarray(codes)

    # -- the Codec interface ----------------------------------------------------------------------------------

    @property
    def code_bytes(self) -> int:
        if self._code_bytes is None:
            declared = self._declared_code_bytes()
            if declared is None:
                raise QuantizerError(f"quantizer {self.name}: code size unknown before fit() (no code_bytes)")
            return declared
        return self._code_bytes

    def train(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._call("fit", x)
        declared = self._declared_code_bytes()
        self._code_bytes = declared if declared is not None else self._compress(x[:1]).shape[1]

    def encode(self, x: np.ndarray) -> np.ndarray:
        return self._compress(np.ascontiguousarray(x, dtype=np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        out = self._call("decompress", codes)
        expected = f"an array of shape ({len(codes)}, {self.dim})"
        if not isinstance(out, np.ndarray) or out.shape != (len(codes), self.dim) or out.dtype.kind not in "fiu":
            raise self._fail("decompress(codes)", expected, out)
        return np.ascontiguousarray(out, dtype=np.float32)

    def add_codes(self, codes: np.ndarray) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        self._codes.append(codes)
        if self.asymmetric:
            self._call("add", codes)

    def _all_codes(self) -> np.ndarray:
        if not self._codes:
            return np.empty((0, self.code_bytes), dtype=np.uint8)
        return self._codes[0] if len(self._codes) == 1 else np.concatenate(self._codes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not self.asymmetric:
            source = DecodedSource(self._all_codes(), self.decode, self.dim)
            dists, ids = exact_knn(source, queries, k, self.metric)
            return np.asarray(dists, dtype=np.float32), np.asarray(ids, dtype=np.int64)
        got = self._call("search", queries, k, **self._search_kwargs)
        expected = f"(distances, ids), two arrays of shape ({len(queries)}, {k})"
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise self._fail("search(queries, k)", expected, got)
        dists, ids = got
        for arr in (dists, ids):
            if not isinstance(arr, np.ndarray) or arr.shape != (len(queries), k):
                raise self._fail("search(queries, k)", expected, arr)
        if ids.dtype.kind not in "iu":
            raise self._fail("search(queries, k)", "integer ids", ids)
        return np.ascontiguousarray(dists, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)

    def set_search_params(self, params: Mapping[str, ParamValue]) -> None:
        """Keyword arguments for every later `search(queries, k, **params)` of the quantizer (replacing earlier
        ones); a quantizer searched by decoding takes none."""
        if params and not self.asymmetric:
            raise QuantizerError(
                f"quantizer {self.name}: has no search(), so search parameters {', '.join(params)} cannot apply"
            )
        self._search_kwargs = dict(params)

    def serialize(self) -> None:
        """Python quantizers have no file format (and are never pickled): nothing to cache or write."""
        return None

    def save(self, path: Path) -> None:
        raise QuantizerError(f"quantizer {self.name}: python quantizers cannot be saved (no file format)")


# ---------------------------------------------------------------- the method


def _extra(declared: dict[str, ParamValue], extras: dict[str, object], where: str) -> dict[str, ParamValue]:
    """Constructor arguments: identifiers with scalar values, sorted by name (ids stay stable)."""
    out: dict[str, ParamValue] = {}
    for key in sorted(extras):
        value = extras[key]
        if not key.isidentifier() or key in RESERVED_KEYS:
            why = "is set from the dataset" if key in RESERVED_KEYS else "is not a Python identifier"
            raise MethodError(f"{where}: python quantizer argument {key!r} {why}")
        if not isinstance(value, int | float | str | bool):
            raise MethodError(
                f"{where}: python quantizer argument {key} must be a number, string or bool, got {value!r}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise MethodError(f"{where}: python quantizer argument {key} must be finite, got {value!r}")
        out[key] = value
    return out


def _build(params: dict[str, ParamValue], dim: int, metric: str) -> Built:
    ref = str(params["quantizer"])
    kwargs = {k: v for k, v in params.items() if k != "quantizer"}
    codec = PythonCodec.create(ref, kwargs, dim, metric)
    null = getattr(codec.quantizer, "null_metrics", None)
    return Built(codec, (), dict(null) if isinstance(null, Mapping) else {})


PYTHON_METHOD = Method(
    "python",
    "your own quantizer in Python: fit/compress/decompress (+ optional add/search); other keys are its arguments",
    (Param("quantizer", str, None, help="lvq, uniform_sq, an entry point name, module:Class or file.py:Class"),),
    _build,
    extra=_extra,
    grid={"quantizer": ("lvq", "uniform_sq"), "bits": (4, 8)},
    code_bytes="the quantizer's code_bytes (lvq: ceil(d*bits/8) + 8; uniform_sq: ceil(d*bits/8))",
)
