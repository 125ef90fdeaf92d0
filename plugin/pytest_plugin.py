"""pytest wiring only: options, header, case generation, row capture and the summary table.

Registered through the `pytest11` entry point. Each hook delegates to `BenchSession`; rows travel on test
reports (`report.vq_row`), so under xdist they reach the controller as each case ends and survive a later
worker crash. Only the controller (or a plain session) writes files.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest

from vq_benchmark.fixtures.registry import DatasetError
from vq_benchmark.fixtures.session import vq_dataset, vq_session, vq_train_sample
from vq_benchmark.plugin.bench_session import BenchSession, new_run_id, utc_now
from vq_benchmark.plugin.provenance import provenance
from vq_benchmark.plugin.settings import SETTINGS, SettingError, describe, resolve_settings
from vq_benchmark.reports.sqlite_store import StoreError
from vq_benchmark.reports.summary import summary_table
from vq_benchmark.vq_cases.methods import MethodError
from vq_benchmark.vq_cases.runner import CaseOutputs, run_case
from vq_benchmark.vq_cases.sweep import Case

__all__ = ["vq_dataset", "vq_session", "vq_train_sample"]

SESSION_KEY = pytest.StashKey[BenchSession]()
USAGE_ERROR_KEY = pytest.StashKey[str]()
ROW_KEY = pytest.StashKey[dict]()
CASE_FIXTURE = "vq_case"
USAGE_ERRORS = (DatasetError, MethodError)  # what reading the case list can raise


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vq-benchmark", "vector quantization benchmark")
    for s in SETTINGS:
        env = " / ".join(s.env)
        default = f"default: {s.default}" if s.default is not None else "no default"
        group.addoption(s.option, dest=s.dest, default=None, help=f"{s.help} (env {env}; {default})")
        parser.addini(s.ini, f"{s.help} (same as {s.option})", default="")


def bench_session(config: pytest.Config) -> BenchSession:
    return config.stash[SESSION_KEY]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    options = {s.name: config.getoption(s.dest) for s in SETTINGS}
    ini = {s.name: str(config.getini(s.ini) or "") for s in SETTINGS}
    ini_dir = Path(config.inipath).parent if config.inipath else None
    try:
        settings = resolve_settings(options, os.environ, ini, cwd=Path(config.invocation_params.dir), ini_dir=ini_dir)
    except SettingError as exc:
        raise pytest.UsageError(str(exc)) from None
    if _is_worker(config):
        run_id, worker = config.workerinput["vq_run_id"], config.workerinput["workerid"]
        n_workers = int(config.workerinput.get("workercount", 1))
    else:
        run_id, worker, n_workers = settings["run-id"].value or new_run_id(), "main", 1
    session = config.stash[SESSION_KEY] = BenchSession(settings, run_id, worker, n_workers)
    if not _is_worker(config):
        config.pluginmanager.register(_Recorder(session), "vq-benchmark-recorder")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "vq-benchmark-xdist")


class _XdistHooks:
    """Hands the controller's run id to every worker so that arrays and rows agree on one run."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput["vq_run_id"] = bench_session(node.config).run_id


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = bench_session(config)
    return [f"vq-benchmark run {session.run_id}; settings (option > env > ini > default):", *describe(session.settings)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CASE_FIXTURE not in metafunc.fixturenames:
        return
    config = metafunc.config
    try:
        cases = bench_session(config).cases()
    except USAGE_ERRORS as exc:
        config.stash[USAGE_ERROR_KEY] = str(exc)
        cases = []
    metafunc.parametrize(CASE_FIXTURE, cases, ids=[c.case_id for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Turn a sweep/dataset problem found during collection into one usage-error line (exit code 4)."""
    if USAGE_ERROR_KEY in config.stash:
        raise pytest.UsageError(config.stash[USAGE_ERROR_KEY])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before any case runs (and after -k deselection): open the database and the dataset, so a bad path or
    a ground truth that does not fit is one usage-error line instead of a failure in the middle of a sweep."""
    config = session.config
    if _is_worker(config) or config.option.collectonly or not any(_case_of(i) for i in session.items):
        return
    bench = bench_session(config)
    try:
        bench.open_store()
        bench.dataset()
    except (StoreError, DatasetError) as exc:
        raise pytest.UsageError(str(exc)) from None


def _case_of(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(CASE_FIXTURE) if callspec is not None else None


@pytest.fixture
def vq_run_case(request: pytest.FixtureRequest, vq_session: BenchSession, vq_dataset, vq_train_sample):
    """Run the requested case and keep its row for the report; the test only asserts on it."""

    def run(case: Case) -> dict:
        outputs = CaseOutputs(
            arrays_dir=vq_session.arrays_dir,
            codec_path=vq_session.codec_path(vq_dataset.fingerprint, case.case_id),
        )
        row = run_case(case, vq_dataset, vq_train_sample, outputs)
        row.update(
            seed=vq_session.value("seed"), dataset_fingerprint=vq_dataset.fingerprint, gt_source=vq_dataset.gt_source
        )
        request.node.stash[ROW_KEY] = row
        return row

    return run


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    text = "".join(traceback.format_exception_only(excinfo.type, excinfo.value)).strip()
    return text.splitlines()[-1] if text else excinfo.typename


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the case's row (ok, failed or skipped) to the report of the phase that decides its status."""
    report = yield
    case = _case_of(item)
    if case is None:
        return report
    decisive = report.when == "call" or (report.when == "setup" and not report.passed)
    if not decisive:
        return report
    session = bench_session(item.config)
    row = dict(item.stash.get(ROW_KEY, {}))
    row.setdefault("case_id", case.case_id)
    row.setdefault("dataset", case.dataset)
    row.setdefault("method", case.method)
    row.setdefault("params_json", case.params_json)
    if report.passed:
        row["status"] = "ok"
    elif report.skipped:
        row["status"] = "skipped"
        longrepr = report.longrepr
        row["error"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
    else:
        row["status"] = "failed"
        row["error"] = _one_line(call.excinfo) if call.excinfo else "failed"
    row.update(provenance(), run_id=session.run_id, worker=session.worker, created_at=utc_now())
    report.vq_row = row
    return report


class _Recorder:
    """Controller-side (or plain session) sink: every report carrying a row is persisted as it arrives."""

    def __init__(self, session: BenchSession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = getattr(report, "vq_row", None)
        if row is not None:
            self.session.record(row)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    session = bench_session(config)
    if not session.rows:
        return
    terminalreporter.write_sep("=", f"vq-benchmark results (run {session.run_id})")
    terminalreporter.write_line(summary_table(session.rows))
    terminalreporter.write_line(f"SQLite: {session.value('db-path')}  (table results, run_id='{session.run_id}')")
    terminalreporter.write_line(f"JSON:   {session.json_path}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        bench_session(config).close()
