"""The center's signed revocation list, a DSSE envelope like the certificates.

Payload (``harness/schema/certificate-revocations.schema.json``): ``{"_type":
REVOCATIONS_TYPE, "issuer_keyid", "sequence", "updated_at", "next_update", "revoked":
[{"certificate_id", "reason", "revoked_at"}]}``. Every change re-signs the whole list
and raises ``sequence``, so a verifier can tell an older copy from a newer one, and
sets ``next_update``: after it the list is stale and verification refuses it until the
center publishes a renewed one (``shipei cert revocations --renew``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.cert import dsse
from harness.cert.keys import fingerprint
from harness.cert.schema import SchemaError, loads, validate
from harness.results.record_files import write_json

REVOCATIONS_FILE = "revocations.dsse.json"
REVOCATIONS_PAYLOAD_TYPE = "application/vnd.shipei.revocations+json"
REVOCATIONS_TYPE = "https://shipei.dev/revocations/v1"
REVOCATIONS_SCHEMA = "certificate-revocations.schema.json"
#: how long a list stays current unless renewed (``next_update``)
DEFAULT_LIST_DAYS = 30
#: the longest a list may stay current: a revoked certificate shipped with an old list
#: must stop verifying within a year
MAX_LIST_DAYS = 366
SEEN_FILE = "revocation-sequences.json"


class RevocationError(Exception):
    """A revocation list that cannot be trusted or a revocation that cannot be made."""


def parse_time(stamp: str, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        raise RevocationError(f"{what} {str(stamp)[:40]!r} is not an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def empty_list(keyid: str) -> dict[str, Any]:
    return {"_type": REVOCATIONS_TYPE, "issuer_keyid": keyid, "sequence": 0,
            "updated_at": None, "revoked": []}


def load_revocations(path: Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The list at ``path``, after checking it is signed by ``public_key`` and matches
    its schema."""
    try:
        envelope = dsse.Envelope.parse(path.read_bytes())
    except OSError as exc:
        raise RevocationError(f"cannot read revocation list {path}: {exc.strerror}") from None
    except dsse.EnvelopeError as exc:
        raise RevocationError(f"revocation list {path}: {exc}") from None
    if envelope.payload_type != REVOCATIONS_PAYLOAD_TYPE:
        raise RevocationError(f"{path} is not a revocation list "
                              f"(payloadType {envelope.payload_type!r})")
    keyid = fingerprint(public_key)
    try:
        envelope.verify(public_key, keyid)
    except dsse.EnvelopeError as exc:
        raise RevocationError(f"revocation list {path} is not signed by this key: {exc}") \
            from None
    try:
        data = loads(envelope.body, "payload")
        if isinstance(data, dict) and not data.get("next_update"):
            # without it an old list would never go stale (the schema requires it too;
            # this says what to do about it)
            raise RevocationError(f"revocation list {path} has no next_update: a verifier "
                                  "cannot tell when it is stale; the center renews it with "
                                  "'shipei cert revocations --renew'")
        validate(data, REVOCATIONS_SCHEMA, "payload")
    except SchemaError as exc:
        raise RevocationError(f"revocation list {path}: {exc}") from None
    if data["issuer_keyid"] != keyid:
        raise RevocationError(f"revocation list {path} names another issuer key")
    parse_time(data["next_update"], f"revocation list {path}: next_update")
    return data


def find_revocation(revocations: dict[str, Any], certificate_id: str) -> dict[str, Any] | None:
    return next((e for e in revocations["revoked"] if e["certificate_id"] == certificate_id),
                None)


def revoked_ids(revocations: dict[str, Any] | None) -> set[str]:
    return {e["certificate_id"] for e in (revocations or {}).get("revoked", [])}


def write_revocations(path: Path, data: dict[str, Any], key: Ed25519PrivateKey) -> None:
    body = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    write_json(path, dsse.sign(REVOCATIONS_PAYLOAD_TYPE, body, key, fingerprint(key.public_key())))


def _publish_next(path: Path, data: dict[str, Any], key: Ed25519PrivateKey,
                  days: int) -> dict[str, Any]:
    """Raise the sequence, stamp the update and next update, sign and write."""
    now = datetime.now(UTC).replace(microsecond=0)
    data["sequence"] = int(data.get("sequence", 0)) + 1
    data["updated_at"] = now.isoformat()
    data["next_update"] = (now + timedelta(days=days)).isoformat()
    write_revocations(path, data, key)
    return data


