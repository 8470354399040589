"""Where a run stood in a labgrid lab, kept with the run in the center's database, so the
lab page shows each place's run history.

A run on one place records it in run.json under ``targets.<label>.place`` (a board's
serial port, or a framework target's SSH host); a farm run (``shipei run --places``)
lists its places under ``farm.places`` (each with where it stood). Every place a run's
target used becomes one :class:`~harness.center.models.RunPlace` row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center.models import Run, RunPlace

#: the longest text each column holds (the models' String lengths)
COLUMN_LENGTHS = {"place": 200, "coordinator": 300, "exporter": 200, "resource": 400}


def places_of(info: Mapping[str, Any], label: str) -> list[dict[str, str]]:
    """The places target ``label`` of a run (its run.json ``info``) stood at, by name,
    each once: ``{place, coordinator, exporter, resource}`` ("" where not recorded)."""
    found: list[Mapping[str, Any]] = []
    target = (info.get("targets") or {}).get(label)
    if isinstance(target, Mapping) and isinstance(target.get("place"), Mapping):
        found.append(target["place"])
    farm = info.get("farm")
    if isinstance(farm, Mapping):
        for place in farm.get("places") or ():
            if isinstance(place, Mapping) and place.get("name"):
                where = place.get("where") if isinstance(place.get("where"), Mapping) else {}
                found.append({**where, "place": place["name"]})
    rows: dict[str, dict[str, str]] = {}
    for where in found:
        name = where.get("place")
        if isinstance(name, str) and name and "error" not in where and name not in rows:
            rows[name] = {key: str(where.get(key) or "")[:limit]
                          for key, limit in COLUMN_LENGTHS.items()}
    return list(rows.values())


def store_places(session: Session, run: Run, info: Mapping[str, Any]) -> list[RunPlace]:
    """A :class:`RunPlace` row for each place ``run``'s target stood at."""
    rows = [RunPlace(run_pk=run.id, **where) for where in places_of(info, run.target)]
    session.add_all(rows)
    return rows


def runs_at(session: Session, place: str) -> list[tuple[Run, RunPlace]]:
    """The runs recorded at ``place``, newest first."""
    rows = session.execute(
        select(Run, RunPlace).join(RunPlace, RunPlace.run_pk == Run.id)
        .where(RunPlace.place == place).order_by(Run.finished_at.desc()))
    return [(run, where) for run, where in rows]
