"""`vq-benchmark report --html/--plots`: the self-contained page of a real run (table, plots, provenance, metric
definitions), its sort script in real headless Chromium, the run folder's settings, and the one-line usage errors.

The browser test needs Debian `chromium` + `chromium-driver` and the `selenium` package (the `test` extra). Without
them it skips, except under CI (env CI set), where it fails: CI installs them, so a skip would hide a broken setup.
Set VQ_SCREENSHOT_DIR to a folder to keep the browser's screenshot of the page (`html_report.png`) for a human.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sweeps import run_sweep

from vq_benchmark.plugin.cli import main
from vq_benchmark.reports.html_page import render_html, write_html
from vq_benchmark.reports.report_table import REPORT_METRICS, build_report
from vq_benchmark.reports.run_provenance import gather_provenance, int_ranges, run_settings
from vq_benchmark.reports.schema import metric

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEYWORD = "sq8 or sq4 or (pq and not opq and not ivf)"  # 5 cases of dummy-small, about 2 s


@dataclass(frozen=True)
class Run:
    tmp: Path
    db: Path
    run_dir: Path
    run_id: str
    case_ids: list[str]
    first_row: dict


@dataclass(frozen=True)
class Page:
    path: Path
    text: str
    stdout: str
    plots: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("html")
    run_sweep(tmp, "-k", KEYWORD)
    conn = sqlite3.connect(tmp / "bench.db")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY case_id")]
    conn.close()
    assert len({r["run_id"] for r in rows}) == 1 and len(rows) == 5
    return Run(tmp, tmp / "bench.db", tmp / "runs", rows[0]["run_id"], [r["case_id"] for r in rows], rows[0])


def _main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["report", *argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def page(run: Run) -> Page:
    html_path, plots = run.tmp / "out" / "page.html", run.tmp / "out" / "plots"
    argv = [str(run.db), "--html", str(html_path), "--plots", str(plots), "--run-dir", str(run.run_dir)]
    rc, out, err = _main(*argv, "--plot", "x=code_bytes,y=recall_at_100")
    assert rc == 0 and not err, err
    return Page(html_path, html_path.read_text(encoding="utf-8"), out, plots)


class _Collector(HTMLParser):
    """Every start tag with its attributes, and the case ids of the body rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.body_rows: list[str | None] = []
        self.in_tbody = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.in_tbody += tag == "tbody"
        if tag == "tr" and self.in_tbody:
            self.body_rows.append(dict(attrs).get("data-case-id"))

    def handle_endtag(self, tag: str) -> None:
        self.in_tbody -= tag == "tbody"


def _parse(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


def _cases_table_rows(text: str) -> list[str | None]:
    """Body rows of the cases table only (the settings table has a tbody too)."""
    start = text.index('<table class="cases">')
    return _parse(text[start : text.index("</table>", start)]).body_rows


def test_page_is_self_contained(page: Page) -> None:
    parsed = _parse(page.text)
    assert "http://" not in page.text and "https://" not in page.text
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "srcset", "action", "data"):
            value = attrs.get(name)
            if value is not None:
                assert not value.startswith("//") and "://" not in value, f"<{tag} {name}={value[:80]!r}>"
        assert tag not in ("link", "iframe", "object", "embed"), f"external-capable <{tag}> in the page"
        if tag == "script":
            assert "src" not in attrs
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert images and len(images) == len(list(page.plots.glob("*.png")))
    for src in images:
        assert src and src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)


def test_one_body_row_per_case(run: Run, page: Page) -> None:
    ids = _cases_table_rows(page.text)
    assert len(ids) == len(run.case_ids) and sorted(ids) == run.case_ids  # type: ignore[type-var]


def test_plots_written_and_listed(page: Page) -> None:
    listed = [line for line in page.stdout.splitlines() if line.endswith((".png", ".svg"))]
    assert listed and all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in listed)
    assert any("recall_at_100-vs-code_bytes" in p for p in listed)  # the --plot spec, beside the defaults
    assert page.stdout.splitlines()[-1] == str(page.path)
    assert "pareto" in page.stdout.splitlines()[0]  # the table still comes first


def test_provenance_and_settings_shown(run: Run, page: Page) -> None:
    assert run.first_row["git_commit"] and run.first_row["git_commit"] in page.text
    assert f"<td>{run.first_row['faiss_version']}</td>" in page.text
    assert run.first_row["dataset_fingerprint"] in page.text
    assert str(run.run_dir / run.run_id / "results.json") in page.text
    assert f"<td>run-dir</td><td>{run.run_dir}</td><td>option --vq-run-dir</td>" in page.text
    assert "<td>seed</td><td>0</td><td>default</td>" in page.text


