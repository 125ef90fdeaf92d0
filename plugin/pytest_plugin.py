"""pytest wiring only, registered through the `pytest11` entry point of every environment vq-benchmark is in.

So it stays dormant: options are declared (cheap), but nothing is resolved, validated, imported (faiss, numpy)
or printed until a vq-benchmark case is collected - in a plain session when the `vq_case` fixture is
parametrized, on an xdist controller when a worker reports collected case ids. Then the hooks delegate to a
`BenchSession`. Rows travel on test reports (`report.vq_row`), so under xdist they reach the controller as
each case ends and survive a later worker crash; only the controller (or a plain session) writes files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vq_benchmark.plugin import live_output
from vq_benchmark.plugin.run_id import new_run_id
from vq_benchmark.plugin.settings import SETTINGS, SettingError, Settings, available_cores, resolve_settings

if TYPE_CHECKING:
    from vq_benchmark.plugin.bench_session import BenchSession
    from vq_benchmark.vq_cases.sweep import Case

CASE_FIXTURE = "vq_case"
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MEASURED_KEY = pytest.StashKey[dict]()
RESUMED_KEY = pytest.StashKey[tuple]()
CONTEXT_KEY = pytest.StashKey[dict]()
WORKER_USAGE_MARK = "vq-benchmark usage error: "
# How an xdist controller, which collects nothing itself, recognises the shipped case module in workers' ids.
CASE_NODEID = re.compile(r"(^|/)test_cases\.py::test_case\[(?P<case>[^\]]*)\]$")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vq-benchmark", "vector quantization benchmark")
    for s in SETTINGS:
        env = " / ".join(s.env)
        default = f"default: {s.default}" if s.default is not None else "no default"
        help_text = f"{s.help} (env {env}; {default})"
        if s.kind == "flag":  # a flag on the command line; env and ini take true/false words
            group.addoption(s.option, dest=s.dest, action="store_const", const="true", default=None, help=help_text)
        else:
            group.addoption(s.option, dest=s.dest, default=None, help=help_text)
        parser.addini(s.ini, f"{s.help} (same as {s.option})", default="")
    group.addoption(
        "--vq-case",
        dest="vq_case_ids",
        action="append",
        default=[],
        metavar="CASE_ID",
        help="run only this case id (repeatable; the rerun files of `vq-benchmark merge` hold these)",
    )


class _State:
    """Per-config plugin state. `bench` stays None - nothing imported, nothing printed - until activation."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.bench: BenchSession | None = None
        self.usage_error: str | None = None
        self.controller_checked = False
        self._provisional_run_id: str | None = None
        self.terminal_tty = live_output.stdout_is_terminal()  # now, before collection captures fd 1

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def provisional_run_id(self) -> str:
        """The run id a controller hands its workers before it knows whether any case will be collected."""
        if self._provisional_run_id is None:
            self._provisional_run_id = new_run_id()
        return self._provisional_run_id

    def resolve(self) -> Settings:
        c = self.config
        options = {s.name: c.getoption(s.dest) for s in SETTINGS}
        ini = {s.name: str(c.getini(s.ini) or "") for s in SETTINGS}
        ini_dir = Path(c.inipath).parent if c.inipath else None
        return resolve_settings(options, os.environ, ini, cwd=Path(c.invocation_params.dir), ini_dir=ini_dir)

    def activate(self) -> BenchSession:
        """Resolve settings and build the session (SettingError on a bad setting). Idempotent."""
        if self.bench is not None:
            return self.bench
        settings = self.resolve()
        # faiss's OpenMP threads spin-wait by default, which on a busy machine cost 4x; the policy is read when
        # the OpenMP runtime loads, so it is set before the first faiss import (a user's own value wins).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from vq_benchmark.plugin.bench_session import BenchSession

        only = tuple(self.config.getoption("vq_case_ids") or ())
        if self.is_worker:
            winput = self.config.workerinput  # type: ignore[attr-defined]
            run_id = settings.run_id or winput["vq_run_id"]
            workers = int(winput.get("workercount", 1))
            share = str(settings.threads or max(1, available_cores() // workers))
            for var in BLAS_THREAD_VARS:  # numpy's BLAS (ground truth, scoring) shares the cores as faiss does
                os.environ.setdefault(var, share)
            self.bench = BenchSession(settings, run_id, winput["workerid"], workers, only_cases=only)
            self.bench.start_worker_watchdog()
        else:
            self.bench = BenchSession(settings, settings.run_id or self.provisional_run_id(), only_cases=only)
            live_output.install(self.config, tty=self.terminal_tty)  # long work draws its bars on the terminal
        return self.bench


STATE_KEY = pytest.StashKey[_State]()


def _state(config: pytest.Config) -> _State:
    return config.stash[STATE_KEY]


def _usage_message(state: _State, exc: Exception) -> str | None:
    """The one-line message of a problem the user caused (bad setting, sweep, dataset, path), else None."""
    if isinstance(exc, SettingError) or (state.bench is not None and isinstance(exc, state.bench.usage_errors)):
        return str(exc)
    return None


def _usage(state: _State, action) -> Any:
    """Run `action`; a usage problem it raises becomes pytest.UsageError (exit code 4, one line)."""
    try:
        return action()
    except Exception as exc:
        message = _usage_message(state, exc)
        if message is None:
            raise
        raise pytest.UsageError(message) from None


def pytest_configure(config: pytest.Config) -> None:
    state = config.stash[STATE_KEY] = _State(config)
    if not state.is_worker:
        config.pluginmanager.register(_Recorder(state), "vq-benchmark-recorder")
    if config.pluginmanager.hasplugin("xdist") and not state.is_worker:
        config.pluginmanager.register(_XdistController(state), "vq-benchmark-xdist")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if CASE_FIXTURE not in metafunc.fixturenames:
        return
    state = _state(metafunc.config)
    cases: list[Case] = []
    try:
        cases = state.activate().cases()
    except Exception as exc:
        state.usage_error = _usage_message(state, exc)
        if state.usage_error is None:
            raise
    if state.usage_error and state.is_worker:  # a failed collect report reaches the controller: it exits 4
        pytest.fail(WORKER_USAGE_MARK + state.usage_error, pytrace=False)
    params = [
        pytest.param(c, id=c.case_id, marks=() if c.skip is None else pytest.mark.skip(reason=c.skip)) for c in cases
    ]
    metafunc.parametrize(CASE_FIXTURE, params)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After -k/-m: keep this process's cases (--vq-case, shard), longest first. A settings, sweep or
    dataset-name problem found during collection is one usage-error line (exit code 4)."""
    state = _state(config)
    if state.usage_error and not state.is_worker:
        raise pytest.UsageError(state.usage_error)
    if state.bench is None or not any(_case_of(i) for i in items):
        return
    freeze = not config.option.collectonly
    keep, dropped = _usage(state, lambda: state.bench.select_items(items, _case_of, freeze=freeze))  # type: ignore
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    """--vq-resume: a case with an ok row for the same data is skipped, naming that row's run."""
    state = _state(item.config)
    case = _case_of(item)
    if state.bench is None or case is None:
        return
    resumed = state.bench.resumed(case.case_id)
    if resumed is not None:
        item.stash[RESUMED_KEY] = resumed
        pytest.skip(resumed[0])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """After the last case of a dataset in this process (the next one is of another dataset, or none), release
    the dataset and its memoized codec: memory holds one dataset at a time."""
    try:
        return (yield)
    finally:
        state = _state(item.config)
        case = _case_of(item)
        if state.bench is not None and case is not None:
            state.bench.after_case(case, _case_of(nextitem) if nextitem is not None else None)


def _case_of(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(CASE_FIXTURE) if callspec is not None else None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before any case runs (after -k deselection): check every output path, open the database and the
    dataset, so a bad path or bad data is one usage-error line instead of a failure in the middle of a sweep."""
    config = session.config
    state = _state(config)
    if state.bench is None or state.is_worker or config.option.collectonly:
        return
    bench = state.bench
    if any(_case_of(i) for i in session.items):
        _usage(state, bench.prepare)
    elif bench.layout.kind == "shard":  # an empty shard still reports in, so merge sees every shard
        _usage(state, lambda: bench.prepare(open_dataset=False))


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    state = _state(config)
    if state.bench is None or state.is_worker:
        return []
    if not any(_case_of(i) for i in items) and state.bench.layout.kind != "shard":
        return []
    return state.bench.header_lines()


class _XdistController:
    """Controller side of xdist: one run id for all workers; activation and checks when cases are collected."""

    def __init__(self, state: _State) -> None:
        self.state = state

    @pytest.hookimpl(tryfirst=True, optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        """`-n N` (dist load): vq-benchmark cases go longest first to whichever worker is free; any other
        collection is scheduled exactly as xdist's load scheduler does."""
        if config.getvalue("dist") != "load":
            return None
        from vq_benchmark.plugin.xdist_scheduler import LongestFirstScheduling

        return LongestFirstScheduling(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput["vq_run_id"] = self.state.provisional_run_id()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        state = self.state
        if state.controller_checked or not any(CASE_NODEID.search(i) for i in ids):
            return
        state.controller_checked = True
        bench = _usage(state, state.activate)
        _usage(state, bench.cases)
        bench.note_collected([m["case"] for i in ids if (m := CASE_NODEID.search(i))])
        _usage(state, lambda: bench.prepare(keep_dataset=False))
        reporter = self.state.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for line in bench.header_lines():
                reporter.write_line(line)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A worker's usage error arrives as a failed collect report: end the session with its one line."""
        text = str(report.longrepr) if report.failed else ""
        if text.startswith(WORKER_USAGE_MARK):
            raise pytest.UsageError(text[len(WORKER_USAGE_MARK) :].strip())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        bench = self.state.bench
        if bench is None:
            return
        if error is not None:
            bench.note_worker_down(node)
        bench.note_worker_selection(getattr(node, "workeroutput", {}).get("vq_selection"))


@pytest.fixture(scope="session")
def vq_session(request: pytest.FixtureRequest) -> BenchSession:
    """The benchmark session of this process (activated when the first case was collected)."""
    state = _state(request.config)
    return _usage(state, state.activate)


@pytest.fixture(scope="session")
def vq_settings(vq_session: BenchSession) -> Settings:
    """The resolved, typed settings (option > env > ini > default)."""
    return vq_session.settings


@pytest.fixture(scope="session")
def vq_dataset_pool(vq_session: BenchSession):
    """Opens each dataset once per process; the session fixtures in `fixtures/session.py` draw from it."""
    return vq_session.pool


@pytest.fixture
def vq_run_case(request: pytest.FixtureRequest, vq_session: BenchSession, vq_dataset, vq_train_sample):
    """Run the requested case and keep what it measured for its row; the test only asserts on the result.

    A case whose parameters do not fit the dataset, or that would not fit in memory, is skipped with the reason."""
    from vq_benchmark.plugin.benchmark_json import search_timing
    from vq_benchmark.vq_cases.case_check import case_skip_reason  # faiss: only once cases run
    from vq_benchmark.vq_cases.methods import BUILD_ERRORS

    def run(case: Case) -> dict:
        request.node.stash[CONTEXT_KEY] = vq_session.dataset_context(vq_dataset)
        reason = case_skip_reason(case, vq_dataset, int(vq_train_sample.shape[0]))
        if reason is not None:
            pytest.skip(reason)
        try:
            with search_timing(request, vq_session.settings) as timing:  # pytest-benchmark's timer where active
                measured = vq_session.run(case, vq_dataset, vq_train_sample)
                timing.report(measured)
        except BUILD_ERRORS as exc:  # a method's own one-line complaint (bad factory, broken quantizer)
            pytest.fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, pytrace=False)
        request.node.stash[MEASURED_KEY] = measured
        return measured

    return run


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the case's row (ok, failed or skipped) to the report of the phase that decides its status."""
    report = yield
    state = _state(item.config)
    case = _case_of(item)
    if state.bench is None or case is None:
        return report
    if RESUMED_KEY in item.stash:  # the ok row stands; it is copied into this run only from another database
        copied = item.stash[RESUMED_KEY][1]
        if copied is not None and report.when == "setup":
            report.vq_row = copied
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        report.vq_row = state.bench.row_from_report(
            case,
            report,
            call.excinfo,
            measured=item.stash.get(MEASURED_KEY, None),
            context=item.stash.get(CONTEXT_KEY, None),
        )
        if state.is_worker:
            state.bench.log_worker_row(report.vq_row)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker hands its selection (the case list before sharding) to the controller's manifest."""
    state = _state(session.config)
    if state.is_worker and state.bench is not None and state.bench.selection is not None:
        sel = state.bench.selection
        session.config.workeroutput["vq_selection"] = {"all_ids": list(sel.all_ids), "selected": list(sel.selected)}


class _Recorder:
    """Controller-side (or plain session) sink: every report carrying a row is persisted as it arrives."""

    def __init__(self, state: _State) -> None:
        self.state = state

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        bench = self.state.bench
        if bench is None:
            return
        row = getattr(report, "vq_row", None)
        if row is None and report.failed and report.when not in ("setup", "call", "teardown"):
            match = CASE_NODEID.search(report.nodeid)  # xdist's report for a case whose worker died
            row = bench.crash_row(match["case"], report) if match else None
        if row is None:
            return
        problem = bench.record(row)
        if problem is not None:  # the case is marked failed; every other row is kept
            report.outcome = "failed"
            report.longrepr = problem

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        bench = self.state.bench
        if bench is None:
            return
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and bench.layout.kind == "shard":
            session.exitstatus = pytest.ExitCode.OK  # a shard left empty by balancing did its job
        bench.finish(int(session.exitstatus))
        from vq_benchmark.plugin.benchmark_json import write_benchmark_json

        write_benchmark_json(session.config, bench)  # --vq-benchmark-json, when set

    def pytest_terminal_summary(self, terminalreporter) -> None:
        bench = self.state.bench
        lines = bench.summary_lines() if bench is not None else []
        if lines:
            terminalreporter.write_sep("=", bench.summary_title)  # type: ignore[union-attr]
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_unconfigure(self) -> None:
        if self.state.bench is not None:
            self.state.bench.close()
            live_output.uninstall()
