"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1.0).

The signature covers ``PAE(payloadType, payload)``::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``LEN`` is the byte length as ASCII decimal and ``SP`` one space (0x20).
The envelope is ``{"payload": b64(body), "payloadType": type, "signatures":
[{"keyid": ..., "sig": b64(signature)}]}`` with standard base64. Parsing here is
strict: unknown fields, non-canonical base64 and duplicate keys are refused, so
no change to an envelope's bytes goes unnoticed.

Every Shipei envelope (certificate, evidence bundle, revocation list) is signed by
exactly one key, so an envelope holds exactly one signature entry: a second entry
(a bogus "co-signature" nobody checks) is refused rather than ignored. A JSON
payload (a ``...+json`` payload type) is parsed here as strictly as the envelope:
duplicate keys, ``NaN``, ``Infinity`` and numbers that overflow to infinity are
refused, so every reader of the signed payload sees the one meaning the signer
signed.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ENVELOPE_FIELDS = {"payload", "payloadType", "signatures"}
SIGNATURE_FIELDS = {"keyid", "sig"}


class EnvelopeError(Exception):
    """The envelope is malformed or its signature does not verify (one-line message)."""


def pae(payload_type: str, body: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: Any, what: str) -> bytes:
    """Standard base64 that must re-encode to exactly the same text."""
    if not isinstance(text, str):
        raise EnvelopeError(f"{what} is not a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not valid base64") from None
    if b64encode(data) != text:
        raise EnvelopeError(f"{what} is not canonical base64")
    return data


def sign(payload_type: str, body: bytes, key: Ed25519PrivateKey, keyid: str) -> dict[str, Any]:
    signature = key.sign(pae(payload_type, body))
    return {"payload": b64encode(body), "payloadType": payload_type,
            "signatures": [{"keyid": keyid, "sig": b64encode(signature)}]}


class _StrictJSONError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(k for k in keys if keys.count(k) > 1)
        raise _StrictJSONError(f"repeats the key {repeated!r}")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise _StrictJSONError(f"holds {name}, which JSON does not allow")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _StrictJSONError(f"holds the number {text[:20]}, too large for a float")
    return value


def strict_json(raw: bytes, what: str) -> Any:
    """``raw`` as UTF-8 JSON, refusing duplicate keys, NaN and infinities (one-line
    :class:`EnvelopeError` naming ``what``)."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constant, parse_float=_finite)
    except UnicodeDecodeError:
        raise EnvelopeError(f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise EnvelopeError(f"{what} is not valid JSON ({exc.msg} at line "
                            f"{exc.lineno} column {exc.colno})") from None
    except _StrictJSONError as exc:
        raise EnvelopeError(f"{what} {exc}") from None
    except RecursionError:
        raise EnvelopeError(f"{what} is nested too deeply") from None


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    body: bytes
    signatures: list[tuple[str, bytes]]  # (keyid, signature)

    @classmethod
    def parse(cls, raw: bytes) -> Envelope:
        data = strict_json(raw, "the envelope")
        if not isinstance(data, dict) or set(data) != ENVELOPE_FIELDS:
            raise EnvelopeError("not a DSSE envelope: expected exactly the fields "
                                f"{sorted(ENVELOPE_FIELDS)}")
        if not isinstance(data["payloadType"], str):
            raise EnvelopeError("payloadType is not a string")
        body = b64decode_strict(data["payload"], "payload")
        sigs = data["signatures"]
        if not isinstance(sigs, list) or not sigs:
            raise EnvelopeError("the envelope has no signatures")
        if len(sigs) != 1:
            raise EnvelopeError(f"the envelope has {len(sigs)} signature entries; a Shipei "
                                "envelope is signed by exactly one key")
        signatures = []
        for entry in sigs:
            if not isinstance(entry, dict) or set(entry) != SIGNATURE_FIELDS \
                    or not isinstance(entry["keyid"], str):
                raise EnvelopeError("a signature entry must have exactly keyid and sig")
            signatures.append((entry["keyid"], b64decode_strict(entry["sig"], "signature")))
        if data["payloadType"].endswith("json"):
            strict_json(body, "the payload")
        return cls(data["payloadType"], body, signatures)

    def verify(self, public_key: Ed25519PublicKey, keyid: str) -> None:
        """Raise unless a signature with ``keyid`` verifies under ``public_key``."""
        mine = [sig for kid, sig in self.signatures if kid == keyid]
        if not mine:
            others = ", ".join(kid[:16] for kid, _ in self.signatures)
            raise EnvelopeError(f"no signature by key {keyid[:16]}... (signed by {others}); "
                                "wrong public key?")
        for signature in mine:
            try:
                public_key.verify(signature, pae(self.payload_type, self.body))
                return
            except InvalidSignature:
                continue
        raise EnvelopeError("signature does not verify: the certificate was altered "
                            "after signing")
