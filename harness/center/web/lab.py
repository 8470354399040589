"""The center's lab: every labgrid place at the coordinator ``LG_COORDINATOR`` (of the
process serving the registry), whether it is free, busy or lost, who holds it, and
what the registry knows of it: the runs recorded at that place (its history), the runs of
its board and its certificates, or that it was never certified (``/lab``, JSON twin
``/api/lab``).

A place names its board with the tag ``device=MODEL``, the model the board gives in
its IDENTIFY (a run's ``device``, a certificate's chip): that tag joins the lab to the
registry. A place without it is listed with its state alone.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Blueprint
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center import revocations
from harness.center.lab_runs import runs_at
from harness.center.models import Certificate, Run
from harness.center.web.context import context, page, principal, summary, visible_run
from harness.lab.coordinator import COORDINATOR_ENV, LabError
from harness.lab.lab_view import PlaceView, read_lab

#: the place tag that names the board's model (IDENTIFY's model, a run's device)
DEVICE_TAG = "device"
#: the newest runs listed per place
RUNS_SHOWN = 10
#: seconds a reading of the coordinator is reused (each one is a labgrid session)
CACHE_S = 5.0
#: seconds the coordinator may take to answer a page's reading
READ_TIMEOUT_S = 30.0

lab = Blueprint("lab", __name__)
_cache: dict[str, tuple[float, list[PlaceView]]] = {}
_cache_lock = threading.Lock()


def _places(address: str) -> list[PlaceView]:
    with _cache_lock:
        cached = _cache.get(address)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
    places = read_lab(address, timeout=READ_TIMEOUT_S)
    with _cache_lock:
        _cache[address] = (time.monotonic(), places)
    return places


def _history(session: Session, place: str) -> list[dict[str, Any]]:
    """The newest visible runs recorded at ``place`` (:mod:`harness.center.lab_runs`)."""
    who = principal(session)
    runs = []
    for row, where in runs_at(session, place):
        run = {"run_id": row.run_id, "target": row.target, "device": row.device,
               "finished_at": row.finished_at, "coordinator": where.coordinator,
               "exporter": where.exporter, "resource": where.resource,
               "bundle": row.bundle.digest if row.bundle else None}
        if visible_run(session, run, who):
            runs.append(run)
        if len(runs) == RUNS_SHOWN:
            break
    return runs


def _board(session: Session, device: str, revoked: dict[str, Any]) -> dict[str, Any]:
    """What the registry knows of a board model: its newest visible runs and its
    published certificates."""
    who = principal(session)
    runs = []
    for row in session.scalars(select(Run).where(Run.device == device)
                               .order_by(Run.finished_at.desc())).all():
        run = {"run_id": row.run_id, "target": row.target, "finished_at": row.finished_at,
               "runtime_version": row.runtime_version,
               "bundle": row.bundle.digest if row.bundle else None}
        if visible_run(session, run, who):
            runs.append(run)
        if len(runs) == RUNS_SHOWN:
            break
    certificates = [summary(c, revoked) for c in session.scalars(select(Certificate).where(
        Certificate.chip == device, Certificate.published.is_(True))).all()]
    return {"runs": runs, "certificates": certificates,
            "certified": any(not c["revoked"] for c in certificates)}


@lab.get("/lab")
@lab.get("/api/lab")
def lab_page() -> Any:
    address = os.environ.get(COORDINATOR_ENV, "").strip()
    data: dict[str, Any] = {"coordinator": address or None, "error": None, "places": []}
    if not address:
        data["error"] = (f"no lab coordinator: start shipei serve with {COORDINATOR_ENV}="
                         "HOST:PORT to show the lab")
        return page("lab.html", data)
    try:
        places = _places(address)
    except LabError as exc:
        data["error"] = str(exc)
        return page("lab.html", data, 503)
    with context().store.session() as session:
        revoked = revocations.revoked(session)
        for place in places:
            row = place.to_dict()
            device = place.tags.get(DEVICE_TAG)
            row["device"] = device
            row["history"] = _history(session, place.name)
            row.update(_board(session, device, revoked) if device else
                       {"runs": [], "certificates": [], "certified": None})
            data["places"].append(row)
    data["counts"] = {s: sum(p["status"] == s for p in data["places"])
                      for s in ("free", "busy", "lost")}
    return page("lab.html", data)
