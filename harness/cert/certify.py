"""Issuing a certificate from runs: check the evidence, compute the level, sign, write.

The runs themselves are made by ``shipei run`` (see ``harness.cli.cmd_certify``);
this module only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.cert import dsse
from harness.cert.evaluate import Evaluation, EvaluationError, evaluate
from harness.cert.evidence import (
    EvidenceError,
    RunEvidence,
    check_disjoint,
    check_performance_settings,
    check_run,
    load_evidence,
    model_files,
    record_paths,
)
from harness.cert.files import (
    cite_file,
    cite_tree,
    distribution_digest,
    loaded_package_files,
    manifest_digest,
)
from harness.cert.keys import fingerprint
from harness.cert.page import render_certificate
from harness.cert.profile import Profile
from harness.cert.provenance import ProvenanceError, check_provenance, from_vendor_lab
from harness.cert.statement import PAYLOAD_TYPE, Issue, build_statement, encode
from harness.driver.registry import RegistryError, TargetRequest, discover
from harness.results.record_files import write_json

CERTIFICATE_SUFFIX = ".dsse.json"
PAGE_SUFFIX = ".html"
#: distributions cited besides the runtimes the run fingerprint lists
EXTRA_DISTRIBUTIONS = ("shipei", "cryptography")


@dataclass
class CertifyRequest:
    profile: Profile
    scope: str
    label: str
    identity: dict[str, Any]
    capabilities: Any
    driver_files: list[Path]
    suite_dirs: dict[str, Path]
    environment: dict[str, Any]
    harness: dict[str, Any]
    key: Ed25519PrivateKey
    issuer_name: str
    valid_days: int
    out_dir: Path


@dataclass
class Issued:
    certificate: Path
    page: Path
    statement: dict[str, Any]
    evaluation: Evaluation


def collect(request: CertifyRequest, run_dirs: list[Path],
            provenance: dict[str, Any] | None = None) -> tuple[list[RunEvidence], Evaluation]:
    """Load and check the runs and compute the level; raise :class:`EvidenceError`.
    Runs from a vendor's lab (``provenance``) need not come from this machine."""
    if not request.profile.certifies(request.identity.get("kind")):
        raise EvidenceError(f"profile {request.profile.name!r} certifies "
                            f"{request.profile.kinds_text} targets; {request.label} is a "
                            f"{request.identity.get('kind')}")
    scope = request.profile.scope(request.scope)
    runs = [load_evidence(d, request.label) for d in run_dirs]
    for run in runs:
        paths = record_paths([request.suite_dirs[s] for s in run.suites
                              if s in request.suite_dirs], request.driver_files)
        check_run(run, request.label, request.identity, request.environment, request.harness,
                  scope, paths, same_machine=not from_vendor_lab(provenance))
    check_disjoint(runs)
    records = [r for run in runs for r in run.records]
    check_performance_settings(records, request.profile.performance)
    try:
        evaluation = evaluate(request.profile, request.scope, records)
    except EvaluationError as exc:
        raise EvidenceError(str(exc)) from None
    if not evaluation.issuable:
        raise EvidenceError("not enough evidence to issue any level: "
                            + "; ".join(evaluation.blockers["limited"]))
    return runs, evaluation


def _suite_files(request: CertifyRequest, suites: list[str]) -> list[dict[str, str]]:
    cited = []
    for suite in suites:
        if suite not in request.suite_dirs:
            raise EvidenceError(f"suite {suite!r} is not installed here; its files cannot "
                                "be cited")
        cited += cite_tree(request.suite_dirs[suite])
    return cited


def _distributions(request: CertifyRequest) -> list[dict[str, Any]]:
    names = sorted({*request.environment.get("runtimes", {}), *EXTRA_DISTRIBUTIONS,
                    str(request.identity.get("runtime", ""))} - {""})
    return [d for d in map(distribution_digest, names) if d is not None]


