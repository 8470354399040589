"""The Shipei pytest plugin (registered under the ``pytest11`` entry point).

Suites are plain pytest modules. A test that asks for the ``target`` fixture is
parametrized over every ``--target`` (ids read ``test_abs[onnxruntime-cpu]``);
``target.check(case)`` runs a :class:`~harness.cases.case.Case` in the target's worker,
records the outcome and turns it into a pytest outcome against the target's
expectations: as expected -> pass or xfail; anything else -> failure.

Records are written by the controlling process from ``pytest_runtest_logreport``
(each test ships its record in ``user_properties``), so pytest-xdist workers'
results land in one ``records.jsonl`` without loss or duplication.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.cases.case import Case, Outcome, execute_case
from harness.cases.suite import CASE_ATTRIBUTE, suite_and_case
from harness.cases.suite_registry import discover_suites
from harness.driver.registry import DEFAULT_TARGET, RegistryError, TargetRequest, TargetSpec
from harness.driver.target import Availability, Capabilities, Target
from harness.hooks import plugin_manager
from harness.isolation import memory_limit
from harness.isolation.host import Host
from harness.reports.writing import terminal_summary
from harness.results.build import build_record
from harness.results.case_record import CaseRecord
from harness.results.record_files import RunPaths, StorageError, check_run_id, check_writable
from harness.run import selection
from harness.run.case_item import CaseItem, case_items, item_target_label
from harness.run.live_output import live_output_for
from harness.run.look_ahead import CasePrefetcher
from harness.run.target_pool import TargetPool, set_up
from harness.run.writer import RunWriter
from harness.verdicts.crash_blame import (
    CHARGED_FIELD,
    RanCase,
    WorkerHistory,
    alone_note,
    corruption_record,
    first_attempt,
    worth_retrying,
)
from harness.verdicts.expectations import Expectation, Expectations, ExpectationsError, judge

DEFAULT_CASE_TIMEOUT = 60.0
RECORD_PROPERTY = "shipei_record"
PLUGIN_NAME = "shipei-session"


def _memory_size(text: str) -> int | None:
    try:
        return memory_limit.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shipei", "Shipei compatibility harness")
    group.addoption("--target", action="append", dest="shipei_targets", default=[],
                    metavar="NAME[:CONFIG][,k=v]",
                    help=f"target to run suites on; repeatable (default {DEFAULT_TARGET})")
    group.addoption("--case-timeout", type=float, dest="shipei_case_timeout", default=None,
                    metavar="SECONDS",
                    help=f"per-case timeout; overrides a suite's own "
                         f"(default {DEFAULT_CASE_TIMEOUT:g})")
    group.addoption("--isolation", choices=("process", "inline"), default="process",
                    dest="shipei_isolation",
                    help="run targets in worker subprocesses (default) or in-process")
    group.addoption("--worker-memory-limit", dest="shipei_worker_memory",
                    type=_memory_size, default=memory_limit.default_limit(), metavar="SIZE",
                    help="memory ceiling of each target worker, e.g. 8G, or none: a runaway "
                         "allocation then fails inside the worker and is the target's, not "
                         "the OOM killer's (default "
                         f"{memory_limit.describe(memory_limit.default_limit())}, "
                         f"{memory_limit.DEFAULT_FRACTION:.0%} of physical memory)")
    group.addoption("--expectations", action="append", dest="shipei_expectations",
                    default=[], type=Path, metavar="FILE",
                    help="expectations file to use instead of the target's own; repeatable")
    group.addoption("--results-dir", dest="shipei_results", default="results", type=Path,
                    help="where run records go (default results/)")
    group.addoption("--reports-dir", dest="shipei_reports", default="reports", type=Path,
                    help="where reports go (default reports/)")
    group.addoption("--model", action="append", dest="shipei_models", default=[], type=Path,
                    metavar="PATH", help="ONNX model file for the model_file suite; repeatable")
    group.addoption("--run-id", dest="shipei_run_id", default=None,
                    help="run id to use (default: a new timestamped id)")
    selection.add_options(group)


#: the name labgrid registers its pytest plugin under (entry point ``pytest11``)
LABGRID_PYTEST_PLUGIN = "labgrid"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "case_timeout(seconds): a suite's per-case timeout")
    config.addinivalue_line("markers", "shipei_case(suite, case): a Shipei conformance case")
    config.addinivalue_line("markers", "slow: long sweeps excluded from the default test run")
    config.addinivalue_line("markers",
                            "representative: a small subset of a suite that CI runs per target")
    for name, spec in discover_suites().suites.items():
        config.addinivalue_line("markers", f"{name}: a case of the {spec.title_en} suite")
    _check_options(config)
    selection.register(config)
    session = ShipeiSession(config)
    if config.getoption("shipei_targets") or config.getoption("shipei_expectations"):
        session.validate_requests()
    config.pluginmanager.register(session, PLUGIN_NAME)
    config.pluginmanager.register(session.prefetch, "shipei-prefetch")
    live = live_output_for(
        config, lambda: session.run.paths.run_dir if session.run.paths is not None else None)
    if live is not None:
        config.pluginmanager.register(live, "shipei-live-output")
    if not _is_xdist_worker(config):
        _finish_on_sigterm(config)


def _check_options(config: pytest.Config) -> None:
    """Bad option values are a usage error before any case runs."""
    opt = config.getoption
    if opt("shipei_targets") and config.pluginmanager.has_plugin(LABGRID_PYTEST_PLUGIN):
        raise pytest.UsageError(
            "labgrid's pytest plugin is loaded and defines its own `target` fixture, which "
            "would take the place of Shipei's: add -p no:labgrid (shipei run does; Shipei "
            "reaches labgrid places through the coordinator, not this plugin)")
    timeout = opt("shipei_case_timeout")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise pytest.UsageError(f"--case-timeout must be a positive number of seconds, "
                                f"not {timeout:g}")
    for flag, dest in (("--results-dir", "shipei_results"), ("--reports-dir", "shipei_reports")):
        path = Path(opt(dest))
        if path.exists() and not path.is_dir():
            raise pytest.UsageError(f"{flag} {path} is a file, not a folder")
        if not config.option.collectonly and not _is_xdist_worker(config):
            try:
                check_writable(path, flag)
            except StorageError as exc:
                raise pytest.UsageError(str(exc)) from None
    run_id = opt("shipei_run_id")
    if run_id is None:
        return
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise pytest.UsageError(f"--run-id: {exc}") from None
    continuing = opt("shipei_resume") or opt("shipei_retry_failed")
    if not continuing and (Path(opt("shipei_results")) / run_id).exists() \
            and not _is_xdist_worker(config):
        raise pytest.UsageError(f"run {run_id} already exists under {opt('shipei_results')}; "
                                "choose another --run-id, or continue it with --resume "
                                f"{run_id}")


def _finish_on_sigterm(config: pytest.Config) -> None:
    """SIGTERM ends the run as Ctrl-C does: pytest unwinds and the run is finalized
    (run.json gets its exit status, reports are written)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, previous))


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def case_timeout(config: pytest.Config, item: pytest.Item) -> float:
    """A test's case timeout: ``--case-timeout``, else its ``case_timeout`` marker."""
    explicit = config.getoption("shipei_case_timeout")
    if explicit is not None:
        return explicit
    marker = item.get_closest_marker("case_timeout")
    return float(marker.args[0]) if marker else DEFAULT_CASE_TIMEOUT


