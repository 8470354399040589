"""The Shipei pytest plugin (registered under the ``pytest11`` entry point).

Suites are plain pytest modules. A test that asks for the ``target`` fixture is
parametrized over every ``--target`` (ids read ``test_abs[onnxruntime-cpu]``);
``target.check(case)`` runs a :class:`~harness.cases.Case` in the target's worker,
records the outcome and turns it into a pytest outcome against the target's
expectations: as expected -> pass or xfail; anything else -> failure.

Records are written by the controlling process from ``pytest_runtest_logreport``
(each test ships its record in ``user_properties``), so pytest-xdist workers'
results land in one ``records.jsonl`` without loss or duplication.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from harness import __version__, selection
from harness.cases import Case, Outcome, execute_case
from harness.environment import fingerprint, git_commit
from harness.expectations import Expectation, Expectations, ExpectationsError, judge
from harness.records import (
    RECORD_SCHEMA_VERSION,
    RecordWriter,
    RunPaths,
    file_digests,
    json_safe,
    latest_attempts,
    new_run_id,
    now_iso,
    write_json,
)
from harness.registry import Registry, RegistryError, TargetRequest, discover
from harness.target import Availability, Capabilities, Target
from harness.worker import Host, InlineHost, ProcessHost

DEFAULT_TARGET = "onnxruntime-cpu"
DEFAULT_CASE_TIMEOUT = 60.0
RECORD_PROPERTY = "shipei_record"
PLUGIN_NAME = "shipei-session"


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "case_timeout(seconds): a suite's per-case timeout")
    config.addinivalue_line("markers", "shipei_case(suite, case): a Shipei conformance case")
    config.addinivalue_line("markers", "slow: long sweeps excluded from the default test run")
    config.addinivalue_line("markers",
                            "representative: a small subset of a suite that CI runs per target")
    selection.register(config)
    session = ShipeiSession(config)
    if config.getoption("shipei_targets"):
        session.validate_requests()
    config.pluginmanager.register(session, PLUGIN_NAME)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class TargetHandle:
    """What a test gets from the ``target`` fixture."""

    def __init__(self, session: ShipeiSession, request: TargetRequest,
                 item: pytest.Item) -> None:
        self.session = session
        self.request = request
        self.label = request.label
        self.item = item
        self.target: Target = session.target(request)

    @property
    def capabilities(self) -> Capabilities:
        return self.session.capabilities(self.request)

    @property
    def host(self) -> Host:
        return self.session.host(self.request)

    def timeout(self) -> float:
        explicit = self.session.config.getoption("shipei_case_timeout")
        if explicit is not None:
            return explicit
        marker = self.item.get_closest_marker("case_timeout")
        return float(marker.args[0]) if marker else DEFAULT_CASE_TIMEOUT

    def check(self, case: Case) -> Outcome:
        """Run ``case``, record it and end the test as its expectation says."""
        outcome = execute_case(case, self.host, self.capabilities, self.timeout())
        self.conclude(case.suite, case.name, outcome, case.tags)
        return outcome

    def conclude(self, suite: str, case: str, outcome: Outcome,
                 tags: dict[str, Any] | None = None) -> None:
        expectation = self.session.expectations(self.request).lookup(suite, case)
        as_expected, explanation = judge(outcome.status, expectation)
        record = self.session.make_record(self.label, suite, case, outcome, expectation,
                                          as_expected, tags or {})
        self.item.user_properties.append((RECORD_PROPERTY, record))
        _finish_test(self.item, outcome, expectation, as_expected, explanation)


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
    """Per-pytest-session state: targets, worker hosts, expectations, the record writer."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._registry: Registry | None = None
        self._targets: dict[str, Target] = {}
        self._caps: dict[str, Capabilities] = {}
        self._availability: dict[str, Availability] = {}
        self._hosts: dict[str, Host] = {}
        self._expectations: dict[str, Expectations] = {}
        self.writer: RecordWriter | None = None
        self.paths: RunPaths | None = None
        self.run_info: dict[str, Any] = {}
        self.records: list[dict[str, Any]] = []
        self.started = time.time()

    # -- targets -------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = discover()
        return self._registry

    def requests(self) -> list[TargetRequest]:
        names = self.config.getoption("shipei_targets") or [DEFAULT_TARGET]
        try:
            return [TargetRequest.parse(name) for name in dict.fromkeys(names)]
        except RegistryError as exc:
            raise pytest.UsageError(str(exc)) from None

    def validate_requests(self) -> None:
        for request in self.requests():
            try:
                target = self.target(request)
            except RegistryError as exc:
                raise pytest.UsageError(str(exc)) from None
            availability = target.availability()
            if not availability.available:
                raise pytest.UsageError(
                    f"target {request.label!r} is not available here: {availability.reason}")

    def target(self, request: TargetRequest) -> Target:
        if request.label not in self._targets:
            try:
                self._targets[request.label] = self.registry.build(request)
            except TypeError as exc:
                raise RegistryError(f"bad options for target {request.label!r}: {exc}") from None
        return self._targets[request.label]

    def availability(self, request: TargetRequest) -> Availability:
        if request.label not in self._availability:
            self._availability[request.label] = self.target(request).availability()
        return self._availability[request.label]

    def capabilities(self, request: TargetRequest) -> Capabilities:
        if request.label not in self._caps:
            self._caps[request.label] = self.target(request).capabilities()
        return self._caps[request.label]

    def host(self, request: TargetRequest) -> Host:
        if request.label not in self._hosts:
            if self.config.getoption("shipei_isolation") == "inline":
                self._hosts[request.label] = InlineHost(self.target(request))
            else:
                spec = self.registry.spec(request.name)
                self._hosts[request.label] = ProcessHost(spec, request.configuration,
                                                         request.options)
        return self._hosts[request.label]

    def expectations(self, request: TargetRequest) -> Expectations:
        if request.label not in self._expectations:
            explicit: list[Path] = self.config.getoption("shipei_expectations")
            own = self.target(request).expectations_file
            paths = explicit or ([own] if own is not None and Path(own).exists() else [])
            try:
                self._expectations[request.label] = Expectations.load(paths)
            except ExpectationsError as exc:
                raise pytest.UsageError(str(exc)) from None
        return self._expectations[request.label]

    # -- records -------------------------------------------------------------------
    def make_record(self, label: str, suite: str, case: str, outcome: Outcome,
                    expectation: Expectation | None, as_expected: bool,
                    tags: dict[str, Any]) -> dict[str, Any]:
        host = self._hosts.get(label)
        return build_record(label, suite, case, outcome, expectation, as_expected, tags,
                            duration_s=outcome.timings.get("total_s", 0.0),
                            worker_restarts=host.restarts if host else 0)

    def open_run(self) -> RunPaths:
        """The run folder and record writer, created on first need."""
        if self.paths is None:
            opt = self.config.getoption
            run_id = opt("shipei_run_id") or new_run_id()
            self.paths = RunPaths(Path(opt("shipei_results")), Path(opt("shipei_reports")),
                                  run_id)
            # a resumed or retried run continues its run.json and records
            self.run_info, self.records = selection.open_run(self.config,
                                                             self._describe_run(run_id))
            self.writer = RecordWriter(self.paths.records)
            write_json(self.paths.run_json, self.run_info)
        return self.paths

    def _describe_run(self, run_id: str) -> dict[str, Any]:
        targets = {}
        for request in self.requests():
            try:
                described = self.target(request).describe()
            except Exception as exc:  # describe what we can; the records carry the errors
                described = {"name": request.name, "error": f"{type(exc).__name__}: {exc}"}
            described["request"] = {"label": request.label, "name": request.name,
                                    "configuration": request.configuration,
                                    "options": dict(request.options)}
            described["driver_files"] = self._driver_files(request)
            targets[request.label] = described
        return {
            "schema_version": RECORD_SCHEMA_VERSION,
            "run_id": run_id,
            "harness_version": __version__,
            "git_commit": git_commit(),
            "command_line": sys.argv,
            "pytest_args": list(self.config.invocation_params.args),
            "started_at": now_iso(),
            "finished_at": None,
            "exit_status": None,
            "isolation": self.config.getoption("shipei_isolation"),
            "case_timeout_s": self.config.getoption("shipei_case_timeout"),
            "targets": targets,
            "suite_files": file_digests(self._suite_files()),
            "environment": fingerprint(),
        }

    def _suite_files(self) -> list[Path]:
        """The Python files of the suites this run was given (what it executed)."""
        files: list[Path] = []
        for arg in self.config.args:
            path = Path(arg.split("::")[0])
            if path.is_dir():
                files += [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
            elif path.suffix == ".py":
                files.append(path)
        return files

    def _driver_files(self, request: TargetRequest) -> dict[str, str]:
        """sha256 of the driver's module and expectations file, as loaded."""
        try:
            target = self.target(request)
        except RegistryError:
            return {}
        module = sys.modules.get(type(target).__module__)
        paths = [Path(module.__file__)] if module and module.__file__ else []
        if target.expectations_file is not None:
            paths.append(Path(target.expectations_file))
        return file_digests(paths)

    def write_record(self, record: dict[str, Any], nodeid: str) -> None:
        paths = self.open_run()
        record = dict(record, run_id=paths.run_id, nodeid=nodeid,
                      attempt=selection.attempt_number(self.config, record))
        assert self.writer is not None
        self.writer.write(record)
        self.records.append(record)

    # -- pytest hooks --------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "target" in metafunc.fixturenames:
            labels = [r.label for r in self.requests()]
            metafunc.parametrize("target", labels, indirect=True, ids=labels)

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
        record = next((v for k, v in report.user_properties if k == RECORD_PROPERTY), None)
        if record is not None and report.when == "call":
            self.write_record(record, report.nodeid)
            return
        if record is None and _uses_target(report) and _ended_without_record(report):
            self.write_record(_record_from_report(report), report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        for host in self._hosts.values():
            host.close()
        self._hosts.clear()
        if self.paths is None or _is_xdist_worker(self.config):
            return
        selection.finish_run(self.config, self.run_info)
        effective = latest_attempts(self.records)
        if exitstatus == 0 and any(not r.get("as_expected", True) for r in effective):
            # e.g. a retried case that failed and then passed: flaky, not a clean run
            session.exitstatus = exitstatus = pytest.ExitCode.TESTS_FAILED
        self.run_info.update(finished_at=now_iso(), exit_status=int(exitstatus),
                             wall_time_s=round(time.time() - self.started, 3),
                             target_wall_s=time_per_target(effective),
                             counts=count_statuses(effective))
        write_json(self.paths.run_json, self.run_info)
        if self.writer:
            self.writer.close()
        from harness.reporting import write_reports  # deferred: only runs with records

        self.report_files = write_reports(self.paths, self.run_info, effective)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.paths is None or _is_xdist_worker(self.config):
            return
        from harness.reporting import terminal_summary

        for line in terminal_summary(latest_attempts(self.records), self.run_info, self.paths,
                                     getattr(self, "report_files", [])):
            terminalreporter.write_line(line)


def _uses_target(report: pytest.TestReport) -> bool:
    return "[" in report.nodeid and any(k == "shipei_target" for k, _ in report.user_properties)


def _ended_without_record(report: pytest.TestReport) -> bool:
    return (report.when == "setup" and not report.passed) or (
        report.when == "call" and report.failed)


def build_record(label: str, suite: str, case: str, outcome: Outcome,
                 expectation: Expectation | None, as_expected: bool, tags: dict[str, Any],
                 duration_s: float, worker_restarts: int) -> dict[str, Any]:
    """One case record (without run id and node id, which the writer adds)."""
    request = TargetRequest.parse(label)
    return json_safe({
        "schema_version": RECORD_SCHEMA_VERSION,
        "target": label,
        "target_name": request.name,
        "configuration": request.configuration,
        "suite": suite,
        "case": case,
        "status": outcome.status,
        "expected_status": expectation.status if expectation else "pass",
        "expectation_reason": expectation.reason if expectation else "",
        "as_expected": as_expected,
        "message": outcome.message,
        "metrics": outcome.metrics,
        "timings": outcome.timings,
        "duration_s": duration_s,
        "placement": outcome.placement,
        "tags": tags,
        "worker_restarts": worker_restarts,
        "finished_at": now_iso(),
    })


def _record_from_report(report: pytest.TestReport) -> dict[str, Any]:
    """A record for a target test that ended before it could record itself."""
    props = dict(report.user_properties)
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
            report.longrepr)
        status, message = "skip", str(reason).removeprefix("Skipped: ")
    else:
        status = "infra_error"
        message = f"harness error in {report.when}: {report.longreprtext.strip()[-400:]}"
    return build_record(props["shipei_target"], props.get("shipei_suite", ""),
                        props.get("shipei_case", report.nodeid), Outcome(status, message),
                        None, status == "skip", {}, duration_s=report.duration,
                        worker_restarts=0)


def time_per_target(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent on each target's cases (the sum of their durations)."""
    totals: dict[str, float] = {}
    for record in records:
        totals[record["target"]] = totals.get(record["target"], 0.0) + float(
            record.get("duration_s") or 0.0)
    return {k: round(v, 3) for k, v in totals.items()}


def count_statuses(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        per_target = counts.setdefault(record["target"], {})
        per_target[record["status"]] = per_target.get(record["status"], 0) + 1
        if not record.get("as_expected", True):
            per_target["unexpected"] = per_target.get("unexpected", 0) + 1
    return counts


def suite_and_case(item: pytest.Item) -> tuple[str, str]:
    marker = item.get_closest_marker("shipei_case")
    if marker is not None:
        return marker.kwargs["suite"], marker.kwargs["case"]
    path = Path(str(item.path))
    parts = path.parts
    suite = parts[parts.index("suites") + 1] if "suites" in parts[:-1] else path.parent.name
    return suite, getattr(item, "originalname", item.name)


@pytest.fixture
def target(request: pytest.FixtureRequest) -> TargetHandle:
    """The target under test, one parametrization per ``--target``."""
    session: ShipeiSession = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    target_request = TargetRequest.parse(request.param)
    item = request.node
    suite, case = suite_and_case(item)
    item.user_properties.extend(
        [("shipei_target", target_request.label), ("shipei_suite", suite), ("shipei_case", case)])
    try:
        handle = TargetHandle(session, target_request, item)
    except RegistryError as exc:
        pytest.skip(str(exc))
    availability = session.availability(target_request)
    if not availability.available:
        pytest.skip(f"target {target_request.label} unavailable: {availability.reason}")
    return handle
