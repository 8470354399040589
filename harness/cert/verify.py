"""Offline verification of a certificate: signature, validity period, revocation and,
given the records, their hashes and the level recomputed from them.

Every check either adds an ``ok`` line or raises :class:`VerificationError` with a
one-line reason that starts with what failed (``signature:``, ``expired:``,
``revoked:``, ``records:``, ``level:``, ``files:``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from harness.cert import dsse
from harness.cert.evaluate import EvaluationError, evaluate
from harness.cert.evidence import EvidenceError, load_evidence
from harness.cert.files import changed_files, manifest_digest, sha256_file
from harness.cert.keys import display_fingerprint, fingerprint
from harness.cert.predicate import (
    PredicateError,
    check_predicate,
    embedded_profile,
    evaluator_version,
    parse_time,
)
from harness.cert.profile import (
    CUSTOM,
    PACKAGED,
    ProfileError,
    level_label,
    packaged_names,
    profile_origin,
    released_profiles,
)
from harness.cert.provenance import describe, from_vendor_lab
from harness.cert.revocation import (
    REVOCATIONS_FILE,
    RevocationError,
    SeenSequences,
    check_fresh,
    find_revocation,
    load_revocations,
)
from harness.cert.statement import PAYLOAD_TYPE, StatementError, decode
from harness.results.record_files import RECORDS_FILE, RUN_FILE, find_run


class VerificationError(Exception):
    """The certificate is not valid; the message is the one-line reason."""


@dataclass
class VerifyOptions:
    public_key: Ed25519PublicKey
    records_dir: Path | None = None
    revocations: Path | None = None
    check_files: bool = False
    at: datetime | None = None
    #: False only when the user explicitly verifies without a revocation list
    check_revocation: bool = True
    #: where the highest list sequence seen per key is remembered (rollback detection)
    seen: SeenSequences | None = None
    #: refuse a revocation list older than this sequence
    min_sequence: int | None = None


def open_certificate(raw: bytes, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The statement of a certificate whose signature verifies under ``public_key``."""
    try:
        envelope = dsse.Envelope.parse(raw)
        if envelope.payload_type != PAYLOAD_TYPE:
            raise dsse.EnvelopeError(f"payloadType is {envelope.payload_type!r}, "
                                     f"not {PAYLOAD_TYPE}")
        keyid = fingerprint(public_key)
        envelope.verify(public_key, keyid)
        statement = decode(envelope.body)
    except (dsse.EnvelopeError, StatementError) as exc:
        raise VerificationError(f"signature: {exc}") from None
    try:
        check_predicate(statement)
    except PredicateError as exc:
        raise VerificationError(f"predicate: {exc}") from None
    if statement["predicate"]["issuer"]["keyid"] != keyid:
        raise VerificationError("signature: the certificate names another issuer key")
    return statement


def check_validity(predicate: dict[str, Any], at: datetime) -> str:
    issued, expires = parse_time(predicate["issued_at"]), parse_time(predicate["expires_at"])
    if at < issued:
        raise VerificationError(f"not yet valid: issued {predicate['issued_at']}, "
                                f"checked at {at.isoformat(timespec='seconds')}")
    if at > expires:
        raise VerificationError(f"expired: the certificate expired on {predicate['expires_at']}")
    return f"validity: {predicate['issued_at']} to {predicate['expires_at']}"


def revocation_list_for(certificate: Path) -> Path | None:
    """The list beside the certificate (a certificates folder) or one folder up (a
    published registry keeps certificates in ``certificates/``)."""
    for folder in (certificate.parent, certificate.parent.parent):
        if (folder / REVOCATIONS_FILE).is_file():
            return folder / REVOCATIONS_FILE
    return None