class TargetHandle:
    """What a test gets from the ``target`` fixture."""

    def __init__(self, session: ShipeiSession, request: TargetRequest,
                 item: pytest.Item) -> None:
        self.session = session
        self.request = request
        self.label = request.label
        self.item = item
        #: when the test got its target: a test that concludes an outcome it timed
        #: itself without ``total_s`` (the sensor checks) is recorded as taking this long
        self.opened = time.perf_counter()
        self.target: Target = session.target(request)

    @property
    def capabilities(self) -> Capabilities:
        return self.session.capabilities(self.request)

    @property
    def host(self) -> Host:
        return self.session.host(self.request)

    @property
    def spec(self) -> TargetSpec:
        """How the target is registered (for a suite that starts workers of its own)."""
        return self.session.pool.registry.spec(self.request.name)

    def timeout(self) -> float:
        return case_timeout(self.session.config, self.item)

    def check(self, case: Case) -> Outcome:
        """Run ``case``, record it and end the test as its expectation says. A crash is
        run again alone in a fresh worker before it is charged
        (:mod:`harness.verdicts.crash_blame`)."""
        outcome = self.session.prefetch.execute(self.item, case, self.host, self.capabilities,
                                                self.timeout())
        if worth_retrying(outcome) and self.session.pool.isolation == "process" \
                and not self._known_crash(case):
            return self._retry_crash(case, outcome)
        self.conclude(case.suite, case.name, outcome, case.tags, ran=case)
        return outcome

    def _known_crash(self, case: Case) -> bool:
        """Whether the target's expectations say this case crashes (a reviewed defect:
        re-running it alone, a worker start each, would only cost a sweep its time)."""
        expectation = self.session.expectations(self.request).lookup(case.suite, case.name)
        return expectation is not None and expectation.status == "crash"

    def _retry_crash(self, case: Case, crash: Outcome) -> Outcome:
        """Run a crashed case alone in a fresh worker; when it does not crash there, run
        the case its worker ran before it and then it in another: a crash again there
        charges that case."""
        alone = self.session.run_in_fresh_worker(self.request, [case], self.timeout())[-1]
        previous = self.session.history.before(self.label, crash)
        if alone.status == "crash" or previous is None:
            previous = None
        elif self.session.run_in_fresh_worker(self.request, [previous.case, case],
                                              self.timeout())[-1].status != "crash":
            previous = None  # it does not crash after that case either: nobody to charge
        self.conclude(case.suite, case.name, alone, case.tags, crashed_first=crash,
                      charged=previous)
        return alone

    def conclude(self, suite: str, case: str, outcome: Outcome,
                 tags: dict[str, Any] | None = None, ran: Case | None = None,
                 crashed_first: Outcome | None = None, charged: RanCase | None = None
                 ) -> None:
        """Record an outcome a test computed itself and end the test by its expectation.
        ``ran`` is the case whose outcome it is; ``crashed_first`` the crash a run alone
        (``outcome``) followed, ``charged`` the case that crash is charged to."""
        expectation = self.session.expectations(self.request).lookup(suite, case)
        as_expected, explanation = judge(outcome.status, expectation)
        record = build_record(self.label, suite, case, outcome, expectation, as_expected,
                              tags or {}, duration_s=outcome.timings.get(
                                  "total_s", time.perf_counter() - self.opened),
                              worker_restarts=self.session.pool.worker_restarts(self.label))
        if self.label in self.session.setup_unrecorded:
            self.session.setup_unrecorded.discard(self.label)
            record["timings"] = dict(record["timings"], setup_s=self.session.setup_s[self.label])
        if crashed_first is not None:
            self._charge_crash(record, crashed_first, outcome, charged,
                               judge(crashed_first.status, expectation)[0])
        elif ran is not None:
            self.session.history.ran(self.label, ran, outcome, record, self.item.nodeid)
        self.item.user_properties.append((RECORD_PROPERTY, record))
        _finish_test(self.item, outcome, expectation, as_expected, explanation)

    def _charge_crash(self, record: dict[str, Any], crash: Outcome, alone: Outcome,
                      previous: RanCase | None, crash_as_expected: bool) -> None:
        """Record a crash and the case's run alone after it: in its own record when it
        crashed again or ``previous`` is charged (that case then gets a record of its
        own), else as an attempt of its own (a flaky case)."""
        attempt = first_attempt(crash, crash_as_expected)
        if alone.status == "crash" or previous is not None:
            record["previous_attempts"] = [attempt]
            record["message"] = f"{record['message']} (first run: {crash.message}; " \
                                f"{alone_note(alone)})".lstrip()
        if alone.status == "crash" or previous is None:
            if alone.status != "crash":
                first = build_record(self.label, record["suite"], record["case"], crash, None,
                                     crash_as_expected, record["tags"],
                                     crash.timings.get("total_s", 0.0), record["worker_restarts"])
                self.item.user_properties.append((RECORD_PROPERTY, first))
            return
        victim = f"{record['suite']}::{record['case']}"
        record[CHARGED_FIELD] = previous.name
        expectation = self.session.expectations(self.request).lookup(
            previous.record["suite"], previous.record["case"])
        charged = corruption_record(previous, victim, crash, alone,
                                    judge("crash", expectation)[0])
        self.item.user_properties.append((RECORD_PROPERTY, charged))


