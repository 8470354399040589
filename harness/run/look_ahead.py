"""Sending a session's coming cases ahead to their targets' workers.

When a case item (:mod:`harness.run.case_item`) starts, the cases of the
next tests on the same target (up to the window, stopping at the first test that
is not such a case) are loaded, checked against the target and sent to its
worker through :class:`~harness.run.pipelined_host.PipelinedHost`; the test then judges
the answer already on its way. Pytest still runs, reports and records every test
in collection order: only the worker's side moves ahead.

A case that cannot be prepared or sent ahead is simply run at its turn, as it
would be without pipelining, so every failure keeps its usual outcome.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from harness.cases.case import (
    Case,
    Outcome,
    PreparedCase,
    conclude_case,
    execute_case,
    outcome_from_exception,
    prepare_case,
)
from harness.driver.registry import TargetRequest
from harness.driver.target import Capabilities
from harness.isolation.host import (
    CaseTimeout,
    Host,
    InfraError,
    ProcessHost,
    RemoteError,
    WorkerCrash,
)
from harness.run.case_item import item_case, item_target_label
from harness.run.pipelined_host import UNSENT_BYTES, PipelinedHost, Ticket, configured_window


@dataclass
class _Ahead:
    """A case prepared (or ended while preparing) before its test ran."""

    prepared: PreparedCase | Outcome
    label: str
    ticket: Ticket | None = None


class CasePrefetcher:
    """A pytest plugin object: wraps process hosts and sends cases ahead to them.

    ``resolve(label)`` gives ``(host, capabilities, available)`` for a target label,
    ``timeout_for(item)`` the item's case timeout. ``window`` 0 turns it off.
    """

    def __init__(self, resolve: Callable[[TargetRequest], tuple[Host, Capabilities, bool]],
                 timeout_for: Callable[[pytest.Item], float], window: int,
                 targets: int = 1, lookahead_only_next: bool = False) -> None:
        self.resolve = resolve
        self.timeout_for = timeout_for
        self.window = window
        self.targets = max(targets, 1)
        self.lookahead_only_next = lookahead_only_next
        self._hosts: dict[str, PipelinedHost] = {}
        self._items: list[pytest.Item] = []
        self._position: dict[str, int] = {}
        self._ahead: dict[str, _Ahead] = {}
        self._ahead_count: Counter[str] = Counter()  # per target label
        #: per target label: the position of the next test to look at for sending ahead
        self._cursor: dict[str, int] = {}
        #: per node id: (target label, whether it may be sent ahead), looked at once
        self._facts: dict[str, tuple[str | None, bool]] = {}

    @classmethod
    def from_window_env(cls, resolve: Callable[[TargetRequest], tuple[Host, Capabilities, bool]],
                        timeout_for: Callable[[pytest.Item], float], targets: int,
                        under_xdist: bool) -> CasePrefetcher:
        """Window from ``SHIPEI_PIPELINE_WINDOW`` (bad values are a usage error)."""
        try:
            window = configured_window()
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        return cls(resolve, timeout_for, window, targets, lookahead_only_next=under_xdist)

    def host(self, label: str, host: Host) -> Host:
        """The host tests get: a process host wrapped for pipelining when it is on."""
        if self.window < 1 or not isinstance(host, ProcessHost):
            return host
        wrapped = self._hosts.get(label)
        if wrapped is None or wrapped.host is not host:
            wrapped = self._hosts[label] = PipelinedHost(host, self.window)
        return wrapped

    # -- pytest hooks ----------------------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._items = list(session.items)
        self._position = {item.nodeid: i for i, item in enumerate(self._items)}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        for host in self._hosts.values():
            host.pipeline.poll()
        if self.window >= 1 and item_case(item) is not None:
            self._send_ahead(item, nextitem)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        ahead = self._take(nodeid)
        if ahead is not None and ahead.ticket is not None:  # its test never asked for it
            host = self._pipelined_for(nodeid)
            if host is not None:
                host.pipeline.discard(ahead.ticket)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for host in self._hosts.values():
            host.pipeline.close()
        self._ahead.clear()
        self._ahead_count.clear()

    # -- running a case ----------------------------------------------------------------
    def execute(self, item: pytest.Item, case: Case, host: Host, caps: Capabilities,
                timeout: float) -> Outcome:
        """The case's outcome: from what was sent ahead for ``item``, else run now."""
        ahead = self._take(item.nodeid)
        if ahead is None or not isinstance(host, PipelinedHost) or (
                isinstance(ahead.prepared, PreparedCase) and ahead.ticket is None):
            return execute_case(case, host, caps, timeout)
        prepared = ahead.prepared
        if isinstance(prepared, Outcome):
            return prepared
        assert ahead.ticket is not None
        try:
            result = host.result(ahead.ticket)
        except (CaseTimeout, WorkerCrash, InfraError, RemoteError) as exc:
            spent = prepared.prepare_s + ahead.ticket.service_s
            return outcome_from_exception(exc, time.perf_counter() - spent)
        waited = time.perf_counter() - prepared.started - prepared.prepare_s \
            - ahead.ticket.service_s
        return conclude_case(prepared, result, caps, waited_s=max(waited, 0.0))

    # -- sending ahead -----------------------------------------------------------------
    def _take(self, nodeid: str) -> _Ahead | None:
        ahead = self._ahead.pop(nodeid, None)
        if ahead is not None:
            self._ahead_count[ahead.label] -= 1
        return ahead

    def _send_ahead(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Prepare and send ``item`` and the tests after it on the same target until the
        window is full, stopping at the first that is not a case (it may use the worker
        directly) or cannot be prepared yet (its own test retries it)."""
        label = item_target_label(item)
        if label is None:
            return
        start = self._position.get(item.nodeid)
        if self.lookahead_only_next or start is None:  # under xdist only the next test is
            candidates = [item] + ([nextitem] if nextitem is not None else [])  # ours
            for later in candidates[:1] if start is None else candidates:
                if not self._send_one(later, label):
                    return
            return
        # a cursor per target: each test looks only at what the last one did not reach
        cursor = max(self._cursor.get(label, start), start)
        limit = min(start + self.window * self.targets * 2 + 1, len(self._items))
        while cursor < limit and self._ahead_count[label] < self.window:
            if not self._send_one(self._items[cursor], label):
                break
            cursor += 1
        self._cursor[label] = cursor

    def _send_one(self, later: pytest.Item, label: str) -> bool:
        """Send ``later`` ahead if it is a case on ``label`` not sent yet; False when the
        sending must stop there."""
        later_label, sendable = self._facts_of(later)
        if later_label != label or later.nodeid in self._ahead:
            return True
        if not sendable or self._ahead_count[label] >= self.window:
            return False
        ahead = self._prepare(later, label)
        if ahead is None:
            return False
        self._ahead[later.nodeid] = ahead
        self._ahead_count[label] += 1
        return True

    def _facts_of(self, item: pytest.Item) -> tuple[str | None, bool]:
        facts = self._facts.get(item.nodeid)
        if facts is None:
            facts = self._facts[item.nodeid] = (
                item_target_label(item),
                item_case(item) is not None and item.get_closest_marker("skip") is None)
        return facts

    def _prepare(self, item: pytest.Item, label: str) -> _Ahead | None:
        """Prepare and send one case; None when it must wait for its own test instead."""
        case = item_case(item)
        try:
            host, caps, available = self.resolve(TargetRequest.parse(label))
        except Exception:  # the test itself will meet (and report) whatever this was
            return None
        if not available or not isinstance(host, PipelinedHost) or case is None:
            return None
        if host.pipeline.unsent_bytes() >= UNSENT_BYTES:  # big models: prepare at their turn
            return None
        timeout = self.timeout_for(item)
        try:
            prepared = prepare_case(case, host, caps, timeout)
            if isinstance(prepared, Outcome):
                return _Ahead(prepared, label)
            ticket = host.submit(prepared.key, prepared.model, prepared.feeds,
                                 timeout - prepared.prepare_s)
        except Exception:  # e.g. a tensor the wire cannot carry: its test reports it
            return None
        return _Ahead(prepared, label, ticket)

    def _pipelined_for(self, nodeid: str) -> PipelinedHost | None:
        index = self._position.get(nodeid)
        label = item_target_label(self._items[index]) if index is not None else None
        return self._hosts.get(label) if label else None