def check_revocation(predicate: dict[str, Any], certificate: Path, options: VerifyOptions
                     ) -> str:
    """The certificate is not on a current list signed by the center. Without a list the
    check fails (closed) unless ``options.check_revocation`` is False."""
    if not options.check_revocation:
        return "revocation: NOT CHECKED (--no-revocation-check)"
    path = options.revocations or revocation_list_for(certificate.resolve())
    if path is None:
        raise VerificationError(f"revocation: no revocation list ({REVOCATIONS_FILE} beside "
                                "the certificate or one folder up); pass --revocations FILE, "
                                "or --no-revocation-check to verify without one")
    if not path.exists():
        raise VerificationError(f"revocation: list {path} does not exist")
    keyid = fingerprint(options.public_key)
    seen = [s for s in (options.min_sequence, options.seen.get(keyid) if options.seen else None)
            if s is not None]
    try:
        revocations = load_revocations(path, options.public_key)
        check_fresh(revocations, options.at or datetime.now(UTC), max(seen, default=None))
    except RevocationError as exc:
        raise VerificationError(f"revocation: {exc}") from None
    if options.seen is not None:
        options.seen.record(keyid, revocations["sequence"])
    entry = find_revocation(revocations, predicate["certificate_id"])
    if entry:
        raise VerificationError(f"revoked: certificate {predicate['certificate_id']} was "
                                f"revoked on {entry['revoked_at']}: {entry['reason']}")
    due = revocations.get("next_update")
    return (f"revocation: not revoked (list #{revocations['sequence']} of "
            f"{revocations.get('updated_at') or 'never'}"
            + (f", next update due {due})" if due else ")"))


def check_profile(predicate: dict[str, Any]) -> str:
    """A certificate naming a packaged profile embeds exactly a released version of it;
    any other profile is stated as custom."""
    profile = predicate["profile"]
    name, version, digest = profile["name"], profile["version"], profile["sha256"]
    origin = profile_origin(name, version, digest)
    claimed = profile.get("origin")
    if origin == CUSTOM and name in packaged_names():
        released = released_profiles().get(name, {})
        why = ("this shipei knows v" + ", v".join(released)) if version not in released \
            else "its sha256 differs from the released one"
        raise VerificationError(f"profile: the certificate's profile {name!r} v{version} is "
                                f"not the packaged profile of that name ({why}): a custom "
                                "profile posing as a packaged one")
    if claimed is not None and claimed != origin:
        raise VerificationError(f"profile: the certificate says its profile is {claimed}; "
                                f"it is {origin}")
    if origin == PACKAGED:
        return f"profile: packaged {name} v{version} (sha256 matches the released profile)"
    return (f"profile: CUSTOM profile {name!r} v{version}, not a packaged Shipei profile; "
            f"its embedded rules apply (sha256 {digest[:16]}...)")


def _run_dir(records_dir: Path, run_id: str) -> Path:
    try:
        return find_run(records_dir, run_id)
    except FileNotFoundError:
        if records_dir.name == run_id and (records_dir / RECORDS_FILE).exists():
            return records_dir
        raise VerificationError(f"records: run {run_id} not found under {records_dir}") \
            from None


def check_records(predicate: dict[str, Any], records_dir: Path) -> list[str]:
    lines = []
    label = predicate["target"]["label"]
    records: list[dict[str, Any]] = []
    for cited in predicate["runs"]:
        run_dir = _run_dir(records_dir, cited["run_id"])
        for name, key in ((RECORDS_FILE, "records_sha256"), (RUN_FILE, "run_json_sha256")):
            path = run_dir / name
            if not path.is_file():
                raise VerificationError(f"records: run {cited['run_id']} has no {name}")
            if sha256_file(path) != cited[key]:
                raise VerificationError(f"records: {name} of run {cited['run_id']} does not "
                                        "match the certificate (edited or replaced)")
        try:
            records += load_evidence(run_dir, label).records
        except EvidenceError as exc:
            raise VerificationError(f"records: {exc}") from None
        lines.append(f"records: run {cited['run_id']} matches (sha256)")
    try:
        profile = embedded_profile(predicate)
        evaluation = evaluate(profile, predicate["scope"]["name"], records,
                              evaluator_version(predicate))
    except (PredicateError, ProfileError, EvaluationError) as exc:
        raise VerificationError(f"level: cannot recompute ({exc})") from None
    claimed = predicate["level"]["id"]
    if evaluation.level != claimed:
        raise VerificationError(f"level: recomputed from the records it is "
                                f"{level_label(evaluation.level)}; the certificate claims "
                                f"{level_label(claimed)}")
    recomputed = [r.to_dict() for r in evaluation.criteria]
    if len(recomputed) != len(predicate["criteria"]):
        raise VerificationError(f"level: the certificate lists {len(predicate['criteria'])} "
                                f"criteria, the profile has {len(recomputed)}")
    for mine, theirs in zip(recomputed, predicate["criteria"], strict=True):
        if mine != theirs:
            raise VerificationError(f"level: criterion {mine['id']} recomputes to "
                                    f"{mine['passed']}/{mine['measured_cases']}, the "
                                    f"certificate says {theirs.get('passed')}/"
                                    f"{theirs.get('measured_cases')}")
    lines.append(f"level: recomputed from the records: {level_label(evaluation.level)} "
                 f"(evaluator {evaluation.evaluator_version})")
    return lines