def issue(request: CertifyRequest, run_dirs: list[Path],
          provenance: dict[str, Any] | None = None) -> Issued:
    """Check the runs, compute the level, sign and write the certificate and its page.

    ``provenance`` (see :mod:`harness.cert.provenance`) is signed into the predicate;
    None means the center's own lab made the runs."""
    try:
        provenance = check_provenance(provenance)
    except ProvenanceError as exc:
        raise EvidenceError(str(exc)) from None
    runs, evaluation = collect(request, run_dirs, provenance)
    records = [r for run in runs for r in run.records]
    driver_files = [cite_file(p) for p in request.driver_files]
    files = {
        "driver": driver_files,
        "suites": _suite_files(request, sorted({r["suite"] for r in records})),
        "models": model_files(records),
    }
    keyid = fingerprint(request.key.public_key())
    content = Issue(
        profile=request.profile, evaluation=evaluation, label=request.label,
        identity=request.identity, capabilities=request.capabilities,
        environment=runs[0].info["environment"], runs=[r.citation() for r in runs],
        files=files, distributions=_distributions(request), records=records,
        harness=request.harness, issuer={"name": request.issuer_name, "keyid": keyid},
        valid_days=request.valid_days, provenance=provenance)
    statement = build_statement(content, manifest_digest(driver_files))
    envelope = dsse.sign(PAYLOAD_TYPE, encode(statement), request.key, keyid)
    cid = statement["predicate"]["certificate_id"]
    request.out_dir.mkdir(parents=True, exist_ok=True)
    certificate = request.out_dir / f"{cid}{CERTIFICATE_SUFFIX}"
    write_json(certificate, envelope)
    page = request.out_dir / f"{cid}{PAGE_SUFFIX}"
    page.write_text(render_certificate(statement, keyid), encoding="utf-8")
    return Issued(certificate, page, statement, evaluation)


def describe_target(label: str, expectations: list[Path] | None = None
                    ) -> tuple[TargetRequest, dict[str, Any], list[Path]]:
    """The target's description (identity, availability, capabilities) and driver files:
    the modules its factory loads and its expectations file (``expectations`` instead,
    when given); :class:`EvidenceError` when the target or a file cannot be had."""
    try:
        request = TargetRequest.parse(label)
        registry = discover()
        spec = registry.spec(request.name)
        target = registry.build(request)
        described = target.describe()
        files = loaded_package_files(spec.factory.partition(":")[0])
    except (RegistryError, TypeError, OSError) as exc:
        raise EvidenceError(str(exc)) from None
    for path in expectations or [target.expectations_path()]:
        if path is not None and Path(path).is_file():
            if expectations:  # a file the user named is read before it is cited
                _check_expectations(Path(path))
            files.append(Path(path))
        elif expectations:
            raise EvidenceError(f"expectations file {path} does not exist")
    return request, described, files


def _check_expectations(path: Path) -> None:
    """A file given as ``--expectations`` must be one: cited on a certificate as a driver
    file, it is evidence of how the runs were judged."""
    from harness.verdicts.expectations import Expectations, ExpectationsError

    try:
        Expectations.load([path])
    except ExpectationsError as exc:
        raise EvidenceError(f"--expectations: {exc}") from None


def installed_suites() -> dict[str, Path]:
    """Every registered suite's folder, by name (what a certificate cites suite files of)."""
    from harness.cases.suite_registry import suite_paths

    return suite_paths()


def certify_request(profile: Profile, scope: str, label: str, described: dict[str, Any],
                    driver_files: list[Path], key: Any, issuer_name: str, valid_days: int,
                    out_dir: Path) -> CertifyRequest:
    """What :func:`issue` needs, for a target described here (:func:`describe_target`)."""
    from harness import __version__
    from harness.results.fingerprint import fingerprint, git_commit

    identity = {k: v for k, v in described.items()
                if k not in ("available", "reason", "capabilities")}
    return CertifyRequest(
        profile=profile, scope=scope, label=label, identity=identity,
        capabilities=described.get("capabilities"), driver_files=driver_files,
        suite_dirs=installed_suites(), environment=fingerprint(),
        harness={"version": __version__, "git_commit": git_commit()}, key=key,
        issuer_name=issuer_name, valid_days=valid_days, out_dir=out_dir)