def test_metric_definitions_from_registry(page: Page) -> None:
    import html

    for name, _ in REPORT_METRICS:
        assert f'id="metric-{name}"' in page.text
        assert html.escape(metric(name).description) in page.text
    assert "better: higher" in page.text and "better: lower" in page.text


def test_machine_formats_keep_stdout_parseable(run: Run, tmp_path: Path) -> None:
    rc, out, err = _main(str(run.db), "--format", "json", "--run", "all", "--html", str(tmp_path / "p.html"))
    assert rc == 0 and len(json.loads(out)) == len(run.case_ids)
    assert err.splitlines() == [str(tmp_path / "p.html")]
    assert _cases_table_rows((tmp_path / "p.html").read_text())[0] is not None
    assert '<th scope="col" data-type="text" title="run id">run</th>' in (tmp_path / "p.html").read_text()


def test_run_dir_defaults_to_the_setting(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml above: env decides
    monkeypatch.setenv("VQ_RUN_DIR", str(run.run_dir))
    rc, _, err = _main(str(run.db), "--html", "p.html")
    assert rc == 0, err
    assert str(run.run_dir / run.run_id / "results.json") in (tmp_path / "p.html").read_text()


def test_settings_fall_back_to_manifest_and_survive_corruption(run: Run, tmp_path: Path) -> None:
    shutil.copytree(run.run_dir / run.run_id, tmp_path / run.run_id, ignore=shutil.ignore_patterns("arrays"))
    (tmp_path / run.run_id / "results.json").write_text("{ not json")
    found = run_settings(tmp_path, run.run_id)
    assert any("corrupt JSON" in n for n in found.notes) and all("\n" not in n for n in found.notes)
    assert found.origin == (str(tmp_path / run.run_id / "manifest.json"),)
    by_name = {s.name: s for s in found.settings}
    assert by_name["dataset"].value == "dummy-small" and by_name["dataset"].source.startswith("unknown")
    (tmp_path / run.run_id / "manifest.json").write_bytes(b"\x00garbage")
    assert run_settings(tmp_path, run.run_id).settings == ()
    missing = run_settings(tmp_path, "no-such-run")
    assert missing.notes == (
        f"settings not recorded (no results.json or manifest.json under {tmp_path / 'no-such-run'})",
    )
    assert run_settings(tmp_path, "../x").notes[0].startswith("settings not looked up")


def test_merged_shards_report_and_page(tmp_path: Path) -> None:
    """A run split over two shards and merged: the report and the page hold each case once, and the page finds the
    run's settings in the shards' folders (a sharded run has no top-level results.json)."""
    for shard in (0, 1):
        run_sweep(
            tmp_path, "-k", "sq8 or sq4 or sqfp16", "--vq-run-id=split", "--vq-num-shards=2", f"--vq-shard-id={shard}"
        )
    merged = tmp_path / "merged.db"
    assert main(["merge", str(tmp_path / "runs" / "split"), "--db", str(merged)]) == 0
    page_path = tmp_path / "page.html"
    argv = [str(merged), "--format", "json", "--html", str(page_path), "--run-dir", str(tmp_path / "runs")]
    rc, out, err = _main(*argv)
    assert rc == 0, err
    rows = json.loads(out)
    expected = ["dummy-small-sq4", "dummy-small-sq8", "dummy-small-sqfp16"]
    assert sorted(r["case_id"] for r in rows) == expected and {r["run_id"] for r in rows} == {"split"}
    assert any("B" in r["pareto"] for r in rows)  # fronts are marked on the merged rows too
    text = page_path.read_text(encoding="utf-8")
    assert sorted(_cases_table_rows(text)) == expected
    assert "shard-0-of-2" in text and "option --vq-num-shards" in text  # settings with sources, from the shards


def _tiny_png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_page_escapes_and_inlines_hand_made_figures(tmp_path: Path) -> None:
    from vq_benchmark.reports.plots import Figure

    rows = [
        {"run_id": "r1", "case_id": 'x"><script>', "status": "ok", "dataset": "d<1>", "method": "<b>m</b>",
         "params_json": '{"a": "&"}', "code_bytes": 8, "recall_at_10": 0.5, "seed": 3, "git_commit": "abc"},
        {"run_id": "r1", "case_id": "bad", "status": "failed", "dataset": "d<1>", "method": "m", "error": "1 < 2",
         "seed": 4},
    ]  # fmt: skip
    report = build_report(rows)
    prov = gather_provenance(report.rows, tmp_path)
    fig = Figure("f", "t <i>", _tiny_png(), "<svg/>")
    text = render_html(report, [fig], prov, title="T & <T>")
    assert text.count("<script>") == 1 and "<b>m</b>" not in text  # only the page's own sort script
    assert "&lt;b&gt;m&lt;/b&gt;" in text and "failed: 1 &lt; 2" in text and "T &amp; &lt;T&gt;" in text
    assert _cases_table_rows(text) == ['x"><script>', "bad"]
    assert "data:image/png;base64," + base64.b64encode(_tiny_png()).decode() in text
    assert "seeds</th><td>3-4</td>" in text and "settings not recorded" in text
    assert write_html(tmp_path / "a" / "p.html", text).read_text(encoding="utf-8") == text
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"cannot write .*file/p\.html"):
        write_html(blocker / "p.html", text)
    assert int_ranges([0, 1, 2, 5, None, 7, 8]) == "0-2, 5, 7-8, (not recorded)"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--plots", "{tmp}/p", "--plot", "x=nope,y=recall_at_10"], "nope"),
        (["--plot", "x=code_bytes,y=recall_at_10"], "--plot needs --plots DIR or --html FILE"),
        (["--plots", "{tmp}/blocker"], "--plots"),
        (["--plots", "{tmp}/blocker/sub"], "blocker"),
        (["--html", "{tmp}/blocker/page.html"], "--html"),
        (["--html", "{tmp}"], "is a directory"),
    ],
)
def test_usage_errors_are_one_line(run: Run, tmp_path: Path, argv: list[str], expected: str) -> None:
    (tmp_path / "blocker").write_text("a file in the way")
    rc, out, err = _main(str(run.db), *(a.format(tmp=tmp_path) for a in argv))
    assert rc == 2 and not out, out
    assert len(err.splitlines()) == 1 and err.startswith("vq-benchmark: error:") and expected in err, err


