"""The center's signed revocation list, a DSSE envelope like the certificates.

Payload: ``{"_type": REVOCATIONS_TYPE, "issuer_keyid", "sequence", "updated_at",
"revoked": [{"certificate_id", "reason", "revoked_at"}]}``. Each revocation
re-signs the whole list and raises ``sequence``, so a verifier can tell an older
copy from a newer one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.cert import dsse
from harness.cert.keys import fingerprint
from harness.records import now_iso, write_json

REVOCATIONS_FILE = "revocations.dsse.json"
REVOCATIONS_PAYLOAD_TYPE = "application/vnd.shipei.revocations+json"
REVOCATIONS_TYPE = "https://shipei.dev/revocations/v1"


class RevocationError(Exception):
    """A revocation list that cannot be trusted or a revocation that cannot be made."""


def empty_list(keyid: str) -> dict[str, Any]:
    return {"_type": REVOCATIONS_TYPE, "issuer_keyid": keyid, "sequence": 0,
            "updated_at": None, "revoked": []}


def load_revocations(path: Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The list at ``path``, after checking it is signed by ``public_key``."""
    try:
        envelope = dsse.Envelope.parse(path.read_bytes())
    except OSError as exc:
        raise RevocationError(f"cannot read revocation list {path}: {exc.strerror}") from None
    except dsse.EnvelopeError as exc:
        raise RevocationError(f"revocation list {path}: {exc}") from None
    if envelope.payload_type != REVOCATIONS_PAYLOAD_TYPE:
        raise RevocationError(f"{path} is not a revocation list "
                              f"(payloadType {envelope.payload_type!r})")
    try:
        envelope.verify(public_key, fingerprint(public_key))
    except dsse.EnvelopeError as exc:
        raise RevocationError(f"revocation list {path} is not signed by this key: {exc}") \
            from None
    try:
        data = json.loads(envelope.body)
    except json.JSONDecodeError:
        raise RevocationError(f"revocation list {path}: payload is not JSON") from None
    if not isinstance(data, dict) or data.get("_type") != REVOCATIONS_TYPE \
            or not isinstance(data.get("revoked"), list):
        raise RevocationError(f"revocation list {path}: unexpected payload")
    return data


def find_revocation(revocations: dict[str, Any], certificate_id: str) -> dict[str, Any] | None:
    return next((e for e in revocations["revoked"] if e.get("certificate_id") == certificate_id),
                None)


def write_revocations(path: Path, data: dict[str, Any], key: Ed25519PrivateKey) -> None:
    body = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    write_json(path, dsse.sign(REVOCATIONS_PAYLOAD_TYPE, body, key, fingerprint(key.public_key())))


def revoke(path: Path, key: Ed25519PrivateKey, certificate_id: str, reason: str
           ) -> dict[str, Any]:
    """Add ``certificate_id`` to the list at ``path`` (created if absent) and re-sign it."""
    if not reason.strip():
        raise RevocationError("a revocation needs a reason (--reason)")
    public = key.public_key()
    data = load_revocations(path, public) if path.exists() else empty_list(fingerprint(public))
    if find_revocation(data, certificate_id):
        raise RevocationError(f"certificate {certificate_id} is already revoked")
    entry = {"certificate_id": certificate_id, "reason": reason.strip(),
             "revoked_at": now_iso()}
    data["revoked"].append(entry)
    data["sequence"] = int(data.get("sequence", 0)) + 1
    data["updated_at"] = entry["revoked_at"]
    write_revocations(path, data, key)
    return data