def check_files(statement: dict[str, Any]) -> list[str]:
    files = statement["predicate"]["files"]
    labels = {"driver": "driver file", "suites": "suite file", "models": "model file"}
    for group, cited in files.items():
        problems = changed_files([c for c in cited if "path" in c])  # not generated ones
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise VerificationError(f"files: {labels.get(group, group)} {problems[0]}{more}")
    driver_subject = statement["subject"][0]["digest"]["sha256"]
    if manifest_digest(files["driver"]) != driver_subject:
        raise VerificationError("files: the driver files do not match the driver subject")
    on_disk = [m for m in files["models"] if "path" in m]
    generated = len(files["models"]) - len(on_disk)
    return [f"files: {len(files['driver'])} driver, {len(files['suites'])} suite and "
            f"{len(on_disk)} model file(s) match this installation"
            + (f" ({generated} generated model(s) are cited by recorded sha256)"
               if generated else "")]


#: an extra check of a verified statement (e.g. a vendor lab's chain of custody): it
#: returns ``ok`` lines or raises :class:`VerificationError`
ChainCheck = Callable[[dict[str, Any]], list[str]]


def check_provenance_lines(predicate: dict[str, Any], chain_check: ChainCheck | None,
                           statement: dict[str, Any]) -> list[str]:
    provenance = predicate.get("provenance")
    where = describe(provenance)
    if chain_check is not None:
        return [f"provenance: evidence from the {where}", *chain_check(statement)]
    if from_vendor_lab(provenance):
        return [f"provenance: evidence from the {where}; its chain of custody was not "
                "checked here"]
    return [f"provenance: evidence from the {where}"]


def verify_certificate(path: Path, options: VerifyOptions,
                       chain_check: ChainCheck | None = None) -> list[str]:
    """Run every check; return the ``ok`` lines or raise :class:`VerificationError`.

    ``chain_check``, when given, runs on the verified statement after the signature,
    validity and revocation checks (a center service checks there how a vendor lab's
    evidence reached it)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"cannot read {path}: {exc.strerror}") from None
    statement = open_certificate(raw, options.public_key)
    predicate = statement["predicate"]
    lines = [f"signature: valid, key {display_fingerprint(fingerprint(options.public_key))}"]
    lines.append(check_validity(predicate, options.at or datetime.now(UTC)))
    lines.append(check_profile(predicate))
    lines.append(check_revocation(predicate, path, options))
    lines += check_provenance_lines(predicate, chain_check, statement)
    if options.records_dir is not None:
        lines += check_records(predicate, options.records_dir)
    if options.check_files:
        lines += check_files(statement)
    lines.append(f"certificate {predicate['certificate_id']} is valid: "
                 f"{level_label(predicate['level']['id'])} "
                 f"({predicate['target']['label']}, profile {predicate['profile']['name']} "
                 f"v{predicate['profile']['version']}, scope {predicate['scope']['name']})")
    return lines