def test_html_on_missing_db_is_one_line(tmp_path: Path) -> None:
    rc, out, err = _main(str(tmp_path / "none.db"), "--html", str(tmp_path / "p.html"))
    assert rc == 2 and not out and len(err.splitlines()) == 1 and "none.db: no such file" in err
    assert not (tmp_path / "p.html").exists()


# -- the page in a real browser ---------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; CI installs it (see .ci/run), so this test must not be skipped there")
    pytest.skip(reason)


def _driver() -> Any:  # selenium is optional: its types exist only where it is installed
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    for path, package in ((chromium, "chromium"), (driver_path, "chromium-driver")):
        if not os.access(path, os.X_OK):
            _unavailable(f"{path} not found (Debian: apt-get install chromium chromium-driver; needs {package})")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(options=options, service=Service(driver_path))  # a given driver: no Selenium Manager


_COLUMN_JS = """
const th = document.querySelector('th[data-metric="' + arguments[0] + '"]');
return Array.from(document.querySelectorAll('table.cases tbody tr')).map(
  r => [r.getAttribute('data-case-id'), parseFloat(r.cells[th.cellIndex].getAttribute('data-value'))]);
"""


def test_page_in_headless_chromium(run: Run, page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must never reach the network
    driver = _driver()
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.path.resolve().as_uri())
        images = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        assert images and all(done and width > 0 for done, width in images), images
        # Scoped to the cases table: the browser gives the provenance tables a tbody of their own.
        assert driver.execute_script("return document.querySelectorAll('table.cases tbody tr').length;") == len(
            run.case_ids
        )
        before = driver.execute_script(_COLUMN_JS, "recall_at_10")
        values = [v for _, v in before]
        assert values != sorted(values), "the report's own order is by bytes, not recall: the sort must show"
        header = driver.find_element("css selector", 'th[data-metric="recall_at_10"]')
        header.click()
        ascending = driver.execute_script(_COLUMN_JS, "recall_at_10")
        assert [v for _, v in ascending] == sorted(values) and header.get_attribute("aria-sort") == "ascending"
        header.click()
        descending = driver.execute_script(_COLUMN_JS, "recall_at_10")
        assert [v for _, v in descending] == sorted(values, reverse=True)
        assert header.get_attribute("aria-sort") == "descending"
        assert sorted(c for c, _ in descending) == run.case_ids
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1400, min(int(height) + 100, 8000))  # the whole page in one screenshot
        shot = tmp_path / "html_report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 0 and shot.read_bytes().startswith(PNG_MAGIC)
    keep = os.environ.get("VQ_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
