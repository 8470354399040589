"""The ``consistency`` check: every artefact a bundle carries agrees with the others.

- member names: no two differ only by case or Unicode normalisation (on a
  case-insensitive or normalising file system one would replace the other);
- the statement's predicate: its runs are the bundle's runs, its passed, warned and
  failed test lists are what the records give;
- ``run.json``'s status counts per target are what its effective records give;
- JUnit (``reports/<run>/junit.xml``, where the bundle carries it): every test case
  has the status of its record, and every record its test case;
- attempts: each case's attempts are numbered 1, 2, ... in file order and in time
  order; a later attempt is the run's own re-run of a crash (or the crash charged to
  the case that left the runtime corrupted, :mod:`harness.verdicts.crash_blame`), or a retry
  (``shipei run --retry-failed``) that follows an unexpected result and falls inside a
  retry continuation the run recorded;
- dates: every time a run, continuation, record or statement states lies between
  :data:`EARLIEST` and now plus :data:`CLOCK_SKEW`, and each run ends after it starts.

:func:`check_consistency` returns one-line notes or raises :class:`ConsistencyError`.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

from harness.center.bundle import REPORTS_DIR, statement_result
from harness.center.universe import MAX_SHOWN
from harness.results.build import count_statuses
from harness.results.record_files import latest_attempts
from harness.run.selection import retry_wanted
from harness.verdicts.crash_blame import CORRUPTED_FIELD

#: no run of this harness can be older (it did not exist before)
EARLIEST = datetime(2025, 1, 1, tzinfo=UTC)
#: how far ahead of the center's clock a vendor's clock may run
CLOCK_SKEW = timedelta(days=1)
JUNIT_FILE = "junit.xml"


class ConsistencyError(Exception):
    """Two artefacts of a bundle that disagree (one line)."""


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()


def check_member_names(names: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in sorted(names):
        other = seen.setdefault(_fold(name), name)
        if other != name:
            raise ConsistencyError(f"members {other!r} and {name!r} differ only by case or "
                                   "Unicode normalisation")


def parse_time(value: Any, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConsistencyError(f"{where}: {str(value)[:40]!r} is not an ISO 8601 time") \
            from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _in_range(value: Any, where: str, now: datetime) -> datetime:
    when = parse_time(value, where)
    if not EARLIEST <= when <= now + CLOCK_SKEW:
        raise ConsistencyError(f"{where} is dated {value}, outside {EARLIEST:%Y-%m-%d} to "
                               f"{(now + CLOCK_SKEW):%Y-%m-%d} (the center's clock)")
    return when


def check_dates(predicate: dict[str, Any], infos: dict[str, dict[str, Any]],
                attempts: dict[str, list[dict[str, Any]]], now: datetime) -> None:
    if predicate.get("created_at"):
        _in_range(predicate["created_at"], "the statement", now)
    for run_id, info in sorted(infos.items()):
        start = _in_range(info.get("started_at"), f"run {run_id}'s start", now)
        end = _in_range(info.get("finished_at"), f"run {run_id}'s end", now)
        if end < start:
            raise ConsistencyError(f"run {run_id} ends ({info['finished_at']}) before it "
                                   f"starts ({info['started_at']})")
        for n, step in enumerate(info.get("continuations") or [], 1):
            for key in ("started_at", "finished_at"):
                if isinstance(step, dict) and step.get(key):
                    _in_range(step[key], f"run {run_id}'s continuation {n}", now)
        for record in attempts[run_id]:
            if record.get("finished_at"):
                _in_range(record["finished_at"], f"run {run_id}: record "
                          f"{record['suite']}::{record['case']}", now)


def _retry_windows(info: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    windows = []
    for step in info.get("continuations") or []:
        if isinstance(step, dict) and "retry" in str(step.get("mode")) and step.get("started_at"):
            end = step.get("finished_at") or info.get("finished_at")
            windows.append((parse_time(step["started_at"], "a continuation"),
                            parse_time(end, "a continuation")))
    return windows


def _numbers(found: list[dict[str, Any]]) -> list[Any]:
    """Attempt numbers in file order, those a record carries in ``previous_attempts``
    (a crash and its run alone, written as one record) before its own."""
    numbers: list[Any] = []
    for record in found:
        carried = record.get("previous_attempts") or []
        numbers += [p.get("attempt") for p in carried if isinstance(p, dict)]
        numbers.append(record.get("attempt", 1))
    return numbers


def _rerun_in_the_run(previous: dict[str, Any], later: dict[str, Any]) -> bool:
    """A later attempt the run itself makes: a crashed case run once more alone, or the
    crash charged to the case that left the runtime corrupted (``harness.verdicts.crash_blame``)."""
    return previous.get("status") == "crash" or bool(later.get(CORRUPTED_FIELD))


def check_attempts(run_id: str, info: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Attempts in order; a later one is the run's own crash re-run, or a retry of an
    unexpected result inside a retry continuation the run recorded."""
    windows = _retry_windows(info)
    by_case: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_case[(record["target"], record["suite"], record["case"])].append(record)
    for (_, suite, case), found in sorted(by_case.items()):
        where = f"run {run_id}: {suite}::{case}"
        numbers = _numbers(found)
        if numbers != list(range(1, len(numbers) + 1)):
            raise ConsistencyError(f"{where} has attempts {numbers[:6]} in the records; a "
                                   "run numbers them 1, 2, ... as it makes them")
        times = [parse_time(r["finished_at"], where) for r in found if r.get("finished_at")]
        if times != sorted(times):
            raise ConsistencyError(f"{where}: a later attempt finished before an earlier one")
        for previous, later in zip(found, found[1:], strict=False):
            if _rerun_in_the_run(previous, later):
                continue
            if not retry_wanted(previous):
                raise ConsistencyError(f"{where}: attempt {later.get('attempt')} follows a "
                                       f"{previous['status']} that no retry re-runs")
            when = parse_time(later.get("finished_at"), where) if later.get("finished_at") \
                else None
            if when is None or not any(a <= when <= b for a, b in windows):
                raise ConsistencyError(f"{where}: attempt {later.get('attempt')} "
                                       f"({later.get('finished_at')}) lies in no retry the "
                                       "run recorded (shipei run --retry-failed)")


