"""The run a pytest session writes: ``run.json`` and ``records.jsonl``, created on the
first record, and finished (counts, exit status, reports) when the session ends."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness import __version__
from harness.driver.registry import RegistryError
from harness.results.build import count_statuses, has_unexpected, time_per_target
from harness.results.case_record import CaseRecord, fold_attempts, parse_records
from harness.results.fingerprint import fingerprint, git_commit
from harness.results.record_files import (
    RECORD_SCHEMA_VERSION,
    RecordWriter,
    RunPaths,
    StorageError,
    file_digests,
    latest_attempts,
    new_run_id,
    now_iso,
    write_json,
)
from harness.run import selection
from harness.run.target_pool import TargetPool


class RunWriter:
    """Owns one run folder: its description, its records and its end."""

    def __init__(self, config: pytest.Config, pool: TargetPool) -> None:
        self.config = config
        self.pool = pool
        self.writer: RecordWriter | None = None
        self.paths: RunPaths | None = None
        self.run_info: dict[str, Any] = {}
        self.records: list[dict[str, Any]] = []
        self.started = time.time()
        self.report_files: list[Path] = []
        self._finished: list[dict[str, Any]] | None = None
        #: the last attempt written in this session per (target, suite, case)
        self._attempts: dict[tuple[str, str, str], int] = {}

    def open(self) -> RunPaths:
        """The run folder and record writer, created on first need."""
        if self.paths is None:
            opt = self.config.getoption
            run_id = opt("shipei_run_id") or new_run_id()
            paths = RunPaths(Path(opt("shipei_results")), Path(opt("shipei_reports")), run_id)
            # a resumed or retried run continues its run.json and records
            self.run_info, self.records = selection.open_run(self.config,
                                                             self._describe(run_id))
            self.writer = RecordWriter(paths.records)
            write_json(paths.run_json, self.run_info)
            self.paths = paths
        return self.paths

    def write(self, record: dict[str, Any], nodeid: str) -> dict[str, Any]:
        """Append one case's record (with its run id, node id unless it names its own, and
        attempt); the line written. A case written again in this session (a crash and its
        run alone) takes the next attempt; attempts a record carries in
        ``previous_attempts`` are numbered before its own."""
        paths = self.open()
        key = (record["target"], record["suite"], record["case"])
        attempt = max(selection.attempt_number(self.config, record),
                      self._attempts.get(key, 0) + 1)
        carried = [dict(p, attempt=attempt + i)
                   for i, p in enumerate(record.get("previous_attempts") or ())]
        attempt += len(carried)
        self._attempts[key] = attempt
        record = dict(record, run_id=paths.run_id, nodeid=record.get("nodeid") or nodeid,
                      attempt=attempt)
        if carried:
            record["previous_attempts"] = carried
        assert self.writer is not None
        self.writer.write(record)
        self.records.append(record)
        return record

    def effective(self) -> list[dict[str, Any]]:
        """The effective records (:func:`~harness.results.case_record.fold_attempts`); once the run
        is finished, the ones :meth:`finish` wrote its reports from."""
        if self._finished is not None:
            return self._finished
        return latest_attempts(self.records)

    def finish(self, exitstatus: int) -> tuple[int, list[CaseRecord]]:
        """Write the final run.json and the reports; return the exit status (a run with an
        unexpected effective record, a flaky retry included, is not a clean run)."""
        assert self.paths is not None
        selection.finish_run(self.config, self.run_info)
        typed = fold_attempts(parse_records(self.records))  # parsed once, for both uses
        effective = [record.to_dict() for record in typed]
        if exitstatus == 0 and has_unexpected(effective):
            exitstatus = int(pytest.ExitCode.TESTS_FAILED)
        self._record_setup()
        self.run_info.update(finished_at=now_iso(), exit_status=int(exitstatus),
                             wall_time_s=round(time.time() - self.started, 3),
                             target_wall_s=time_per_target(effective),
                             counts=count_statuses(effective))
        write_json(self.paths.run_json, self.run_info)
        self.close()
        from harness.reports.writing import write_reports  # deferred: only runs with records

        self._finished = effective
        try:
            self.report_files = write_reports(self.paths, self.run_info, effective)
        except OSError as exc:  # a read-only or full reports folder: the run itself is kept
            raise StorageError(
                f"cannot write reports to {self.paths.report_dir}: {exc.strerror or exc} "
                f"(run {self.paths.run_id} is kept under {self.paths.results_root}; write "
                f"them later with shipei report {self.paths.run_id})") from None
        return exitstatus, typed

    def _record_setup(self) -> None:
        """Each target's set-up time in run.json (``targets.<label>.setup_s``): its
        workers' start-up and the capability probes its cases needed, as every record
        written (each attempt) carries them in ``timings``."""
        setup: dict[str, float] = {}
        for record in self.records:
            timings = record.get("timings") or {}
            for key in ("setup_s", "probe_s"):
                seconds = timings.get(key)
                if isinstance(seconds, (int, float)):
                    setup[record["target"]] = setup.get(record["target"], 0.0) + seconds
        for label, seconds in setup.items():
            described = self.run_info.get("targets", {}).get(label)
            if isinstance(described, dict):
                described["setup_s"] = round(seconds, 3)

    def close(self) -> None:
        if self.writer:
            self.writer.close()

    # -- run.json ----------------------------------------------------------------------
    def _describe(self, run_id: str) -> dict[str, Any]:
        targets = {}
        for request in self.pool.requests:
            try:
                described = self.pool.target(request).describe()
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
            "pytest_positional": [str(a) for a in self.config.args],
            # the session's start: the first record was stamped before the targets were
            # described here, and every record must lie inside the run
            "started_at": now_iso(self.started),
            "finished_at": None,
            "exit_status": None,
            "isolation": self.config.getoption("shipei_isolation"),
            "case_timeout_s": self.config.getoption("shipei_case_timeout"),
            "worker_memory_limit_bytes": self.pool.memory_limit,
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

    def _driver_files(self, request: Any) -> dict[str, str]:
        """sha256 of the driver's module and expectations file, as loaded."""
        try:
            target = self.pool.target(request)
        except RegistryError:
            return {}
        module = sys.modules.get(type(target).__module__)
        paths = [Path(module.__file__)] if module and module.__file__ else []
        paths += self.pool.expectations_paths(request)
        return file_digests(paths)
