"""Scenarios: the scenario catalogue (场景清单) and its demands, the supply-capability
catalogue (供给能力目录) and the matching page of a demand (供需对接), each with its JSON
twin under ``/api/``.

``GET /scenarios`` the catalogue (anyone); ``POST /scenarios`` (the form, admin token and
CSRF token) or ``POST /api/scenarios`` (JSON, ``Authorization: Bearer ADMIN``) enters a
demand; ``GET /scenarios/<id>`` a demand matched against the supply; ``GET /supply`` the
supply derived from the published certificates.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, jsonify, redirect, request

from harness.center.models import ScenarioDemand
from harness.center.scenarios import (
    FIGURES,
    TASKS,
    DemandError,
    add_demand,
    demands,
    describe_demand,
    form_demand,
    match,
    supply,
)
from harness.center.web.context import context, page, principal, wants_json
from harness.cert.scenario_fit import SCENARIOS

scenarios = Blueprint("scenarios", __name__)


def _choices() -> dict[str, Any]:
    return {"scenarios": {k: s.label() for k, s in SCENARIOS.items()},
            "tasks": {k: f"{t.zh} / {t.en}" for k, t in TASKS.items()},
            "figures": {k: f"{zh} / {en}" for k, (_, zh, en) in FIGURES.items()}}


@scenarios.get("/scenarios")
@scenarios.get("/api/scenarios")
def catalogue() -> Any:
    with context().store.session() as session:
        found = [describe_demand(row) for row in demands(session)]
    return page("scenarios.html", {"demands": found, "choices": _choices()})


@scenarios.post("/scenarios")
@scenarios.post("/api/scenarios")
def enter() -> Any:
    """The admin enters a demand (the form, or JSON through the API)."""
    data = request.get_json(silent=True) if wants_json() else form_demand(request.form)
    with context().store.session() as session:
        who = principal(session)
        if who.kind == "anonymous":
            abort(401, "sign in with the admin token")
        if not who.is_admin:
            abort(403, "only the center's admin enters scenario demands")
        try:
            row = add_demand(session, data if isinstance(data, dict) else {})
        except DemandError as exc:
            abort(400, str(exc))
        found = describe_demand(row)
    if wants_json():
        return jsonify(found), 201
    return redirect(f"/scenarios/{found['id']}", 303)


@scenarios.get("/scenarios/<int:demand_id>")
@scenarios.get("/api/scenarios/<int:demand_id>")
def matching(demand_id: int) -> Any:
    with context().store.session() as session:
        row = session.get(ScenarioDemand, demand_id)
        if row is None:
            abort(404, f"no scenario demand {demand_id}")
        result = match(describe_demand(row), supply(session))
    return page("scenario.html", result)


@scenarios.get("/supply")
@scenarios.get("/api/supply")
def supply_catalogue() -> Any:
    with context().store.session() as session:
        entries = supply(session)
    return page("scenario_supply.html", {"entries": entries, "tasks": _choices()["tasks"]})