#: an as-expected non-pass, turned into a skip/xfail report by pytest_runtest_makereport
VERDICT_KEY = pytest.StashKey[tuple[str, str]]()


def _finish_test(item: pytest.Item, outcome: Outcome, expectation: Expectation | None,
                 as_expected: bool, explanation: str) -> None:
    """Turn an outcome into the test's pytest outcome.

    As-expected non-passes are not raised: the report is rewritten afterwards
    (as pytest's own xfail does), which spares formatting a traceback per case.
    """
    if outcome.status == "pass" and as_expected:
        return
    if as_expected:
        if outcome.status == "skip":
            item.stash[VERDICT_KEY] = ("skip", outcome.message)
        else:
            reason = expectation.reason if expectation else ""
            item.stash[VERDICT_KEY] = (
                "xfail", f"{outcome.status} as expected ({reason}): {outcome.message}")
        return
    detail = f"\n{outcome.detail}" if outcome.detail else ""
    pytest.fail(f"{explanation}: {outcome.message}{detail}" if outcome.message
                else explanation, pytrace=False)


class ShipeiSession:
    """Per-pytest-session state: the target pool and the run being written."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        try:
            self.pool = TargetPool(config.getoption("shipei_targets") or [DEFAULT_TARGET],
                                   config.getoption("shipei_isolation"),
                                   config.getoption("shipei_expectations"),
                                   config.getoption("shipei_worker_memory"))
        except RegistryError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.run = RunWriter(config, self.pool)
        self.hooks = plugin_manager().hook
        self.prefetch = CasePrefetcher.from_window_env(
            self._resolve, lambda item: case_timeout(config, item), len(self.pool.requests),
            under_xdist=_is_xdist_worker(config))
        self.storage_error: str | None = None
        self._pytest_session: pytest.Session | None = None
        #: the last case each target's worker ran, to charge a crash it caused
        self.history = WorkerHistory()
        #: per target label: its set-up's seconds (its worker's start-up), carried by the
        #: next record of the target as timings["setup_s"], so that an xdist controller
        #: learns it too (run.json sums them per target)
        self.setup_s: dict[str, float] = {}
        self.setup_unrecorded: set[str] = set()

    # -- targets -------------------------------------------------------------------
    def requests(self) -> list[TargetRequest]:
        return self.pool.requests

    def validate_requests(self) -> None:
        """Every requested target builds, is available and has readable expectations."""
        for request in self.pool.requests:
            try:
                target = self.pool.target(request)
            except RegistryError as exc:
                raise pytest.UsageError(str(exc)) from None
            availability = target.availability()
            if not availability.available:
                raise pytest.UsageError(
                    f"target {request.label!r} is not available here: {availability.reason}")
            self.expectations(request)

    def target(self, request: TargetRequest) -> Target:
        return self.pool.target(request)

    def availability(self, request: TargetRequest) -> Availability:
        return self.pool.availability(request)

    def capabilities(self, request: TargetRequest) -> Capabilities:
        return self.pool.capabilities(request)

    def host(self, request: TargetRequest) -> Host:
        host = self.pool.host(request)
        if request.label not in self.setup_s:
            self.setup_s[request.label] = set_up(host)
            self.setup_unrecorded.add(request.label)
        return self.prefetch.host(request.label, host)

    def _resolve(self, request: TargetRequest) -> tuple[Host, Capabilities, bool]:
        """(host, capabilities, available) of a target, for cases sent ahead."""
        available = self.availability(request).available
        return (self.host(request), self.capabilities(request), available)

    def run_in_fresh_worker(self, request: TargetRequest, cases: list[Case], timeout: float
                            ) -> list[Outcome]:
        """``cases`` run in turn in a fresh worker of their own, closed after them."""
        host = self.pool.fresh_process_host(request)
        try:
            set_up(host)  # its start-up is not the cases' time
            return [execute_case(case, host, self.capabilities(request), timeout)
                    for case in cases]
        finally:
            host.close()

    def expectations(self, request: TargetRequest) -> Expectations:
        try:
            return self.pool.expectations(request)
        except ExpectationsError as exc:
            raise pytest.UsageError(str(exc)) from None

    def open_target(self, item: pytest.Item, label: str) -> TargetHandle:
        """The handle a test on ``label`` gets (the ``target`` fixture's, a case item's
        setup); a target that cannot be built or is unavailable skips the test."""
        target_request = TargetRequest.parse(label)
        suite, case = suite_and_case(item)
        item.user_properties.extend([("shipei_target", target_request.label),
                                     ("shipei_suite", suite), ("shipei_case", case),
                                     ("shipei_test_case", _test_case(item, case, label))])
        try:
            handle = TargetHandle(self, target_request, item)
        except RegistryError as exc:
            pytest.skip(str(exc))
        availability = self.availability(target_request)
        if not availability.available:
            pytest.skip(f"target {target_request.label} unavailable: {availability.reason}")
        return handle

    # -- records -------------------------------------------------------------------
    @property
    def paths(self) -> RunPaths | None:
        return self.run.paths

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.run.records

    @property
    def run_info(self) -> dict[str, Any]:
        return self.run.run_info

    def open_run(self) -> RunPaths:
        """The run folder and record writer, created on first need."""
        return self.run.open()

    def write_record(self, record: dict[str, Any], nodeid: str) -> None:
        try:
            written = self.run.write(record, nodeid)
        except StorageError as exc:
            self._storage_failed(exc)
            return
        hook = self.hooks.shipei_case_recorded
        if hook.get_hookimpls():  # the typed record is built only for a plugin that listens
            hook(record=CaseRecord.from_dict(written), paths=self.run.paths)

    def _storage_failed(self, exc: StorageError) -> None:
        """A full disk: stop the run with one clear line; what was written is kept."""
        self.storage_error = str(exc)
        if self._pytest_session is not None:
            self._pytest_session.shouldstop = f"shipei: {exc}"

    # -- pytest hooks --------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "target" in metafunc.fixturenames:
            labels = [r.label for r in self.requests()]
            metafunc.parametrize("target", labels, indirect=True, ids=labels)

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makeitem(self, collector: pytest.Collector, name: str, obj: Any
                                  ) -> list[CaseItem] | None:
        """A function ``define_tests`` made is collected as one case item per target."""
        case = getattr(obj, CASE_ATTRIBUTE, None) if callable(obj) else None
        if not isinstance(case, Case):
            return None
        labels = [r.label for r in self.requests()]
        return case_items(collector, name, obj, case, labels, self.open_target)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Every case carries its suite's name as a marker (``-m "operators and
        representative"``), which is how the gate picks each suite's cases."""
        registered = discover_suites().suites
        for item in items:
            if item_target_label(item) is not None:
                suite, _ = suite_and_case(item)
                if suite in registered and item.get_closest_marker(suite) is None:
                    item.add_marker(suite)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]
                                  ) -> Any:
        report = yield
        verdict = item.stash.get(VERDICT_KEY, None)
        if verdict is not None and call.when == "call" and report.passed:
            kind, reason = verdict
            report.outcome = "skipped"
            if kind == "xfail":
                report.wasxfail = reason
            else:
                report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {reason}")
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if _is_xdist_worker(self.config):
            return
        records = [v for k, v in report.user_properties if k == RECORD_PROPERTY]
        if records and report.when == "call":
            for record in records:  # a case's, or a crash's attempts and whom it charges
                self.write_record(record, report.nodeid)
            return
        if not records and _uses_target(report) and _ended_without_record(report):
            self.write_record(_record_from_report(report), report.nodeid)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._pytest_session = session

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """What collection built (thousands of items, their cases and reference data)
        lives to the end of the session: it is moved out of the cyclic collector's
        sight, which otherwise walks all of it again at every full collection (measured
        on the operator suite: 0.2 s of the test process's 2.3 s, half of it at exit)."""
        gc.freeze()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        """Launch the workers of the targets named with ``--target`` before collecting, so
        their start-up overlaps collection (:meth:`ProcessHost.prestart`)."""
        config = self.config
        if (not config.getoption("shipei_targets") or config.option.collectonly
                or config.pluginmanager.has_plugin("dsession")):  # xdist's controller
            return
        for request in self.pool.requests:
            with contextlib.suppress(Exception):  # the first case reports any failure
                if self.availability(request).available:
                    prestart = getattr(self.pool.host(request), "prestart", None)
                    if prestart is not None:
                        prestart()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.pool.close()
        if self.storage_error and not _is_xdist_worker(self.config):
            # a full disk is a configuration error (2), not an interruption (130)
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if self.run.paths is None or _is_xdist_worker(self.config):
            return
        try:
            status, effective = self.run.finish(int(exitstatus))
        except StorageError as exc:
            self.storage_error = str(exc)
            self.run.close()
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        if self.storage_error:
            status = int(pytest.ExitCode.USAGE_ERROR)
        session.exitstatus = status
        self.hooks.shipei_run_finished(paths=self.run.paths, run_info=self.run.run_info,
                                       records=effective)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.storage_error:
            terminalreporter.write_line(f"shipei: error: {self.storage_error}", red=True)
        if self.run.paths is None or _is_xdist_worker(self.config):
            return
        for line in terminal_summary(self.run.effective(), self.run.run_info, self.run.paths,
                                     self.run.report_files):
            terminalreporter.write_line(line)


