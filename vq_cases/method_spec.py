"""The shapes of a method declaration: its parameters, what building it returns, and the method itself.

Kept apart from the registry (vq_cases/methods.py) so the faiss and python method modules can declare methods
without importing the registry that collects them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vq_benchmark.vq_cases.codec import Codec

ParamValue = int | float | str | bool
Params = Mapping[str, ParamValue]


class MethodError(ValueError):
    """An unknown method or bad parameter in a sweep, or a combination that cannot be built; one line."""


@dataclass(frozen=True)
class Param:
    """One declared parameter. Values must have exactly `type` (a bool parameter also takes 0 and 1)."""

    name: str
    type: type
    default: ParamValue | None = None  # None: required
    minimum: int | None = None
    maximum: int | None = None
    help: str = ""


@dataclass(frozen=True)
class Built:
    """A built, untrained codec; `notes` go to the row's notes, `null_metrics` (metric -> reason) are NULL for
    this configuration on top of the method's own declaration (e.g. a factory string holding RaBitQ)."""

    codec: Codec
    notes: tuple[str, ...] = ()
    null_metrics: Mapping[str, str] = field(default_factory=dict)


Builder = Callable[[dict[str, ParamValue], int, str], Built]
SkipCheck = Callable[[dict[str, ParamValue], int, int, str], str | None]
ExtraParams = Callable[[dict[str, ParamValue], dict[str, object], str], dict[str, ParamValue]]


@dataclass(frozen=True)
class Method:
    """A method a sweep can name.

    `params` are always in the case (id and params_json, in declared order); `options` are optional knobs that
    appear after them only when set to something other than their default, so adding a knob to a method keeps
    the ids, and the codec cache keys, of existing cases.
    builder(params, dim, metric) gets every parameter and option (defaults filled); `build` is what callers use.
    skip(params, dim, n_train, metric) says why a configuration cannot run on a dataset (None: it can).
    extra(declared, extras, where) validates keys beyond `params` (None: such keys are an error); the python
    method passes them to the quantizer, ivf to its inner method.
    """

    name: str
    description: str
    params: tuple[Param, ...]
    builder: Builder
    null_metrics: Mapping[str, str] = field(default_factory=dict)  # metric -> why it does not apply
    train_points: Callable[[dict[str, ParamValue]], int] | None = None  # recommended training sample size
    skip: SkipCheck | None = None
    extra: ExtraParams | None = None
    grid: Mapping[str, tuple[ParamValue, ...]] = field(default_factory=dict)  # a sensible grid to start from
    code_bytes: str = ""  # the code size formula, for the docs
    options: tuple[Param, ...] = ()

    def full(self, params: Params) -> dict[str, ParamValue]:
        """`params` with defaults filled in (case params leave out options at their default)."""
        out = dict(params)
        for p in (*self.params, *self.options):
            if p.name not in out and p.default is not None:
                out[p.name] = p.default
        return out

    def build(self, params: Params, dim: int, metric: str) -> Built:
        return self.builder(self.full(params), dim, metric)

    @property
    def min_train(self) -> Callable[[Params], int] | None:
        """The training sample size the method needs to train well (None: no recommendation)."""
        points = self.train_points
        if points is None:
            return None
        return lambda params: points(self.full(params))


def _coerce(method: Method, p: Param, value: object, where: str) -> ParamValue:
    """The value as the parameter's type; a bool parameter also takes 0/1 (TOML users write either)."""
    if p.type is bool and type(value) is int and value in (0, 1):
        return bool(value)
    if type(value) is not p.type:
        raise MethodError(f"{where}: {method.name} {p.name} must be {p.type.__name__}, got {value!r}")
    below = p.minimum is not None and isinstance(value, int) and value < p.minimum
    above = p.maximum is not None and isinstance(value, int) and value > p.maximum
    if not isinstance(value, bool) and (below or above):
        raise MethodError(f"{where}: {method.name} {p.name}={value} outside [{p.minimum}, {p.maximum}]")
    if isinstance(value, str) and not value.strip():
        raise MethodError(f"{where}: {method.name} {p.name} must not be empty")
    return value  # type: ignore[return-value]


def check_params(method: Method, params: Mapping[str, object], where: str) -> dict[str, ParamValue]:
    """Validate one parameter combination and fill defaults, in the method's declared order; options are left
    out while they hold their default. Keys beyond the declared ones go to the method's `extra` validator
    (python quantizer arguments, ivf inner-method parameters), else are an error."""
    known = {p.name for p in (*method.params, *method.options)}
    unknown = [k for k in params if k not in known]
    if unknown and method.extra is None:
        allowed = ", ".join(sorted(known)) or "none"
        raise MethodError(
            f"{where}: method {method.name!r} has no parameter {sorted(unknown)[0]!r}; allowed: {allowed}"
        )
    out: dict[str, ParamValue] = {}
    for p in (*method.params, *method.options):
        value = params.get(p.name, p.default)
        if value is None:
            raise MethodError(f"{where}: method {method.name!r} needs parameter {p.name!r}")
        value = _coerce(method, p, value, where)
        if p in method.options and value == p.default:
            continue
        out[p.name] = value
    if method.extra is not None:
        out.update(method.extra(method.full(out), {k: params[k] for k in unknown}, where))
    return out
