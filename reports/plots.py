"""Trade-off plots of a run: one PNG + SVG per (dataset, x-vs-y spec), one series per method family, the Pareto
front drawn as a step line.

Axis labels, units and the direction of "better" (for the front) come from the metric registry, so a new metric
plots without touching this module. matplotlib is an optional extra and imported only inside functions, so
importing this module stays cheap; figures are built on `matplotlib.figure.Figure` with the Agg canvas, never
pyplot's global state. Output is deterministic (fixed SVG hash salt, no dates or software versions in the files),
so the same rows give byte-identical files that diff cleanly between runs; SVG text stays text (searchable, small).
Each family has its own marker and line pattern, not only a colour, so a greyscale print still tells them apart.
Only ok rows with a finite value on both axes (positive on a log axis) are points; a figure without any is skipped.

Family rule (`method_family`): the method name, lower-cased, minus a trailing fast-scan suffix `fs`, then minus a
trailing number format (`fp16`, `bf16`) or bit count (digits). So sq4, sq8, sqfp16 and sqbf16 are "sq"; pq and
pqfs are "pq"; rabitq and rabitqfs are "rabitq"; opq, ivf, rq, lsq stay themselves.
"""

from __future__ import annotations

import importlib.util
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vq_benchmark.reports.atomic import atomic_write_bytes, describe_os_error
from vq_benchmark.reports.errors import ReportError
from vq_benchmark.reports.pareto import pareto_front
from vq_benchmark.reports.schema import METRIC_NAMES, Row, metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

# Numeric identity columns worth an axis besides the metrics (label, unit).
_PARAM_COLUMNS: dict[str, tuple[str, str]] = {
    "n_base": ("base vectors", ""),
    "n_queries": ("queries", ""),
    "n_train": ("training vectors", ""),
    "dim": ("dimension", ""),
    "vector_bytes": ("raw bytes per vector", "B"),
    "bits_per_dim": ("bits per dimension", ""),
}
PLOT_COLUMNS: tuple[str, ...] = (*METRIC_NAMES, *_PARAM_COLUMNS)
_LABELS = {
    "code_bytes": "bytes per vector",
    "codec_bytes": "codec size",
    "total_bytes": "codes + codec size",
    "mse": "MSE",
    "relative_mse": "relative MSE",
    "mse_per_dim": "MSE per dimension",
    "mean_l2_error": "mean L2 error",
    "rank_spearman_at_10": "Spearman rho@10",
    "qps": "QPS",
    "train_s": "train time",
    "original_train_s": "first train time",
    "encode_s": "encode time",
    "encode_vps": "encode throughput",
    "search_s": "search time",
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (6, 2)), (0, (3, 1, 1, 1)), (0, (1, 3)), (0, (8, 2, 1, 2)))
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
FRONT_LABEL = "Pareto front"
# A wide pale band behind the markers: unlike any family's thin line, in colour or grey.
_FRONT_STYLE: dict[str, Any] = {"color": "0.55", "lw": 3.0, "alpha": 0.5, "zorder": 1, "label": FRONT_LABEL}
FIGSIZE, DPI = (6.4, 4.2), 100
_RC = {"svg.hashsalt": "vq-benchmark", "svg.fonttype": "none", "font.size": 8.0}
_SVG_META = {"Date": None, "Creator": None}
_PNG_META = {"Software": None}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
MATPLOTLIB_MISSING = "plots need matplotlib: pip install 'vq-benchmark[plots]'"


@dataclass(frozen=True)
class PlotSpec:
    """One trade-off plot: y against x, each a registered metric or a numeric column, optionally log-scaled."""

    x: str
    y: str
    log_x: bool = False
    log_y: bool = False

    @property
    def name(self) -> str:
        """File-stem friendly, e.g. "recall_at_10-vs-code_bytes"."""
        return f"{self.y}-vs-{self.x}"

    def option(self) -> str:
        """The `--plot` text that parses back to this spec."""
        return f"x={self.x},y={self.y}" + (",logx" if self.log_x else "") + (",logy" if self.log_y else "")


DEFAULT_SPECS: tuple[PlotSpec, ...] = (
    PlotSpec("code_bytes", "recall_at_10"),
    PlotSpec("qps", "recall_at_10", log_x=True),
    PlotSpec("code_bytes", "relative_mse", log_y=True),
)


@dataclass(frozen=True)
class Figure:
    """A rendered plot: `name` is its file stem (unique per dataset and spec, only [A-Za-z0-9_.-])."""

    name: str
    title: str
    png: bytes
    svg: str