def _test_case(item: pytest.Item, case: str, label: str) -> str:
    """The case a test that ends before recording itself is recorded as: ``case``, with
    the test's parameters other than the target (``test_model[deep.onnx]``), so that two
    such tests of one function never fold into one record."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or isinstance(item, CaseItem) or len(callspec.params) < 2:
        return case
    others = callspec.id
    for joined in (f"{label}-", f"-{label}"):
        others = others.replace(joined, "", 1) if joined in others else others
    return f"{case}[{others}]" if others and others != label else case


def _uses_target(report: pytest.TestReport) -> bool:
    return "[" in report.nodeid and any(k == "shipei_target" for k, _ in report.user_properties)


def _ended_without_record(report: pytest.TestReport) -> bool:
    return (report.when == "setup" and not report.passed) or (
        report.when == "call" and report.failed)


def _record_from_report(report: pytest.TestReport) -> dict[str, Any]:
    """A record for a target test that ended before it could record itself."""
    props = dict(report.user_properties)
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
            report.longrepr)
        status, message = "skip", str(reason).removeprefix("Skipped: ")
    else:
        status = "infra_error"
        crash = getattr(report.longrepr, "reprcrash", None)
        said = str(getattr(crash, "message", "") or report.longreprtext.strip()[-400:])
        message = f"harness error in {report.when}: {said.strip()[:400]}"
    case = props.get("shipei_test_case") or props.get("shipei_case", report.nodeid)
    return build_record(props["shipei_target"], props.get("shipei_suite", ""),
                        case, Outcome(status, message),
                        None, status == "skip", {}, duration_s=report.duration,
                        worker_restarts=0)


@pytest.fixture
def target(request: pytest.FixtureRequest) -> TargetHandle:
    """The target under test, one parametrization per ``--target``."""
    session: ShipeiSession = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    return session.open_target(request.node, request.param)
