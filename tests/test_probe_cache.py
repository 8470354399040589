"""The capability-probe cache answers for the target that was probed, and no other.

Two targets served by the same driver module from the same interpreter, told apart only
by their identity (here: ``shipei-faulty`` without a fault, which takes int8, and with
every probe model refused), must each get their own verdicts, whichever is probed first
and however often; the same target probed again reuses what it found. These are the
behaviours, not the file layout: a cache keyed without the target's identity, or one
shared across targets, fails them.
"""

from __future__ import annotations

import json

import pytest

from harness.driver.probe import ACCEPTED, REFUSED, DtypeProbe
from harness.driver.registry import TargetSpec
from harness.isolation.host import ProcessHost

FAULTY = "targets.testing:FaultyTarget"
#: onnxruntime on the CPU, as is
TAKES_INT8 = TargetSpec("shipei-faulty", FAULTY, {"fault": "none"})
#: the same driver, raising on every probe model (Identity, Cast, Concat)
REFUSES = TargetSpec("shipei-faulty", FAULTY,
                     {"fault": "raise", "trigger_op": "Identity|Cast|Concat"})
TIMEOUT = 60.0


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def hosts():
    """One worker per target; each verdict below is asked of a new probe object, which
    knows only what the on-disk cache holds."""
    started = {id(spec): (ProcessHost(spec, startup_timeout=60), spec.build().capabilities())
               for spec in (TAKES_INT8, REFUSES)}
    yield started
    for host, _ in started.values():
        host.close()


def _verdict(hosts, spec: TargetSpec, name: str) -> str:  # noqa: ANN001
    host, caps = hosts[id(spec)]
    found = DtypeProbe(host, caps).verdict(name, TIMEOUT)
    assert found is not None, "the probe could not tell"
    return found.verdict


def test_each_target_gets_its_own_verdicts_whichever_is_probed_first(cache, hosts) -> None:
    assert _verdict(hosts, TAKES_INT8, "int8") == ACCEPTED
    assert _verdict(hosts, REFUSES, "int8") == REFUSED  # not the other's cached "accepted"
    assert _verdict(hosts, REFUSES, "uint8") == REFUSED
    assert _verdict(hosts, TAKES_INT8, "uint8") == ACCEPTED  # nor the other's "refused"
    assert _verdict(hosts, TAKES_INT8, "int8") == ACCEPTED  # once both are cached
    assert _verdict(hosts, REFUSES, "int8") == REFUSED


def test_the_same_target_reuses_its_verdicts(cache, hosts) -> None:
    """A verdict cached for a target is what its next probe gets, even where probing again
    would say otherwise: proved by a cached entry no probe of it could produce."""
    assert _verdict(hosts, TAKES_INT8, "int16") == ACCEPTED
    (stored,) = (cache / "probes").glob("*.json")
    data = json.loads(stored.read_text())
    data["verdicts"]["int16"]["verdict"] = REFUSED
    stored.write_text(json.dumps(data))
    assert _verdict(hosts, TAKES_INT8, "int16") == REFUSED  # read back, not re-probed
    assert _verdict(hosts, REFUSES, "int16") == REFUSED  # probed for itself
    assert _verdict(hosts, TAKES_INT8, "int8") == ACCEPTED
