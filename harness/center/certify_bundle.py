"""Certificates from vendor bundles, and the chain check that verifies them.

A bundle that passed intake and an audit re-run is certified with
:func:`harness.cert.certify.issue` and a ``provenance`` that says where the evidence
came from: the vendor's lab (named, with the vendor key), the sha256 of the vendor's
attestation (the bundle's ``attestation.dsse.json``), and the center's audit (seed,
sample size, agreement, the center's platform). The chain check proves the link
vendor attestation -> center certificate: the attestation verifies under the
vendor's registered key and attests exactly the records the certificate cites.

The registry's row is the certificate: its files (the ``.dsse.json`` and the page) are
written into a staging folder and moved beside the other certificates only once the
database transaction that holds the row has committed; a rolled-back transaction (a
busy SQLite database, say) discards them, so no signed certificate exists that the
registry does not know and cannot revoke. A bundle is certified once: certifying it
again is refused while its certificate stands (revoke it first).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event, select
from sqlalchemy.orm import Session, SessionTransaction

from harness.center.bundle import RUNS_DIR, SIGNED_MEMBERS, BundleError, open_bundle
from harness.center.center_target import describe_center_target
from harness.center.models import Audit, Bundle, Certificate, Revocation, Vendor
from harness.cert.certify import issue
from harness.cert.evidence import EvidenceError
from harness.cert.profile import load_profile
from harness.cert.verify import VerificationError

EVIDENCE_FOLDER = "bundles"


class CertifyError(Exception):
    """The bundle cannot be certified (one line)."""


@dataclass
class BundleCertificate:
    certificate_id: str
    certificate: Path
    page: Path
    level: str
    row_id: int


def _latest_audit(session: Session, bundle: Bundle) -> Audit:
    audit = session.scalar(select(Audit).where(Audit.bundle_id == bundle.id)
                           .order_by(Audit.id.desc()))
    if audit is None:
        raise CertifyError(f"audit: bundle #{bundle.id} has not been audited; run "
                           "'shipei audit BUNDLE --sample N' first")
    if not audit.passed:
        raise CertifyError(f"audit: the latest audit of bundle #{bundle.id} (seed {audit.seed}) "
                           f"agreed on {audit.agreement:.0%} of its sample; certification is "
                           "blocked")
    return audit


class _Staged:
    """Certificate files waiting for the transaction that records them: moved into
    ``out_dir`` after its commit, deleted when it ends any other way."""

    def __init__(self, staging: Path, out_dir: Path, names: list[str]) -> None:
        self.staging, self.out_dir, self.names = staging, out_dir, names
        self.installed = self.ended = False

    def watch(self, session: Session) -> None:
        event.listen(session, "after_commit", self.install, once=True)
        event.listen(session, "after_transaction_end", self.end)

    def install(self, _session: Session | None = None) -> None:
        for name in self.names:
            os.replace(self.staging / name, self.out_dir / name)
        self.installed = True
        shutil.rmtree(self.staging, ignore_errors=True)

    def end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None or self.ended:
            return  # a savepoint (the outer transaction decides), or already decided
        self.ended = True
        if not self.installed:
            shutil.rmtree(self.staging, ignore_errors=True)


def _already_certified(session: Session, bundle: Bundle) -> None:
    revoked = select(Revocation.certificate_id)
    standing = session.scalar(select(Certificate).where(
        Certificate.bundle_id == bundle.id, Certificate.certificate_id.not_in(revoked)))
    if standing is not None:
        raise CertifyError(f"certify: bundle #{bundle.id} is already certified as "
                           f"{standing.certificate_id} (profile {standing.profile}, scope "
                           f"{standing.scope}, issued {standing.issued_at}); a bundle is "
                           "certified once: revoke that certificate to certify it again")


def find_bundle(session: Session, ref: str) -> Bundle:
    """An accepted bundle by its number (``12`` or ``#12``) or its digest (at least 8 of
    its leading hex digits)."""
    text = ref.strip().removeprefix("#")
    if text.isdigit():
        bundle = session.get(Bundle, int(text))
    elif len(text) >= 8 and all(c in "0123456789abcdef" for c in text.lower()):
        found = session.scalars(select(Bundle).where(Bundle.digest.startswith(text.lower()))
                                .limit(2)).all()
        if len(found) > 1:
            raise CertifyError(f"bundle: {text} names more than one bundle; give more digits")
        bundle = found[0] if found else None
    else:
        raise CertifyError(f"bundle: {ref!r} is neither a bundle number nor 8+ hex digits "
                           "of its digest")
    if bundle is None:
        raise CertifyError(f"bundle: no accepted bundle {ref!r} in this registry")
    return bundle


def evidence_dir(results_dir: Path, digest: str) -> Path:
    """Where a bundle's runs are unpacked so the certificate's records can be verified."""
    return results_dir / EVIDENCE_FOLDER / digest[:16]


def certify_bundle(session: Session, digest: str, profile_name: str, scope: str,
                   key: Ed25519PrivateKey, issuer_name: str, valid_days: int | None,
                   out_dir: Path, results_dir: Path, publish: bool = False) -> BundleCertificate:
    from harness.cert.certify import certify_request

    bundle = session.scalar(select(Bundle).where(Bundle.digest == digest))
    if bundle is None:
        raise CertifyError("intake: this bundle was not accepted at intake")
    audit = _latest_audit(session, bundle)
    _already_certified(session, bundle)
    opened = open_bundle(bundle.data)
    profile = load_profile(profile_name)
    center = describe_center_target(bundle.target)
    root = opened.extract(evidence_dir(results_dir, digest), RUNS_DIR)
    run_dirs = [root / r for r in opened.run_ids()]
    provenance = {
        "source": "vendor", "lab": bundle.vendor.name, "vendor": bundle.vendor.name,
        "vendor_keyid": bundle.vendor.keyid,
        "vendor_attestation": {"name": "attestation.dsse.json", "sha256": digest},
        "audit": {"seed": audit.seed, "sample_size": len(audit.sample),
                  "agreement": audit.agreement, "min_agreement": audit.detail["min_agreement"],
                  "center_run": audit.detail.get("center_run"),
                  "center_platform_id": center["environment"].get("platform_id")},
    }
    days = profile.validity_days if valid_days is None else valid_days
    if not 1 <= days <= profile.validity_days:
        raise CertifyError(f"certify: --valid-days must be between 1 and "
                           f"{profile.validity_days} (profile {profile.name}), not {days}")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".certify-", dir=out_dir))
    request = certify_request(profile, scope, center["label"], center["described"],
                              center["driver_files"], key, issuer_name, days, staging)
    try:
        issued = issue(request, run_dirs, provenance=provenance)
    except EvidenceError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise CertifyError(f"certify: {exc}") from None
    statement = issued.statement
    _Staged(staging, out_dir, [issued.certificate.name, issued.page.name]).watch(session)
    row = store_certificate(session, statement, issued.certificate.read_bytes(),
                            bundle.vendor_id, bundle.id, publish)
    if publish:
        bundle.published = True
    return BundleCertificate(statement["predicate"]["certificate_id"],
                             out_dir / issued.certificate.name, out_dir / issued.page.name,
                             statement["predicate"]["level"]["id"], row.id)


def store_certificate(session: Session, statement: dict[str, Any], envelope: bytes,
                      vendor_id: int | None, bundle_id: int | None, published: bool
                      ) -> Certificate:
    p = statement["predicate"]
    identity = p["target"]["identity"]
    row = Certificate(
        certificate_id=p["certificate_id"], vendor_id=vendor_id, bundle_id=bundle_id,
        target=p["target"]["label"], chip=str(identity.get("device") or ""),
        framework=f"{identity.get('runtime') or ''} {identity.get('runtime_version') or ''}"
        .strip(), level=p["level"]["id"], profile=p["profile"]["name"],
        scope=p["scope"]["name"], issued_at=p["issued_at"], expires_at=p["expires_at"],
        envelope=envelope, statement=statement, published=published)
    session.add(row)
    session.flush()
    return row


def chain_check(session: Session) -> Any:
    """A ``chain_check`` for :func:`harness.cert.verify.verify_certificate`: a
    vendor-lab certificate's attestation is a bundle in this registry, signed by the
    vendor's registered key, attesting the very records the certificate cites."""

    def check(statement: dict[str, Any]) -> list[str]:
        provenance = statement["predicate"].get("provenance") or {}
        if provenance.get("source") != "vendor":
            return ["chain: center-lab evidence, no vendor attestation to check"]
        digest = (provenance.get("vendor_attestation") or {}).get("sha256")
        bundle = session.scalar(select(Bundle).where(Bundle.digest == digest))
        if bundle is None:
            raise VerificationError(f"chain: vendor attestation {str(digest)[:16]} is not in "
                                    "this registry")
        vendor = session.get(Vendor, bundle.vendor_id)
        return bundle_chain_lines(bundle.data, vendor.public_pem, statement)

    return check


