"""State of one activated benchmark session: settings, run id, the case list, rows and where they go.

The pytest hooks in `plugin.pytest_plugin` only call into this object, so the same logic is usable (and tested)
without a pytest run. Importing this module imports faiss: the plugin does it only once a case is collected.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import pytest

from vq_benchmark.fixtures.loading import LoadedDataset
from vq_benchmark.fixtures.registry import DatasetError
from vq_benchmark.fixtures.session import DatasetPool
from vq_benchmark.plugin.case_plan import ResumeIndex, datasets_in_order, plan_cases
from vq_benchmark.plugin.failures import error_text, exit_description
from vq_benchmark.plugin.layout import SLURM_VARS, output_layout
from vq_benchmark.plugin.output_paths import check_output_paths
from vq_benchmark.plugin.provenance import provenance
from vq_benchmark.plugin.recording import RunFiles
from vq_benchmark.plugin.run_id import utc_now
from vq_benchmark.plugin.selection import Selection, order_and_select, run_durations
from vq_benchmark.plugin.settings import SettingError, Settings, available_cores, describe
from vq_benchmark.reports.atomic import clean_stale_temps
from vq_benchmark.reports.errors import ReportError
from vq_benchmark.reports.jsonl import JsonlLog
from vq_benchmark.reports.manifest import Manifest, write_manifest
from vq_benchmark.reports.rows import make_row
from vq_benchmark.reports.schema import Row
from vq_benchmark.reports.session_summary import counts_line, files_lines, reproduce_command
from vq_benchmark.reports.sqlite_store import StoreError
from vq_benchmark.reports.summary import repeats_table, summary_table
from vq_benchmark.vq_cases.codec_memo import CodecMemo
from vq_benchmark.vq_cases.methods import MethodError
from vq_benchmark.vq_cases.metrics import RECALL_KS
from vq_benchmark.vq_cases.runner import CaseOutputs, case_matrix_fields, run_case
from vq_benchmark.vq_cases.sweep import Case

WATCHDOG_PERIOD_S = 1.0


class BenchSession:
    """One process's view of a run: a plain session, an xdist controller, or an xdist worker."""

    usage_errors: tuple[type[Exception], ...] = (DatasetError, MethodError, SettingError, StoreError, ReportError)

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        worker: str = "main",
        n_workers: int = 1,
        *,
        only_cases: tuple[str, ...] = (),
    ) -> None:
        self.settings, self.run_id, self.worker, self.n_workers = settings, run_id, worker, n_workers
        self.only_cases = only_cases
        self.pool = DatasetPool(
            settings.datasets_file,
            settings.data_dir,
            settings.cache_dir,
            gt_k=max(RECALL_KS),
            limit=settings.dataset_limit,
        )
        self.layout = output_layout(settings, run_id, rerun_cases=only_cases)
        self.files = RunFiles(self.layout.db_path, self.layout.folder)
        self.memo = CodecMemo()
        self.pool.on_release.append(self.memo.drop_dataset)
        self.selection: Selection | None = None
        self.started_at = utc_now()
        self._resumed: ResumeIndex | None = None
        self._cases: list[Case] | None = None
        self._by_id: dict[str, Case] = {}
        self._worker_exits: dict[str, str] = {}
        self._finish_problem: str | None = None
        self.written_files: list[tuple[str, Path]] = []  # (label, path) of files written beside the run's own
        faiss.omp_set_num_threads(self.faiss_threads())

    # -- what is measured -------------------------------------------------------------------------------
    def faiss_threads(self) -> int:
        """--vq-threads, or the machine's cores shared evenly among xdist workers (never oversubscribed)."""
        return self.settings.threads or max(1, available_cores() // self.n_workers)

    def cases(self) -> list[Case]:
        """The sweep expanded for the selected datasets, dataset by dataset (plugin/case_plan.py)."""
        if self._cases is None:
            self._cases = plan_cases(self.settings, self.pool)
            self._by_id = {c.case_id: c for c in self._cases}
        return self._cases

    def case(self, case_id: str) -> Case | None:
        self.cases()
        return self._by_id.get(case_id)

    def seed_of(self, case: Case) -> int:
        """The training seed of a case: its own (repeats, `seeds`), else --vq-seed."""
        return case.training_seed(self.settings.seed)

    def after_case(self, case: Case, next_case: Case | None) -> None:
        """Release the case's dataset (and its memoized codec) when no case of it follows in this process."""
        if next_case is None or next_case.dataset != case.dataset:
            self.pool.release(case.dataset)

    def select_items(self, items: list[Any], case_of: Any, *, freeze: bool = True) -> tuple[list[Any], list[Any]]:
        """Split collected items into (kept, deselected): `--vq-case`, then this shard; cases longest first.
        `freeze=False` (--collect-only) leaves no durations snapshot behind."""
        by_id = {c.case_id: (item, c) for item in items if (c := case_of(item)) is not None}
        unknown = sorted(set(self.only_cases) - set(by_id))
        if unknown and self.worker == "main":  # a typo would otherwise just run nothing
            raise SettingError(
                f"--vq-case: {', '.join(unknown[:5])} is not a collected case (see pytest vq_cases --collect-only)"
            )
        history = run_durations(self.run_path, self.settings.db_path, self.run_id, freeze=freeze)
        self.selection = order_and_select([c for _, c in by_id.values()], self.settings, history, self.only_cases)
        chosen = [by_id[cid][0] for cid in self.selection.selected]
        chosen_set = set(self.selection.selected)
        others = [item for item in items if case_of(item) is None]
        dropped = [item for cid, (item, _) in by_id.items() if cid not in chosen_set]
        return others + chosen, dropped

    def note_collected(self, case_ids: list[str]) -> None:
        """xdist controller: what the workers collected is this process's selection (its pre-shard list comes
        with the workers' output at the end)."""
        if self.selection is None:
            self.selection = Selection(tuple(case_ids), tuple(case_ids))
            self._controller_view = True

    def note_worker_selection(self, info: Any) -> None:
        if isinstance(info, dict) and "all_ids" in info:
            self.selection = Selection(tuple(info["all_ids"]), tuple(info["selected"]))

    def resumed(self, case_id: str) -> tuple[str, Row | None] | None:
        """With --vq-resume: why this case need not run again (an ok row for the same data), and the row to record
        for it in this run when the old row lives in another database (a shard's own), so a merge of this run
        finds every case; None when the case must run."""
        if not self.settings.resume:
            return None
        case = self.case(case_id)
        if case is None or case.skip is not None:
            return None
        if self._resumed is None:  # a merged db, this shard's
            self._resumed = ResumeIndex((self.settings.db_path, self.layout.db_path))
        found = self._resumed.find(case_id, self.pool.fingerprint(case.dataset))
        if found is None:
            return None
        db, old = found
        reason = f"resumed: an ok row for this case and data exists in run {old['run_id']}"
        if db == self.layout.db_path:
            return reason, None
        note = "; ".join(filter(None, [old.get("notes"), f"resumed: measured in run {old['run_id']}"]))
        copy = {k: v for k, v in old.items() if v is not None}
        copy.update(run_id=self.run_id, worker=self.worker, notes=note, created_at=utc_now())
        return reason, copy

    def run(self, case: Case, ds: LoadedDataset, train_x) -> dict[str, Any]:
        outputs = CaseOutputs(
            arrays_dir=self.layout.folder / "arrays",
            codebooks_dir=self.settings.codebooks_dir,
            use_codec_cache=not self.settings.no_codec_cache,
        )
        return run_case(case, ds, train_x, outputs, seed=self.seed_of(case), memo=self.memo)

    def dataset_context(self, ds: LoadedDataset) -> dict[str, Any]:
        context = {"dataset_fingerprint": ds.fingerprint, "gt_source": ds.gt_source}
        if ds.info:  # e.g. msmarco's embedding model and MRR@10 of the exact search
            context["dataset_info_json"] = json.dumps(ds.info, sort_keys=True, default=str)
        return context

    # -- before the first case --------------------------------------------------------------------------
    @property
    def run_path(self) -> Path:
        return self.settings.run_dir / self.run_id

    def prepare(self, *, keep_dataset: bool = True, open_dataset: bool = True) -> None:
        """Check every output path, clear temp files of killed runs, open the database and the run's files,
        and validate every dataset of the selected cases (files, ground truth computed and cached), one at a
        time: each problem raises one of `usage_errors` before any case runs. The dataset of the first case stays
        open for it (`keep_dataset`); an xdist controller runs no case and keeps none."""
        check_output_paths(self.settings)
        for directory in (self.settings.run_dir, self.settings.codebooks_dir, self.settings.cache_dir):
            clean_stale_temps(directory)
        self.files.open()
        if open_dataset:
            self.cases()
            ids = self.selection.selected if self.selection is not None else list(self._by_id)
            order = datasets_in_order(c for i in ids if (c := self._by_id.get(i)) is not None and c.skip is None)
            for name in order[1:] + order[:1]:  # the first case's dataset last, so it can stay open
                self.pool.validate(name, keep=keep_dataset and name == order[0])
        self.write_manifest(exit_status=None)
        self._prepared = True

    _prepared = False

    def write_manifest(self, exit_status: int | None) -> None:
        """What this process was asked to run and how it ended, for `vq-benchmark merge` to check shards."""
        selection = self.selection or Selection((), ())
        write_manifest(
            self.layout.folder,
            Manifest(
                run_id=self.run_id,
                shard_id=self.layout.shard_id,
                num_shards=self.layout.num_shards,
                shard_mode=self.settings.shard_mode,
                case_ids=selection.selected,
                n_cases_total=len(selection.all_ids),
                case_list_sha256=selection.digest,
                started_at=self.started_at,
                finished_at=None if exit_status is None else utc_now(),
                exit_status=exit_status,
                host=socket.gethostname(),
                git_commit=provenance().get("git_commit"),  # type: ignore[arg-type]
                slurm={k: v for k, v in os.environ.items() if k in SLURM_VARS},
                db=self.layout.manifest_db,
                kind=self.layout.kind,
                settings={k: (None if v is None else str(v)) for k, v in self._setting_values().items()},
                all_case_ids=selection.all_ids,
            ),
        )

    def header_lines(self) -> list[str]:
        omp = os.environ.get("OMP_WAIT_POLICY", "(unset)")
        return [
            f"vq-benchmark run {self.run_id}; settings (option > env > ini > default):",
            *describe(self.settings),
            f"  faiss threads per process = {self.faiss_threads()}; OMP_WAIT_POLICY = {omp}",
            *self._shard_lines(),
        ]

    def _shard_lines(self) -> list[str]:
        sel, layout = self.selection, self.layout
        if layout.kind != "shard" or sel is None:
            return []
        of = "" if self._controller_view else f" of {len(sel.all_ids)}"  # an xdist controller sees its share only
        return [f"shard {layout.shard_id}/{layout.num_shards}: {len(sel.selected)}{of} cases -> {layout.folder}"]

    _controller_view = False

    # -- rows ---------------------------------------------------------------------------------------------
    def _context(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        return {
            **provenance(),
            "run_id": self.run_id,
            "worker": self.worker,
            "created_at": utc_now(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            **(extra or {}),
        }

    def row_from_report(
        self,
        case: Case,
        report: pytest.TestReport,
        excinfo: pytest.ExceptionInfo | None,
        *,
        measured: dict[str, Any] | None,
        context: dict[str, Any] | None,
    ) -> Row:
        """The case's row for the phase that decided its status; never raises (a hook must not)."""
        if report.passed:
            status, error = "ok", None
        elif report.skipped:
            longrepr = report.longrepr
            reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
            status, error = "skipped", reason.removeprefix("Skipped: ")  # pytest's prefix says nothing new
        else:
            status, error = "failed", error_text(excinfo)
        try:
            return make_row(
                identity=self.identity(case),
                status=status,
                measured=measured,
                error=error,
                context=self._context(context),
            )
        except Exception as exc:  # a measurement make_row cannot hold: keep the case, say why
            return make_row(
                identity=self.identity(case),
                status="failed",
                error=f"row could not be built: {type(exc).__name__}: {exc}",
                context=self._context(context),
            )

    def identity(self, case: Case) -> dict[str, Any]:
        return {**case_identity(case), "seed": self.seed_of(case)}

    def note_worker_down(self, node: Any) -> None:
        """Remember how a crashed xdist worker ended (its signal), for the row of the case it was running."""
        self._worker_exits[str(node.gateway.id)] = exit_description(node)

    def crash_row(self, case_id: str, report: pytest.TestReport) -> Row | None:
        case = self.case(case_id)
        if case is None:
            return None
        node = getattr(report, "node", None)
        gateway = str(getattr(getattr(node, "gateway", None), "id", "?"))
        how = self._worker_exits.get(gateway, "exit status unknown")
        return make_row(
            identity=self.identity(case),
            status="failed",
            error=f"worker crashed: xdist worker {gateway} died while running this case ({how})",
            context=self._context({"worker": gateway}),
        )

    def log_worker_row(self, row: Row) -> None:
        """An xdist worker's own append-only log (`results-<gw>.jsonl`): its finished rows survive a killed
        controller. Best effort: the controller records the row too, so a failure here loses nothing."""
        try:
            if self._worker_log is None:
                self._worker_log = JsonlLog(self.layout.folder / f"results-{self.worker}.jsonl")
            self._worker_log.append(row)
        except (StoreError, OSError, ValueError, TypeError):
            pass

    _worker_log: JsonlLog | None = None

    def record(self, row: Row) -> str | None:
        """Persist one finished case at once; the text of a recording failure, or None."""
        return self.files.write(row)

    # -- after the last case ------------------------------------------------------------------------------
    def finish(self, exit_status: int) -> None:
        """Write results.json and the final manifest, once the run got past its checks (never raises)."""
        if not self._prepared:
            return
        meta = {
            "run_id": self.run_id,
            "settings": {k: (None if v is None else str(v)) for k, v in self._setting_values().items()},
            "sources": dict(self.settings.sources),
            "db_path": str(self.layout.db_path),
        }
        self._finish_problem = self.files.finish(meta)
        try:
            self.write_manifest(exit_status)
        except (OSError, ValueError, StoreError) as exc:
            self._finish_problem = f"manifest not written: {exc}"

    def _setting_values(self) -> dict[str, Any]:
        return {name: self.settings.value(name) for name in self.settings.sources}

    @property
    def summary_title(self) -> str:
        return f"vq-benchmark results (run {self.run_id})"

    def summary_lines(self) -> list[str]:
        rows = list(self.files.rows.values())
        if not rows:
            return []
        lines = [summary_table(rows)]
        repeats = repeats_table(rows)
        if repeats:
            lines += ["", repeats]
        lines.append(counts_line(rows, not_recorded=len(self.files.unrecorded)))
        db, folder = self.layout.db_path, self.layout.folder
        gt = list(self.pool.gt_sources.values())
        lines += files_lines(
            rows, db_path=db, run_id=self.run_id, run_folder=folder, gt_sources=gt, extra=self.written_files
        )
        if self._finish_problem:
            lines.append(f"JSON report not written: {self._finish_problem}")
        lines.append(f"this table again: {reproduce_command(db, self.run_id)}")
        return lines

    def start_worker_watchdog(self) -> None:
        """xdist workers outlive a killed controller (their case keeps running); exit once orphaned."""
        parent = os.getppid()

        def watch() -> None:
            while True:
                time.sleep(WATCHDOG_PERIOD_S)
                if os.getppid() != parent:
                    os._exit(70)

        threading.Thread(target=watch, name="vq-benchmark-orphan-watchdog", daemon=True).start()

    def close(self) -> None:
        self.files.close()


def case_identity(case: Case) -> dict[str, Any]:
    identity = {
        "case_id": case.case_id,
        "dataset": case.dataset,
        "method": case.method,
        "params_json": case.params_json,
    }
    return {**identity, **case_matrix_fields(case)}