def parse_plot(text: str) -> PlotSpec:
    """`x=code_bytes,y=recall_at_100[,logx][,logy]` (also `log=x|y|xy`) -> PlotSpec; ReportError (one line)
    naming --plot, the text and what is expected otherwise."""
    expected = f"expected x=NAME,y=NAME[,logx][,logy] with NAME one of: {', '.join(PLOT_COLUMNS)}"

    def bad(why: str) -> ReportError:
        return ReportError(f"--plot {text!r}: {why}; {expected}")

    axes: dict[str, str] = {}
    logs: set[str] = set()
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        key, eq, value = (s.strip() for s in part.partition("="))
        key = key.lower()
        if not eq and key in ("logx", "logy"):
            logs.add(key[-1])
        elif eq and key == "log" and value.lower() in ("x", "y", "xy", "yx"):
            logs.update(value.lower())
        elif eq and key in ("x", "y"):
            if key in axes:
                raise bad(f"{key} given twice")
            if value not in PLOT_COLUMNS:
                raise bad(f"unknown metric {value!r} for {key}")
            axes[key] = value
        else:
            raise bad(f"cannot read {part!r}")
    missing = [k for k in ("x", "y") if k not in axes]
    if missing:
        raise bad(f"no {' and no '.join(missing)} given")
    return PlotSpec(axes["x"], axes["y"], log_x="x" in logs, log_y="y" in logs)


def method_family(method: object) -> str:
    """The series a method belongs to (see the module docstring for the rule)."""
    name = str(method or "unknown").strip().lower()
    if name.endswith("fs") and len(name) > 2:
        name = name[:-2]
    stem = re.sub(r"(fp16|bf16|\d+)$", "", name)
    return stem or name


def axis_label(column: str) -> str:
    """`label (unit)` from the registry: "bytes per vector (B)", "QPS (1/s)", "recall@10"."""
    if column in _PARAM_COLUMNS:
        label, unit = _PARAM_COLUMNS[column]
    else:
        unit = metric(column).unit
        label = _LABELS.get(column) or re.sub(r"_(ms|s)$", "", column)  # the unit is said once, in brackets
        label = re.sub(r"one_recall_at_(\d+)", r"1-recall@\1", label)
        label = re.sub(r"recall_at_(\d+)", r"recall@\1", label).replace("_", " ")
        label = re.sub(r"^qps\b", "QPS", label)
    return f"{label} ({unit})" if unit else label


def _direction(column: str) -> bool | None:
    return None if column in _PARAM_COLUMNS else metric(column).higher_is_better


def _value(row: Row, column: str, log: bool) -> float | None:
    value = row.get(column)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) and (v > 0 or not log) else None


def plot_points(rows: Sequence[Row], spec: PlotSpec) -> list[tuple[Row, float, float]]:
    """The ok rows with a value on both axes (positive where the axis is log), with those values."""
    out = []
    for row in rows:
        if row.get("status") != "ok":
            continue
        x, y = _value(row, spec.x, spec.log_x), _value(row, spec.y, spec.log_y)
        if x is not None and y is not None:
            out.append((row, x, y))
    return out