def bundle_chain_lines(bundle_data: bytes, vendor_public_pem: str,
                       statement: dict[str, Any]) -> list[str]:
    """The chain check on a bundle's bytes and the vendor's public key (offline)."""
    predicate = statement["predicate"]
    provenance = predicate.get("provenance") or {}
    try:
        opened = open_bundle(bundle_data, members=SIGNED_MEMBERS)  # the rest hashed, not kept
        key = serialization.load_pem_public_key(vendor_public_pem.encode("ascii"))
        attested = opened.verify_signature(key)["predicate"]  # type: ignore[arg-type]
        opened.verify_digests(opened.statement())
    except (BundleError, ValueError) as exc:
        raise VerificationError(f"chain: {exc}") from None
    if opened.digest != (provenance.get("vendor_attestation") or {}).get("sha256"):
        raise VerificationError("chain: the bundle is not the attestation the certificate cites")
    attested_runs = {r["run_id"]: r["records_sha256"] for r in attested.get("runs", [])}
    for cited in predicate["runs"]:
        if attested_runs.get(cited["run_id"]) != cited["records_sha256"]:
            raise VerificationError(f"chain: run {cited['run_id']} in the certificate is not "
                                    "the one the vendor attested")
    if attested.get("vendor") != provenance.get("vendor"):
        raise VerificationError("chain: the certificate names another vendor than the "
                                "attestation")
    return [f"chain: vendor attestation {opened.digest[:16]} signed by {attested['vendor']} "
            f"attests the {len(predicate['runs'])} cited run(s); audit agreement "
            f"{(provenance.get('audit') or {}).get('agreement')}"]

