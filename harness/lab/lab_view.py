"""The lab as a center's registry shows it: every place at a labgrid coordinator, its
tags, who holds or has reserved it, and whether its board can be reached.

A place is

- ``lost`` when none of its resources is exported now, or one it holds is no longer
  available (its exporter is gone, the device unplugged);
- ``busy`` when someone holds it (``acquired``) or a reservation was allocated it;
- ``free`` otherwise.

Like :mod:`harness.lab.coordinator`, the reading runs labgrid's client session in a
subprocess (``python -m harness.lab.lab_view ADDRESS`` prints one JSON line), so a web
server's threads never host labgrid's event loop.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.lab.coordinator import CLIENT_TIMEOUT_S, LabUnavailable, child_answer


@dataclass(frozen=True)
class PlaceView:
    """One place as the coordinator knows it now."""

    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    acquired: str | None = None
    reservation: str | None = None
    #: its resources: ``{"path": exporter/group/class/name, "avail": bool}``
    resources: tuple[Mapping[str, Any], ...] = ()

    @property
    def status(self) -> str:
        if not self.resources or not all(r.get("avail") for r in self.resources):
            return "lost"
        return "busy" if self.acquired or self.reservation else "free"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tags": dict(self.tags), "acquired": self.acquired,
                "reservation": self.reservation, "status": self.status,
                "resources": [dict(r) for r in self.resources]}


def read_lab(address: str, timeout: float = CLIENT_TIMEOUT_S) -> list[PlaceView]:
    """Every place at ``address``, by name; :class:`LabUnavailable` when labgrid is
    missing or the coordinator does not answer."""
    from harness.lab.reservations import check_reachable

    check_reachable(address)
    answer = child_answer(["harness.lab.lab_view", address], f"reading the lab at {address}",
                          timeout)
    return [PlaceView(p["name"], p["tags"], p["acquired"], p["reservation"],
                      tuple(p["resources"])) for p in answer["places"]]


# -- the reading subprocess -------------------------------------------------------------
def _snapshot(address: str) -> dict[str, Any]:
    from harness.lab.coordinator import LabSession

    try:
        session = LabSession(address, "")
    except LabUnavailable as exc:
        return {"error": str(exc), "unreachable": True}
    try:
        places = []
        for name in sorted(session.session.places):
            session.name = name
            state = session.state()  # resources of an exporter gone: avail false
            places.append({
                "name": name, "tags": state["tags"], "acquired": state["acquired"],
                "reservation": state["reservation"],
                "resources": [{"path": f"{r['exporter']}/{r['group']}/{r['cls']}/{r['name']}",
                               "avail": r["avail"]} for r in state["resources"]]})
        return {"places": places}
    finally:
        session.close()


def main(argv: list[str] | None = None) -> int:
    (address,) = (argv if argv is not None else sys.argv[1:])[:1]
    print(json.dumps(_snapshot(address)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