def _current(path: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    return load_revocations(path, public) if path.exists() else empty_list(fingerprint(public))


def revoke(path: Path, key: Ed25519PrivateKey, certificate_id: str, reason: str,
           days: int = DEFAULT_LIST_DAYS) -> dict[str, Any]:
    """Add ``certificate_id`` to the list at ``path`` (created if absent) and re-sign it."""
    if not reason.strip():
        raise RevocationError("a revocation needs a reason (--reason)")
    data = _current(path, key)
    if find_revocation(data, certificate_id):
        raise RevocationError(f"certificate {certificate_id} is already revoked")
    data["revoked"].append({"certificate_id": certificate_id, "reason": reason.strip(),
                            "revoked_at": datetime.now(UTC).isoformat(timespec="seconds")})
    return _publish_next(path, data, key, days)


def check_days(days: int) -> None:
    """A list stays current between one day and :data:`MAX_LIST_DAYS`."""
    if not 1 <= days <= MAX_LIST_DAYS:
        raise RevocationError(f"a revocation list stays current between 1 and {MAX_LIST_DAYS} "
                              f"days, not {days}")


def renew(path: Path, key: Ed25519PrivateKey, days: int = DEFAULT_LIST_DAYS) -> dict[str, Any]:
    """Re-sign the list at ``path`` (created empty if absent) with a new ``next_update``."""
    check_days(days)
    return _publish_next(path, _current(path, key), key, days)


def ensure_list(path: Path, key: Ed25519PrivateKey) -> bool:
    """Write an empty signed list at ``path`` unless one is there; True if written."""
    if path.exists():
        return False
    renew(path, key)
    return True


def check_fresh(data: dict[str, Any], at: datetime, seen: int | None) -> None:
    """Refuse a list older than one already seen (a rollback) or past its next update."""
    if seen is not None and data["sequence"] < seen:
        raise RevocationError(f"the list is #{data['sequence']}, older than #{seen} already "
                              "seen (a rolled-back copy); fetch the center's current list")
    if at > parse_time(data["next_update"], "next_update"):
        raise RevocationError(f"list #{data['sequence']} is stale: a newer one was due on "
                              f"{data['next_update']}; fetch the center's current list")


def newer_list(current: dict[str, Any] | None, incoming: dict[str, Any] | None
               ) -> dict[str, Any] | None:
    """Of two lists of one center, the one to keep: the higher sequence, which must revoke
    everything the other does (a list that would un-revoke is refused)."""
    if current is None or incoming is None:
        return current or incoming
    if incoming["sequence"] < current["sequence"]:
        unknown = sorted(revoked_ids(incoming) - revoked_ids(current))
        if unknown:  # two masters: an older list that knows a revocation the newer does not
            raise RevocationError(f"revocation list #{incoming['sequence']} revokes "
                                  f"{unknown[0]}, which the newer list "
                                  f"#{current['sequence']} does not: the lists have forked; "
                                  "revoke it again from the master list")
        return current
    dropped = sorted(revoked_ids(current) - revoked_ids(incoming))
    if dropped:
        raise RevocationError(f"revocation list #{incoming['sequence']} does not revoke "
                              f"{dropped[0]}, which list #{current['sequence']} does; "
                              "a revocation is never lifted")
    if incoming["sequence"] == current["sequence"] and incoming != current:
        raise RevocationError(f"two different revocation lists carry sequence "
                              f"#{incoming['sequence']}")
    return incoming


@dataclass(frozen=True)
class SeenSequences:
    """The highest list sequence a verifier has seen per center key, kept in a small
    JSON file so a rolled-back copy of the list is noticed on the next verification."""

    path: Path

    @staticmethod
    def default_path() -> Path:
        """``$SHIPEI_STATE_DIR``, else ``$XDG_STATE_HOME/shipei`` (``~/.local/state``)."""
        explicit = os.environ.get("SHIPEI_STATE_DIR")
        if explicit:
            return Path(explicit) / SEEN_FILE
        base = os.environ.get("XDG_STATE_HOME")
        root = Path(base) if base else Path.home() / ".local" / "state"
        return root / "shipei" / SEEN_FILE

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int)} \
            if isinstance(data, dict) else {}

    def get(self, keyid: str) -> int | None:
        return self._read().get(keyid)

    def record(self, keyid: str, sequence: int) -> None:
        """Remember ``sequence`` if it is the highest yet; a state folder that cannot be
        written only loses the memory, never the verification."""
        seen = self._read()
        if seen.get(keyid, -1) >= sequence:
            return
        seen[keyid] = sequence
        with contextlib.suppress(OSError):
            write_json(self.path, seen)
