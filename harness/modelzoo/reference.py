"""The declared reference that computes golden outputs.

ONNX Runtime on the CPU in fp32 with every graph optimization disabled: the
runtime most models are exported against, running the graph as written. It is
built through the registry like any target (the core never imports a driver)
and runs in its own worker process.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from harness.driver.registry import RegistryError, TargetRequest, discover
from harness.isolation.host import Host, ProcessHost

REFERENCE_TARGET = "onnxruntime-cpu,graph_optimization_level=disable"


class ReferenceUnavailable(Exception):
    pass


class Reference:
    """A worker running the reference target; use as a context manager."""

    def __init__(self, request: str = REFERENCE_TARGET) -> None:
        parsed = TargetRequest.parse(request)
        try:
            spec = discover().spec(parsed.name)
            target = spec.build(parsed.configuration, parsed.options)
        except (RegistryError, TypeError) as exc:
            raise ReferenceUnavailable(f"reference target {request!r}: {exc}") from None
        availability = target.availability()
        if not availability.available:
            raise ReferenceUnavailable(f"reference target {request!r} is not available: "
                                       f"{availability.reason}")
        self.request = request
        self.identity: dict[str, Any] = {"target": request, **target.identity.to_dict()}
        self.precision = target.capabilities().precision
        self.host: Host = ProcessHost(spec, parsed.configuration, parsed.options)

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.host.close()

    def summary(self) -> dict[str, str]:
        """What a golden records about who computed it."""
        keys = ("target", "runtime", "runtime_version", "device")
        return {k: str(self.identity.get(k, "")) for k in keys}
