"""Intake: the center's review of a vendor's evidence bundle.

Checks, in order; the first that fails refuses the bundle and is named in the
refusal (later ones are "not run"). A check that cannot decide either way is
"inconclusive": recorded with what would decide it, and not a refusal:

``archive``      the file is a bundle within the size limit, regular members only
``signature``    signed by a registered vendor key, naming that vendor
``digest``       every member matches the signed manifest; none missing or extra
``consistency``  the bundle's artefacts agree with each other (member names, the
                 statement, JUnit, attempts, dates; :mod:`harness.center.crosscheck`)
``replay``       neither this bundle, its runs, nor their measurements were accepted
                 before, whoever signed them (:mod:`harness.center.replay`)
``environment``  records consistent with the environment they claim
``completeness`` the runs fit the target, profile and scope (as certification
                 checks them, on another lab's platform), hold a record for every case
                 the center's own copy of the suites selects (:mod:`harness.center.universe`)
                 and reach a level
``accuracy``     TEST01-style: timed figures rest on checked outputs
``caching``      TEST04-style: distinct inputs, samples match, no cached answers

Runs are read from the bundle's members in memory; the one extraction to disk (the
certification checks read run folders) goes to a scratch folder that a killed intake
does not leave behind (:mod:`harness.center.scratch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center import anti_gaming, replay, universe
from harness.center.bundle import RUNS_DIR, BundleError, OpenedBundle, open_bundle
from harness.center.bundle_shape import (
    ShapeError,
    check_environment,
    check_manifest,
    check_statement,
    load_runs,
)
from harness.center.crosscheck import ConsistencyError, check_consistency
from harness.center.intake_checks import CHECKS
from harness.center.models import Bundle, IntakeReport, Record, Run, Vendor
from harness.center.scratch import scratch_dir
from harness.center.store import now
from harness.cert.evaluate import evaluate
from harness.cert.evidence import EvidenceError, check_disjoint, check_run, load_evidence
from harness.cert.profile import Profile, ProfileError, level_label, load_profile
from harness.results.record_files import latest_attempts


@dataclass
class CheckResult:
    id: str
    #: "pass", "fail", "not run", or "inconclusive": the check could not decide (the
    #: evidence is compatible with both an honest and a gamed run, e.g. timed on a busy
    #: machine); it does not refuse the bundle, and says what would decide it
    state: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        zh, en = CHECKS[self.id]
        return {"id": self.id, "title_zh": zh, "title_en": en, "state": self.state,
                "detail": self.detail}


@dataclass
class IntakeRequest:
    profile: str
    scope: str
    #: the center's description of the target: (identity, driver files, suite dirs, harness)
    describe_target: Callable[[str], dict[str, Any]]
    max_bytes: int
    uploader: str | None = None  # the vendor who uploads (web); None: the center's CLI


@dataclass
class IntakeResult:
    checks: list[CheckResult]
    digest: str | None = None
    vendor: str | None = None
    target: str | None = None
    level: str | None = None
    bundle_id: int | None = None
    report_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return all(c.state in ("pass", "inconclusive") for c in self.checks)

    @property
    def failed(self) -> CheckResult | None:
        return next((c for c in self.checks if c.state == "fail"), None)

    def refusal(self) -> str:
        failed = self.failed
        return f"refused at check '{failed.id}': {failed.detail}" if failed else ""

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "failed_check": self.failed.id if self.failed else None,
                "digest": self.digest, "vendor": self.vendor, "target": self.target,
                "level": self.level, "bundle_id": self.bundle_id, "report_id": self.report_id,
                "checks": [c.to_dict() for c in self.checks]}


class _Refused(Exception):
    def __init__(self, check: str, detail: str) -> None:
        super().__init__(detail)
        self.check = check


def _vendor_for(session: Session, bundle: OpenedBundle, uploader: str | None) -> Vendor:
    vendors = {v.keyid: v for v in session.scalars(
        select(Vendor).where(Vendor.keyid.in_(bundle.keyids)))}
    if not vendors:
        raise _Refused("signature", "the bundle is signed by no registered vendor key "
                                    f"(keyid {bundle.keyids[0][:16]}...)")
    vendor = next(iter(vendors.values()))
    key = serialization.load_pem_public_key(vendor.public_pem.encode("ascii"))
    try:
        predicate = bundle.verify_signature(key)["predicate"]  # type: ignore[arg-type]
    except BundleError as exc:
        raise _Refused("signature", str(exc).removeprefix("signature: ")) from None
    if predicate.get("vendor") != vendor.name:
        raise _Refused("signature", f"the bundle names vendor {predicate.get('vendor')!r} but "
                                    f"is signed with {vendor.name!r}'s key")
    if uploader is not None and uploader != vendor.name:
        raise _Refused("signature", f"vendor {uploader!r} cannot submit a bundle signed by "
                                    f"{vendor.name!r}")
    return vendor


def stored_run_ids(infos: dict[str, dict[str, Any]]) -> list[str]:
    """The ``runs.run_id`` values the runs get when stored (``<run>/<label>`` for each
    target of a run with several)."""
    ids = []
    for run_id, info in sorted(infos.items()):
        labels = sorted(info["targets"])
        ids += [run_id] if len(labels) == 1 else [f"{run_id}/{label}" for label in labels]
    return ids


def _check_replay(session: Session, bundle: OpenedBundle, infos: dict[str, dict[str, Any]],
                  digests: list[replay.Digest]) -> str:
    earlier = session.scalar(select(Bundle).where(Bundle.digest == bundle.digest))
    if earlier is not None:
        raise _Refused("replay", f"this bundle was already accepted as bundle #{earlier.id} "
                                 f"(uploaded {earlier.uploaded_at:%Y-%m-%d %H:%M}); continue with "
                                 f"shipei db bundle get {earlier.id} -o FILE, then shipei audit "
                                 "FILE and shipei certify --bundle FILE")
    known = session.scalars(select(Run).where(Run.run_id.in_(stored_run_ids(infos)))).all()
    if known:
        raise _Refused("replay", f"run {known[0].run_id} was already submitted"
                                 + (f" in bundle #{known[0].bundle_id}" if known[0].bundle_id
                                    else ""))
    replay.backfill(session)
    try:
        note = replay.check_content(session, digests)
    except replay.ReplayError as exc:
        raise _Refused("replay", str(exc)) from None
    return f"new bundle {bundle.digest[:16]}, {len(infos)} new run(s); {note}"


def _profile(request: IntakeRequest) -> Profile:
    try:
        profile = load_profile(request.profile)
        profile.scope(request.scope)
    except ProfileError as exc:
        raise _Refused("completeness", str(exc)) from None
    return profile


def _check_completeness(request: IntakeRequest, root: Path, run_ids: list[str], target: str
                        ) -> tuple[str, list[dict[str, Any]]]:
    profile = _profile(request)
    try:
        center = request.describe_target(target)
    except Exception as exc:  # the center cannot build the target: no audit possible
        raise _Refused("completeness", f"the center cannot describe target {target!r}: "
                                       f"{exc}") from None
    if not profile.certifies(center["identity"].get("kind")):
        raise _Refused("completeness", f"profile {profile.name!r} certifies "
                                       f"{profile.kinds_text} targets; {target} is a "
                                       f"{center['identity'].get('kind')}")
    scope = profile.scope(request.scope)
    try:
        runs = [load_evidence(root / r, target) for r in run_ids]
        for run in runs:
            check_run(run, target, center["identity"], center["environment"], center["harness"],
                      scope, center["record_paths"](run.suites), same_machine=False)
            effective = latest_attempts(run.records)
            expected = universe.expected_cases(universe.run_suites(run.info, effective),
                                               target, scope.markexpr)
            universe.check_complete(run.run_id, expected, effective)
        check_disjoint(runs)
    except (EvidenceError, universe.UniverseError) as exc:
        raise _Refused("completeness", str(exc)) from None
    records = [r for run in runs for r in run.records]
    evaluation = evaluate(profile, request.scope, records)
    if not evaluation.issuable:
        raise _Refused("completeness", "not enough evidence for any level: "
                       + "; ".join(evaluation.blockers["limited"]))
    return evaluation.level, records


def review(session: Session, data: bytes, request: IntakeRequest) -> IntakeResult:
    """Run every check on ``data``; store the bundle, its runs and records when it is
    accepted, and the intake report either way (in the caller's transaction)."""
    with scratch_dir() as tmp:
        return _review(session, data, request, tmp)


def _review(session: Session, data: bytes, request: IntakeRequest, tmp: Path) -> IntakeResult:
    results: list[CheckResult] = []
    result = IntakeResult(results)
    vendor: Vendor | None = None
    try:
        try:
            bundle = open_bundle(data, request.max_bytes)
        except BundleError as exc:
            check, _, detail = str(exc).partition(": ")
            raise _Refused(check if check in CHECKS else "archive", detail) from None
        result.digest = bundle.digest
        results.append(CheckResult("archive", "pass", f"{len(bundle.files)} members, "
                                                      f"{len(data)} bytes"))
        vendor = _vendor_for(session, bundle, request.uploader)
        statement = bundle.statement()
        predicate = statement["predicate"]
        try:
            check_statement(statement)
        except ShapeError as exc:
            raise _Refused(exc.check, str(exc)) from None
        result.vendor, result.target = vendor.name, predicate["target"]
        results.append(CheckResult("signature", "pass", f"signed by {vendor.name} (key "
                                                        f"{vendor.keyid[:16]}...)"))
        try:
            check_manifest(_json_member(bundle.manifest))
            count = bundle.verify_digests(statement)
        except ShapeError as exc:
            raise _Refused(exc.check, str(exc)) from None
        except BundleError as exc:
            raise _Refused("digest", str(exc).removeprefix("digest: ")) from None
        results.append(CheckResult("digest", "pass", f"{count} files match the manifest"))
        run_ids = bundle.run_ids()
        try:
            infos, attempts = load_runs(bundle.files, run_ids)
            notes = check_consistency(bundle.files, predicate, infos, attempts)
        except ShapeError as exc:
            raise _Refused(exc.check, str(exc)) from None
        except ConsistencyError as exc:
            raise _Refused("consistency", str(exc)) from None
        results.append(CheckResult("consistency", "pass", "; ".join(notes)))
        digests = replay.bundle_digests(bundle.files, attempts)
        results.append(CheckResult("replay", "pass",
                                   _check_replay(session, bundle, infos, digests)))
        environment = _json_member(bundle.environment)
        try:
            check_environment(environment)
        except ShapeError as exc:
            raise _Refused(exc.check, str(exc)) from None
        _audit("environment", results, anti_gaming.check_environment, infos, attempts,
               environment, predicate.get("platform_id"))
        root = bundle.extract(tmp, RUNS_DIR)
        level, records = _check_completeness(request, root, run_ids, result.target or "")
        result.level = level
        results.append(CheckResult("completeness", "pass",
                                   f"profile {request.profile}, scope {request.scope}: "
                                   f"{len(records)} records reach {level_label(level)}"))
        run_of = {id(r): r["run_id"] for r in records}
        _audit("accuracy", results, anti_gaming.check_accuracy_in_performance, records)
        _audit("caching", results, anti_gaming.check_caching, records, bundle.files, run_of)
    except _Refused as refused:
        results.append(CheckResult(refused.check, "fail", str(refused)))
    done = {c.id for c in results}
    results += [CheckResult(c, "not run") for c in CHECKS if c not in done]
    if result.accepted:
        result.bundle_id = _store_bundle(session, bundle, vendor, result.target or "",
                                         predicate, data, root, digests)
    report = IntakeReport(bundle_digest=result.digest or "", bundle_id=result.bundle_id,
                          vendor_id=vendor.id if vendor else None, accepted=result.accepted,
                          failed_check=result.failed.id if result.failed else None,
                          checks=[c.to_dict() for c in results], profile=request.profile,
                          scope=request.scope, created_at=now())
    session.add(report)
    session.flush()
    result.report_id = report.id
    return result


def _json_member(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except BundleError as exc:
        raise _Refused("digest", str(exc).removeprefix("digest: ")) from None


def _audit(check: str, results: list[CheckResult], function: Callable[..., list[str]],
           *args: Any) -> None:
    try:
        notes = function(*args)
    except anti_gaming.AuditInconclusive as exc:
        results.append(CheckResult(check, "inconclusive", str(exc)))
        return
    except anti_gaming.AuditError as exc:
        raise _Refused(check, str(exc)) from None
    results.append(CheckResult(check, "pass", "; ".join(notes)))


def _store_bundle(session: Session, bundle: OpenedBundle, vendor: Vendor | None, target: str,
                  predicate: dict[str, Any], data: bytes, root: Path,
                  digests: list[replay.Digest]) -> int:
    assert vendor is not None
    row = Bundle(digest=bundle.digest, vendor_id=vendor.id, target=target,
                 claimed_at=str(predicate.get("created_at") or ""), uploaded_at=now(),
                 size=len(data), data=data, published=False)
    session.add(row)
    session.flush()
    for run_id in bundle.run_ids():
        store_run(session, root / run_id, row.id)
    replay.store_digests(session, row.id, digests)
    return row.id


def store_run(session: Session, run_dir: Path, bundle_id: int | None) -> list[Run]:
    """One ``Run`` row per target of the run, with its effective records."""
    from harness.center.lab_runs import store_places
    from harness.results.record_files import load_run

    info, records = load_run(run_dir)
    env = info.get("environment") or {}
    rows = []
    for label, target in sorted((info.get("targets") or {}).items()):
        run = Run(run_id=info["run_id"] if len(info["targets"]) == 1 else
                  f"{info['run_id']}/{label}", bundle_id=bundle_id, target=label,
                  driver_version=str(target.get("driver_version") or ""),
                  runtime=str(target.get("runtime") or ""),
                  runtime_version=str(target.get("runtime_version") or ""),
                  device=str(target.get("device") or ""),
                  harness_version=str(info.get("harness_version") or ""),
                  platform_id=str(env.get("platform_id") or ""),
                  started_at=str(info.get("started_at") or ""),
                  finished_at=str(info.get("finished_at") or ""))
        session.add(run)
        session.flush()
        store_places(session, run, info)
        for r in records:
            if r.get("target") != label:
                continue
            metrics = r.get("metrics") or {}
            error = metrics.get("max_abs_error")
            session.add(Record(run_pk=run.id, suite=r["suite"], case=r["case"],
                               status=r["status"], op_type=(r.get("tags") or {}).get("op_type"),
                               max_abs_error=error if isinstance(error, (int, float)) else None,
                               metrics={k: v for k, v in metrics.items()
                                        if k not in ("loadgen_logs",)}))
        rows.append(run)
    return rows
