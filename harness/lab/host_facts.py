"""What a place's SSH host says about itself and a target there, run over ssh by
:mod:`harness.lab.host_place`: ``python -m harness.lab.host_facts`` reads
``{"spec": ..., "configuration": ..., "options": ...}`` on stdin and prints one JSON line:
the target's identity, availability and capabilities as built on that machine, that
machine's fingerprint (:func:`harness.results.fingerprint.fingerprint`: OS, CPU,
memory, package versions) and the interpreter's facts (what a worker reports, with the
host name and ``SSH_CONNECTION``)."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any


def facts(request: dict[str, Any]) -> dict[str, Any]:
    from harness.driver.registry import TargetSpec
    from harness.isolation.worker_main import worker_facts
    from harness.results.fingerprint import fingerprint

    spec_data = dict(request["spec"])
    spec_data["configurations"] = tuple(spec_data.get("configurations") or ("default",))
    spec = TargetSpec(**spec_data)
    answer: dict[str, Any] = {
        "host": {**worker_facts(), "hostname": socket.gethostname(),
                 "ssh_connection": os.environ.get("SSH_CONNECTION")},
        "environment": fingerprint(),
    }
    try:
        target = spec.build(str(request.get("configuration") or "default"),
                            dict(request.get("options") or {}))
        availability = target.availability()
        answer.update(identity=target.identity.to_dict(), available=availability.available,
                      reason=availability.reason,
                      capabilities=(target.capabilities().to_dict()
                                    if availability.available else None))
    except Exception as exc:  # the driver's failure there: the target is not available
        answer.update(available=False, reason=f"{type(exc).__name__}: {exc}")
    return answer


def main() -> int:
    try:
        answer = facts(json.loads(sys.stdin.read()))
    except Exception as exc:  # one line for the asking side, whatever went wrong
        answer = {"error": f"host facts failed: {type(exc).__name__}: {exc}"}
    print(json.dumps(answer, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