def check_junit(run_id: str, data: bytes, records: list[dict[str, Any]]) -> int:
    """Every JUnit test case has its record's status; return how many were compared."""
    where = f"{REPORTS_DIR}/{run_id}/{JUNIT_FILE}"
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ConsistencyError(f"{where} declares a DOCTYPE or entities; JUnit needs none")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ConsistencyError(f"{where} is not XML ({exc})") from None
    ours = {(r["suite"], r["target"], r["case"]): r["status"] for r in latest_attempts(records)}
    theirs: dict[tuple[str, str, str], str] = {}
    for case in root.iter("testcase"):
        suite, _, target = str(case.get("classname")).partition(".")
        theirs[(suite, target, str(case.get("name")))] = str(case.get("status"))
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            said = theirs.get(key) or "no test case"
            recorded = ours.get(key) or "no record"
            raise ConsistencyError(f"{where} says {key[0]}::{key[2]} on {key[1]} is {said}; "
                                   f"the records say {recorded}")
    return len(theirs)


def check_counts(run_id: str, info: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """run.json's ``counts`` (statuses per target, as the run wrote them at its end) are
    the ones its effective records give."""
    if "counts" not in info:
        return
    given = count_statuses(latest_attempts(records))
    if info["counts"] != given:
        differ = sorted(t for t in set(given) | set(info["counts"] or {})
                        if given.get(t) != (info["counts"] or {}).get(t))
        shown = differ[0] if differ else "?"
        raise ConsistencyError(f"run {run_id}: run.json counts {shown}: "
                               f"{(info['counts'] or {}).get(shown)}, its records give "
                               f"{given.get(shown)}")


def check_predicate(predicate: dict[str, Any], run_ids: list[str],
                    attempts: dict[str, list[dict[str, Any]]]) -> None:
    listed = sorted(r["run_id"] for r in predicate.get("runs", []))
    if listed != sorted(run_ids):
        raise ConsistencyError(f"the statement names runs {listed[:MAX_SHOWN]}, the bundle "
                               f"holds {sorted(run_ids)[:MAX_SHOWN]}")
    target = predicate.get("target")
    mine = [r for run_id in run_ids for r in latest_attempts(attempts[run_id])
            if r["target"] == target]
    result, tests = statement_result(mine)
    for key, group in (("passedTests", "passed"), ("warnedTests", "warned"),
                       ("failedTests", "failed")):
        if sorted(predicate.get(key) or []) != sorted(tests[group]):
            raise ConsistencyError(f"the statement's {key} are not the ones its records give")
    if predicate.get("result") != result:
        raise ConsistencyError(f"the statement says {predicate.get('result')}, its records "
                               f"give {result}")


def check_consistency(files: dict[str, bytes], predicate: dict[str, Any],
                      infos: dict[str, dict[str, Any]],
                      attempts: dict[str, list[dict[str, Any]]],
                      now: datetime | None = None) -> list[str]:
    now = now or datetime.now(UTC)
    run_ids = sorted(infos)
    check_member_names(list(files))
    check_predicate(predicate, run_ids, attempts)
    check_dates(predicate, infos, attempts, now)
    compared = 0
    for run_id in run_ids:
        check_counts(run_id, infos[run_id], attempts[run_id])
        check_attempts(run_id, infos[run_id], attempts[run_id])
        junit = files.get(f"{REPORTS_DIR}/{run_id}/{JUNIT_FILE}")
        if junit is not None:
            compared += check_junit(run_id, junit, attempts[run_id])
    return [f"member names, statement, status counts, attempts and dates agree; {compared} "
            "JUnit test case(s) match their records"]
