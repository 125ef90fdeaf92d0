"""Trade-off plots (reports/plots.py) on a real run's rows: the files decode, the series hold exactly the rows'
values, the Pareto line is the front, styles read in greyscale, output is byte-identical, errors are one line."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sweeps import run_sweep

from vq_benchmark.reports import plots
from vq_benchmark.reports.errors import ReportError
from vq_benchmark.reports.pareto import pareto_front
from vq_benchmark.reports.plots import (
    DEFAULT_SPECS,
    FRONT_LABEL,
    PLOT_COLUMNS,
    Figure,
    PlotSpec,
    build_figure,
    family_styles,
    make_figures,
    method_family,
    parse_plot,
    write_figures,
)
from vq_benchmark.reports.report_table import read_rows
from vq_benchmark.reports.schema import Row, metric

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
FAMILIES = {"ivf", "pq", "sq"}  # sq4 sq8 sqfp16, pq-M8, ivf (inner pq-M8); opq is left out: it trains for seconds
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[Row]:
    tmp = tmp_path_factory.mktemp("plots")
    run_sweep(tmp, "-k", "(sq or pq-M8) and not opq")
    found = read_rows(tmp / "bench.db")
    assert {method_family(r["method"]) for r in found} == FAMILIES
    return found


@pytest.fixture(scope="module")
def run_id(rows: list[Row]) -> str:
    return str(rows[0]["run_id"])


@pytest.fixture(scope="module")
def figures(rows: list[Row], run_id: str) -> list[Figure]:
    return make_figures(rows, run_label=run_id)


def _texts(svg: str) -> list[str]:
    return [(e.text or "").strip() for e in ET.fromstring(svg).iter(f"{SVG}text")]


def _one_line(exc: pytest.ExceptionInfo[ReportError]) -> str:
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and text.strip() == text, text
    return text


def test_default_specs_give_three_figures(figures: list[Figure]) -> None:
    assert [f.name for f in figures] == [f"dummy-small.{s.name}" for s in DEFAULT_SPECS]
    assert figures[0].name == "dummy-small.recall_at_10-vs-code_bytes"
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", f.name) for f in figures)


def test_png_decodes(figures: list[Figure]) -> None:
    import matplotlib.image

    for fig in figures:
        assert fig.png.startswith(PNG_MAGIC)
        assert 5_000 < len(fig.png) < 100_000
        assert b"tIME" not in fig.png and b"Software" not in fig.png  # no timestamp, no version string
        height, width, _ = matplotlib.image.imread(io.BytesIO(fig.png), format="png").shape
        assert (width, height) == (640, 420)


def test_svg_holds_title_labels_and_legend(figures: list[Figure], run_id: str) -> None:
    labels = [
        ("bytes per vector (B)", "recall@10"),
        ("QPS (1/s)", "recall@10"),
        ("bytes per vector (B)", "relative MSE"),
    ]
    for fig, (xlabel, ylabel) in zip(figures, labels, strict=True):
        texts = _texts(fig.svg)
        assert f"dummy-small: {ylabel} vs {xlabel}" in texts
        assert f"n=2,000, 100 queries, run {run_id}" in texts
        assert f"dummy-small: {ylabel} vs {xlabel} - n=2,000, 100 queries, run {run_id}" == fig.title
        assert {xlabel, ylabel, FRONT_LABEL} | FAMILIES <= set(texts)
        ids = {e.get("id") for e in ET.fromstring(fig.svg).iter(f"{SVG}g")}
        assert {f"family-{f}" for f in FAMILIES} | {"pareto-front"} <= ids
        assert "<dc:date>" not in fig.svg and "Matplotlib v" not in fig.svg


def _points(rows: list[Row], spec: PlotSpec) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["status"] == "ok" and r[spec.x] is not None and r[spec.y] is not None:
            out.setdefault(method_family(r["method"]), []).append((float(r[spec.x]), float(r[spec.y])))
    return {k: sorted(v) for k, v in out.items()}


def _series(fig: object) -> dict[str, list[tuple[float, float]]]:
    (ax,) = fig.axes  # type: ignore[attr-defined]
    return {
        line.get_gid(): list(zip(map(float, line.get_xdata()), map(float, line.get_ydata()), strict=True))
        for line in ax.get_lines()
    }


@pytest.mark.parametrize("spec", DEFAULT_SPECS, ids=lambda s: s.name)
def test_series_are_the_rows_and_the_front_is_pareto(rows: list[Row], run_id: str, spec: PlotSpec) -> None:
    fig = build_figure(rows, spec, run_label=run_id)
    series = _series(fig)
    expected = _points(rows, spec)
    assert {k: v for k, v in series.items() if k != "pareto-front"} == {f"family-{k}": v for k, v in expected.items()}
    assert sum(map(len, expected.values())) == sum(r["status"] == "ok" for r in rows) == 5
    flat = [p for pts in expected.values() for p in pts]
    directions = (metric(spec.x).higher_is_better, metric(spec.y).higher_is_better)
    front = sorted(flat[i] for i in pareto_front(flat, directions))
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "pareto-front")
    assert line.get_label() == FRONT_LABEL and line.get_drawstyle().startswith("steps")
    assert series["pareto-front"] == front and len(front) >= 2


def test_null_and_failed_rows_are_left_out(rows: list[Row], run_id: str) -> None:
    changed = [dict(r) for r in rows]
    by_method = {r["method"]: r for r in changed}
    by_method["sq4"]["recall_at_10"] = None
    by_method["sq8"].update(status="failed", error="boom")
    spec = DEFAULT_SPECS[0]
    series = _series(build_figure(changed, spec, run_label=run_id))
    assert series["family-sq"] == _points(changed, spec)["sq"] == [(64.0, float(by_method["sqfp16"]["recall_at_10"]))]
    assert sum(len(v) for k, v in series.items() if k.startswith("family-")) == 3


def test_a_figure_without_points_is_skipped_and_none_at_all_is_an_error(rows: list[Row], run_id: str) -> None:
    no_mse = [{**r, "relative_mse": None} for r in rows]
    names = [f.name for f in make_figures(no_mse, DEFAULT_SPECS[:1] + DEFAULT_SPECS[2:], run_label=run_id)]
    assert names == ["dummy-small.recall_at_10-vs-code_bytes"]
    with pytest.raises(ReportError) as exc:
        make_figures(no_mse, DEFAULT_SPECS[2:], run_label=run_id)
    assert "nothing to plot" in _one_line(exc) and "x=code_bytes,y=relative_mse,logy" in str(exc.value)
    with pytest.raises(ReportError) as exc:
        make_figures([{**r, "status": "failed"} for r in rows], run_label=run_id)
    assert "none of the 0 ok rows" in _one_line(exc)


def test_log_scales_follow_the_spec(rows: list[Row], run_id: str) -> None:
    scales = []
    for spec in DEFAULT_SPECS:
        (ax,) = build_figure(rows, spec, run_label=run_id).axes  # type: ignore[union-attr]
        scales.append((ax.get_xscale(), ax.get_yscale()))
        assert (ax.get_xlabel(), ax.get_ylabel()) == (plots.axis_label(spec.x), plots.axis_label(spec.y))
    assert scales == [("linear", "linear"), ("log", "linear"), ("linear", "log")]


def test_log_axis_drops_non_positive_values(rows: list[Row], run_id: str) -> None:
    zero = [{**r, "relative_mse": 0.0} if r["method"] == "sqfp16" else r for r in rows]
    series = _series(build_figure(zero, DEFAULT_SPECS[2], run_label=run_id))
    assert [x for x, _ in series["family-sq"]] == [16.0, 32.0]


def test_each_family_has_its_own_marker_and_linestyle(rows: list[Row], run_id: str) -> None:
    (ax,) = build_figure(rows, DEFAULT_SPECS[0], run_label=run_id).axes  # type: ignore[union-attr]
    lines = [ln for ln in ax.get_lines() if ln.get_gid().startswith("family-")]
    assert len(lines) == len(FAMILIES)
    assert len({ln.get_marker() for ln in lines}) == len(lines)
    assert len({str(ln.get_linestyle()) for ln in lines}) == len(lines)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [*sorted(FAMILIES), FRONT_LABEL]
    many = family_styles([f"m{i:02d}" for i in range(64)])
    assert len({(m, str(ls)) for m, ls, _ in many.values()}) == 64
    first = list(many.values())[:8]
    assert len({m for m, _, _ in first}) == len({str(ls) for _, ls, _ in first}) == 8
    assert family_styles(["pq", "sq"])["sq"] == family_styles(["sq", "pq", "sq"])["sq"]


@pytest.mark.parametrize(
    ("method", "family"),
    [
        ("sq4", "sq"),
        ("sq8", "sq"),
        ("sqfp16", "sq"),
        ("sqbf16", "sq"),
        ("SQ6", "sq"),
        ("pq", "pq"),
        ("pqfs", "pq"),
        ("opq", "opq"),
        ("rabitqfs", "rabitq"),
        ("ivf", "ivf"),
        ("itq_lsh", "itq_lsh"),
        ("faiss", "faiss"),
        (None, "unknown"),
    ],
)
def test_method_family(method: str | None, family: str) -> None:
    assert method_family(method) == family


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("x=code_bytes,y=recall_at_100", PlotSpec("code_bytes", "recall_at_100")),
        (" x = qps , y = recall_at_10 , logx", PlotSpec("qps", "recall_at_10", log_x=True)),
        ("y=relative_mse,x=code_bytes,log=y", PlotSpec("code_bytes", "relative_mse", log_y=True)),
        ("x=n_base,y=train_s,LOG=XY", PlotSpec("n_base", "train_s", True, True)),
        ("x=dim,y=mse,logy,logx,", PlotSpec("dim", "mse", True, True)),
    ],
)
def test_parse_plot_accepts(text: str, spec: PlotSpec) -> None:
    assert parse_plot(text) == spec


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no x and no y given"),
        ("x=code_bytes", "no y given"),
        ("x=bytes,y=recall_at_10", "unknown metric 'bytes' for x"),
        ("x=code_bytes,y=Recall_at_10", "unknown metric 'Recall_at_10' for y"),
        ("x=code_bytes,y=recall_at_10,logz", "cannot read 'logz'"),
        ("x=code_bytes,y=recall_at_10,log=z", "cannot read 'log=z'"),
        ("code_bytes,recall_at_10", "cannot read 'code_bytes'"),
        ("x=qps,x=mse,y=mse", "x given twice"),
    ],
)
def test_parse_plot_rejects_in_one_line(text: str, why: str) -> None:
    with pytest.raises(ReportError) as exc:
        parse_plot(text)
    line = _one_line(exc)
    assert line.startswith(f"--plot {text!r}: {why}; expected x=NAME,y=NAME[,logx][,logy] with NAME one of: ")
    assert all(name in line for name in ("code_bytes", "recall_at_10", "qps", "relative_mse", "n_base"))


@given(st.sampled_from(PLOT_COLUMNS), st.sampled_from(PLOT_COLUMNS), st.booleans(), st.booleans())
def test_parse_plot_round_trips(x: str, y: str, log_x: bool, log_y: bool) -> None:
    spec = PlotSpec(x, y, log_x, log_y)
    assert parse_plot(spec.option()) == spec
    assert spec.name == f"{y}-vs-{x}"
    plots.axis_label(x)  # every plottable column has a label


@given(st.text(max_size=40))
def test_parse_plot_any_text_is_a_spec_or_one_line(text: str) -> None:
    try:
        spec = parse_plot(text)
    except ReportError as exc:
        assert len(str(exc).splitlines()) == 1
    else:
        assert spec.x in PLOT_COLUMNS and spec.y in PLOT_COLUMNS


def test_axis_labels_carry_units() -> None:
    assert plots.axis_label("code_bytes") == "bytes per vector (B)"
    assert plots.axis_label("qps") == "QPS (1/s)"
    assert plots.axis_label("qps_median") == "QPS median (1/s)"
    assert plots.axis_label("recall_at_10") == "recall@10"
    assert plots.axis_label("one_recall_at_100") == "1-recall@100"
    assert plots.axis_label("latency_p99_ms") == "latency p99 (ms)"
    assert plots.axis_label("train_s") == "train time (s)"


def test_write_figures_and_unwritable_target(figures: list[Figure], tmp_path: Path) -> None:
    out = tmp_path / "a" / "plots"
    written = write_figures(figures, out)
    assert [p.name for p in written] == [f"{f.name}.{ext}" for f in figures for ext in ("png", "svg")]
    for fig in figures:
        assert (out / f"{fig.name}.png").read_bytes() == fig.png
        assert (out / f"{fig.name}.svg").read_text(encoding="utf-8") == fig.svg
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # no temp files left
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker, blocker / "sub"):
        with pytest.raises(ReportError) as exc:
            write_figures(figures, target)
        assert _one_line(exc).startswith(f"cannot write {target}: ")
    with pytest.raises(ReportError) as exc:
        write_figures([Figure("../escape", "t", b"", "")], out)
    assert "expected only [A-Za-z0-9_.-]" in _one_line(exc)


def test_same_rows_give_identical_files(rows: list[Row], run_id: str, figures: list[Figure]) -> None:
    again = make_figures(list(reversed(rows)), run_label=run_id)
    assert [(f.name, f.svg, f.png) for f in again] == [(f.name, f.svg, f.png) for f in figures]


def test_datasets_get_their_own_figures_with_safe_names(rows: list[Row], run_id: str) -> None:
    other = [{**r, "dataset": "my set/v2"} for r in rows if r["method"] != "sq4"]
    figs = make_figures([*rows, *other], DEFAULT_SPECS[:1], run_label=run_id)
    assert [f.name for f in figs] == ["dummy-small.recall_at_10-vs-code_bytes", "my_set_v2.recall_at_10-vs-code_bytes"]
    assert figs[1].title.startswith("my set/v2: recall@10 vs bytes per vector (B)")


def test_missing_matplotlib_is_one_line(rows: list[Row], monkeypatch: pytest.MonkeyPatch) -> None:
    real = plots.importlib.util.find_spec
    monkeypatch.setattr(
        plots.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    with pytest.raises(ReportError) as exc:
        make_figures(rows, run_label="r")
    assert _one_line(exc) == "plots need matplotlib: pip install 'vq-benchmark[plots]'"


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, vq_benchmark.reports.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
