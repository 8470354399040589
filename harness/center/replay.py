"""Replay detection on content: what a bundle measured, not what it is called.

Renaming a run, re-signing it with another key or re-packing it changes every name
and digest of the bundle but none of its measurements. Each case's measured values
are hashed (:func:`record_digest`): the suite and case with the wall time and phase
timings the harness took with a nanosecond clock (``duration_s``, ``timings``), and
for a timed case the sha256 of its latency samples file. Statuses, messages, error
figures and timestamps are left out: error figures are the same in every honest run
of a case, and a copier edits statuses and dates freely, so neither may decide.

Two honest runs never share a case's timings to the nanosecond (a fresh run of the
same target by another vendor shares none), so the rule can be strict:

- a bundle is a replay when :data:`MAX_SHARED_SHARE` or more of its timed records (at
  least one) carry a digest of a bundle already accepted, whoever's vendor;
- or when any of its latency samples files is one already accepted.

Records without timings (a case skipped before it ran) are not counted. The digests
of each accepted bundle are stored (table ``content_digests``); bundles accepted before
the table existed get theirs at the next intake (:func:`backfill`), so they are
protected too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center.bundle import RUNS_DIR, BundleError, open_bundle
from harness.center.models import Bundle, ContentDigest
from harness.results.record_files import latest_attempts

#: the share of a bundle's timed records already accepted that makes it a replay
MAX_SHARED_SHARE = 0.05
#: the row that says a bundle was scanned and measured nothing (so it is not scanned again)
NOTHING_MEASURED = "none"
#: digests per database query (SQLite's bound-parameter limit is 999 on old builds)
QUERY_CHUNK = 500


class ReplayError(Exception):
    """A bundle whose measurements were already accepted (one line)."""


@dataclass(frozen=True)
class Digest:
    digest: str
    kind: str  # "record" or "samples"
    suite: str
    case: str


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def record_digest(record: dict[str, Any]) -> str | None:
    """sha256 of a case's measured times, or None when it measured none."""
    timings = {k: v for k, v in (record.get("timings") or {}).items()
               if _number(v) is not None} if isinstance(record.get("timings"), dict) else {}
    duration = _number(record.get("duration_s"))
    if not duration and not any(timings.values()):
        return None
    text = json.dumps({"suite": record["suite"], "case": record["case"],
                       "duration_s": duration, "timings": timings},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def bundle_digests(files: dict[str, bytes], attempts: dict[str, list[dict[str, Any]]]
                   ) -> list[Digest]:
    """The content digests of every effective record (every target) of every run."""
    found = []
    for run_id, records in sorted(attempts.items()):
        for record in latest_attempts(records):
            digest = record_digest(record)
            if digest:
                found.append(Digest(digest, "record", record["suite"], record["case"]))
            samples = (record.get("metrics") or {}).get("samples_file")
            data = files.get(f"{RUNS_DIR}/{run_id}/{samples}") if isinstance(samples, str) \
                else None
            if data is not None:
                found.append(Digest(hashlib.sha256(data).hexdigest(), "samples",
                                    record["suite"], record["case"]))
    return found


def _known(session: Session, digests: list[str]) -> dict[str, int]:
    known: dict[str, int] = {}
    for start in range(0, len(digests), QUERY_CHUNK):
        chunk = digests[start:start + QUERY_CHUNK]
        for digest, bundle_id in session.execute(
                select(ContentDigest.digest, ContentDigest.bundle_id)
                .where(ContentDigest.digest.in_(chunk))):
            known.setdefault(digest, bundle_id)
    return known


def check_content(session: Session, digests: list[Digest]) -> str:
    """Raise :class:`ReplayError` when the measurements were accepted before; else a note."""
    known = _known(session, sorted({d.digest for d in digests}))
    samples = [d for d in digests if d.kind == "samples" and d.digest in known]
    if samples:
        first = samples[0]
        raise ReplayError(f"the latency samples of {first.suite}::{first.case} are those of "
                          f"bundle #{known[first.digest]}, already accepted")
    records = [d for d in digests if d.kind == "record"]
    shared = [d for d in records if d.digest in known]
    if shared and len(shared) >= MAX_SHARED_SHARE * len(records):
        first = shared[0]
        raise ReplayError(f"{len(shared)} of {len(records)} timed records carry the "
                          f"measurements of an accepted bundle (#{known[first.digest]}, e.g. "
                          f"{first.suite}::{first.case}): a copy, whatever its run id or key")
    return f"{len(records)} timed record(s), none measured before"


def store_digests(session: Session, bundle_id: int, digests: list[Digest]) -> None:
    session.add_all(ContentDigest(digest=d.digest, kind=d.kind, bundle_id=bundle_id,
                                  suite=d.suite[:100], case=d.case[:300]) for d in digests)


def backfill(session: Session) -> int:
    """Store the digests of accepted bundles that have none (accepted before the table
    existed); return how many bundles were scanned."""
    from harness.center.bundle_shape import ShapeError, load_runs

    scanned = select(ContentDigest.bundle_id)
    rows = session.scalars(select(Bundle).where(Bundle.id.not_in(scanned))).all()
    for row in rows:
        try:
            bundle = open_bundle(row.data)
            _, attempts = load_runs(bundle.files, bundle.run_ids())
            digests = bundle_digests(bundle.files, attempts)
        except (BundleError, ShapeError):
            digests = []
        store_digests(session, row.id, digests or [Digest("", NOTHING_MEASURED, "", "")])
    if rows:
        session.flush()
    return len(rows)