def family_styles(families: Sequence[str]) -> dict[str, tuple[str, Any, str]]:
    """(marker, linestyle, colour) per family, sorted by name: marker and line pattern differ for every family
    (up to 64), so the plot reads in greyscale; the same family keeps its look in every figure of a call."""
    n = len(MARKERS)
    return {
        fam: (MARKERS[i % n], LINESTYLES[(i + i // n) % n], COLORS[i % len(COLORS)])
        for i, fam in enumerate(sorted(set(families)))
    }


def _count_text(rows: Sequence[Row], column: str) -> str:
    values = sorted({int(v) for r in rows if isinstance(v := r.get(column), int | float)})
    if not values:
        return "?"
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}-{values[-1]:,}"


def _title(dataset: str, spec: PlotSpec, rows: Sequence[Row], run_label: str, sep: str = " - ") -> str:
    """`<dataset>: <y> vs <x>`, then n (base vectors), queries and the run; `sep` between the two parts."""
    run = f", run {run_label}" if run_label else ""
    counts = f"n={_count_text(rows, 'n_base')}, {_count_text(rows, 'n_queries')} queries{run}"
    return f"{dataset}: {axis_label(spec.y)} vs {axis_label(spec.x)}{sep}{counts}"


def _require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise ReportError(MATPLOTLIB_MISSING)


def build_figure(
    rows: Sequence[Row],
    spec: PlotSpec,
    *,
    run_label: str,
    styles: Mapping[str, tuple[str, Any, str]] | None = None,
) -> MplFigure | None:
    """The matplotlib Figure of one dataset's rows for `spec`, or None when no row has both values. Artists carry
    gids (`family-<name>`, `pareto-front`) so tests and the SVG's readers can find each series."""
    _require_matplotlib()
    import matplotlib
    from matplotlib.figure import Figure as MplFigure

    points = plot_points(rows, spec)
    if not points:
        return None
    ok = [r for r in rows if r.get("status") == "ok"]
    dataset = str(points[0][0].get("dataset") or "unknown")
    by_family: dict[str, list[tuple[float, float]]] = {}
    for row, x, y in points:
        by_family.setdefault(method_family(row.get("method")), []).append((x, y))
    if styles is None or not set(by_family) <= set(styles):
        styles = family_styles(list(by_family))
    with matplotlib.rc_context(_RC):  # font sizes are read when artists are made
        fig = MplFigure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        _draw(fig, points, by_family, spec, styles)
        fig.axes[0].set_title(_title(dataset, spec, ok, run_label, sep="\n"), fontsize=8.5)
    return fig


def _draw(
    fig: MplFigure,
    points: Sequence[tuple[Row, float, float]],
    by_family: Mapping[str, list[tuple[float, float]]],
    spec: PlotSpec,
    styles: Mapping[str, tuple[str, Any, str]],
) -> None:
    ax = fig.add_subplot()
    for fam in sorted(by_family):
        xy = sorted(by_family[fam])
        marker, linestyle, colour = styles[fam]
        ax.plot(
            *zip(*xy, strict=True), marker=marker, linestyle=linestyle, color=colour, label=fam, gid=f"family-{fam}"
        )
    dx, dy = _direction(spec.x), _direction(spec.y)
    if dx is not None and dy is not None:
        front = sorted((points[i][1], points[i][2]) for i in pareto_front([(x, y) for _, x, y in points], (dx, dy)))
        # The step holds the best y reachable so far: from the left when lower x is better (a budget), from the
        # right when higher x is better (a requirement).
        ax.plot(
            *zip(*front, strict=True), drawstyle="steps-pre" if dx else "steps-post", gid="pareto-front", **_FRONT_STYLE
        )
    ax.set_xscale("log" if spec.log_x else "linear")
    ax.set_yscale("log" if spec.log_y else "linear")
    ax.set_xlabel(axis_label(spec.x))
    ax.set_ylabel(axis_label(spec.y))
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7.5, frameon=False)


def render_figure(fig: MplFigure) -> tuple[bytes, str]:
    """PNG bytes and SVG text of a built figure, without dates or version strings (byte-identical reruns)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    png, svg = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(png, format="png", dpi=DPI, metadata=_PNG_META)
        fig.savefig(svg, format="svg", metadata=_SVG_META)
    return png.getvalue(), svg.getvalue().decode("utf-8")


def make_figures(rows: Sequence[Row], specs: Sequence[PlotSpec] = DEFAULT_SPECS, *, run_label: str) -> list[Figure]:
    """One Figure per (dataset, spec) that has a point, datasets sorted, specs in the given order; ReportError when
    matplotlib is missing or no figure has a point at all."""
    _require_matplotlib()
    ok = [r for r in rows if r.get("status") == "ok"]
    by_dataset: dict[str, list[Row]] = {}
    for row in ok:
        by_dataset.setdefault(str(row.get("dataset") or "unknown"), []).append(row)
    styles = family_styles([method_family(r.get("method")) for r in ok])
    figures: list[Figure] = []
    names: set[str] = set()
    for dataset in sorted(by_dataset):
        for spec in dict.fromkeys(specs):
            fig = build_figure(by_dataset[dataset], spec, run_label=run_label, styles=styles)
            if fig is None:
                continue
            stem = base = _SAFE.sub("_", f"{dataset}.{spec.name}").lstrip(".") or "plot"
            n = 1
            while stem in names:
                n += 1
                stem = f"{base}-{n}"
            names.add(stem)
            png, svg = render_figure(fig)
            figures.append(Figure(stem, _title(dataset, spec, by_dataset[dataset], run_label), png, svg))
    if not figures:
        wanted = "; ".join(s.option() for s in specs) or "none"
        raise ReportError(f"nothing to plot: none of the {len(ok)} ok rows has values for any plot ({wanted})")
    return figures


def write_figures(figures: Sequence[Figure], out_dir: Path) -> list[Path]:
    """Write `<name>.png` and `<name>.svg` of each figure into `out_dir` (created), each atomically; returns the
    paths in order. Write problems are one-line ReportErrors naming the path."""
    out_dir = Path(out_dir)
    stems = [f.name for f in figures]
    for stem in stems:
        if _SAFE.search(stem) or not stem or stem.startswith("."):
            raise ReportError(f"figure name {stem!r}: expected only [A-Za-z0-9_.-], not starting with '.'")
    if len(set(stems)) != len(stems):
        raise ReportError(f"figure names repeat: {', '.join(sorted({s for s in stems if stems.count(s) > 1}))}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ReportError(f"cannot write {out_dir}: exists and is not a directory") from None
    except OSError as exc:
        raise ReportError(describe_os_error(out_dir, exc)) from exc
    written: list[Path] = []
    for fig in figures:
        for path, data in ((out_dir / f"{fig.name}.png", fig.png), (out_dir / f"{fig.name}.svg", fig.svg.encode())):
            try:
                atomic_write_bytes(path, data)
            except OSError as exc:
                raise ReportError(describe_os_error(path, exc)) from exc
            written.append(path)
    return written
