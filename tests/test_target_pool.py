"""The target pool: every worker it launches runs where the target says it must."""

from __future__ import annotations

from harness.driver.registry import TargetRequest
from harness.run import target_pool
from harness.run.target_pool import TargetPool


def test_a_checks_own_worker_is_launched_like_the_shared_one(monkeypatch):
    """A contract check that kills its own worker (timeout, resources) must start it in the
    target's environment too: a fresh host in the harness's interpreter would blame the
    harness for the SDK it cannot import."""
    monkeypatch.setattr(target_pool, "worker_launch",
                        lambda target: (["/opt/vendor-env/bin/python"], {"VENDOR": "1"}))
    pool = TargetPool(["onnxruntime-cpu"], memory_limit=1 << 30)
    request = TargetRequest.parse("onnxruntime-cpu")
    shared, own = pool.host(request), pool.fresh_process_host(request)
    assert own is not shared
    for host in (shared, own):
        assert host.argv[0] == "/opt/vendor-env/bin/python"
        assert host.env == {"VENDOR": "1"}
        assert host.memory_limit == 1 << 30
