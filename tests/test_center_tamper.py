"""Every signed or hashed artefact of the center survives a flipped byte: the revocation
list (as a file and as the registry serves it), the vendor's bundle attestation, and each
member the bundle's manifest lists (``tests/test_cert_tamper.py`` does the same for
certificates).

A flip is refused by the check that owns the artefact: a revocation list does not load
(so verification fails closed), a flipped attestation stops intake at the archive or
signature check, a flipped member stops it at the digest check naming that member. The
bundle is a real vendor run; every member listed in its manifest is covered, whatever
the manifest lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.center_support import Center, build, intake, make_center, members, repack, shared_run


def _flips(data: bytes, every: int = 1, extra: tuple[int, ...] = ()) -> list[tuple[int, int]]:
    """(index, bit) pairs: the lowest bit of every ``every``-th byte and of each index in
    ``extra``, and the highest bit of every 97th byte too."""
    indices = sorted({*range(0, len(data), every), len(data) - 1,
                      *(i for i in extra if 0 <= i < len(data))})
    return [(i, bit) for i in indices for bit in ((0x01, 0x80) if i % 97 == 0 else (0x01,))]


def _flipped(data: bytes, index: int, bit: int) -> bytes:
    out = bytearray(data)
    out[index] ^= bit
    return bytes(out)


# ---------------------------------------------------------------- revocation lists

def _assert_every_flip_refused(envelope: bytes, public_key: Any, where: Path) -> None:
    from harness.cert.revocation import RevocationError, load_revocations

    where.write_bytes(envelope)
    assert load_revocations(where, public_key)["revoked"]
    for index, bit in _flips(envelope):
        where.write_bytes(_flipped(envelope, index, bit))
        with pytest.raises(RevocationError):
            load_revocations(where, public_key)
            pytest.fail(f"byte {index} (bit {bit:#x}) flipped: the list still loads")


def test_flipping_any_byte_of_the_revocation_list_file_is_refused(tmp_path: Path) -> None:
    from harness.cert.keys import init_keys, load_private_key
    from harness.cert.revocation import revoke

    pair, _ = init_keys(tmp_path / "keys", "T")
    key = load_private_key(pair.private)
    listed = tmp_path / "revocations.dsse.json"
    revoke(listed, key, "SP-20260101-00000001", "recalled")
    _assert_every_flip_refused(listed.read_bytes(), key.public_key(), tmp_path / "probe.json")


def test_flipping_any_byte_of_the_served_revocation_list_is_refused(tmp_path: Path) -> None:
    """The list the registry signs in its database (what /revocations.dsse.json serves
    and ``db revoke`` writes beside the certificates)."""
    from harness.center import revocations
    from harness.center.store import Store, upgrade
    from harness.cert.keys import init_keys, load_private_key

    pair, _ = init_keys(tmp_path / "keys", "T")
    key = load_private_key(pair.private)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    store = Store(url)
    with store.session() as session:
        envelope = revocations.revoke(session, key, "SP-20260101-00000002", "recalled",
                                      known={"SP-20260101-00000002"}).envelope
    store.close()
    _assert_every_flip_refused(envelope, key.public_key(), tmp_path / "probe.json")


def test_a_flipped_revocation_list_fails_verification_closed(tmp_path: Path) -> None:
    """Beside a certificate, a flipped list makes the certificate INVALID (revocation:),
    never 'not revoked'."""
    from harness.cert.revocation import REVOCATIONS_FILE, renew
    from harness.cert.verify import VerificationError, VerifyOptions, verify_certificate
    from tests.cert_support import Center as CertCenter

    center = CertCenter(tmp_path)
    certificate = center.write(center.statement())
    listed = center.certs / REVOCATIONS_FILE
    renew(listed, center.key)
    assert verify_certificate(certificate, VerifyOptions(center.public))
    original = listed.read_bytes()
    for index, bit in _flips(original, every=37):
        listed.write_bytes(_flipped(original, index, bit))
        with pytest.raises(VerificationError) as info:
            verify_certificate(certificate, VerifyOptions(center.public))
        assert str(info.value).startswith("revocation:"), (index, str(info.value))


# ---------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Center, dict[str, bytes]]:
    """A center and the members of an honest bundle it accepted (so the flipped copies
    the tests intake are refused for the flip, not for being unknown or incomplete)."""
    center = make_center(tmp_path_factory.mktemp("tamper-center"))
    data = build([shared_run(tmp_path_factory)], center.vendor_key)
    accepted = intake(center, data)
    assert accepted.accepted, accepted.refusal()
    return center, members(data)


def _refused(center: Center, files: dict[str, bytes]) -> Any:
    result = intake(center, repack(files))
    assert not result.accepted
    return result.failed


def test_flipping_any_byte_of_the_bundle_attestation_is_refused_at_its_signature(
        bundle: tuple[Center, dict[str, bytes]]) -> None:
    """In memory, every byte of attestation.dsse.json through the checks intake runs on it
    (the envelope parse of open_bundle, then the signature under the vendor's key); and a
    sample of flips, the signature's and keyid's bytes among them, through intake itself,
    which must stop at the archive or signature check."""
    from cryptography.hazmat.primitives import serialization

    from harness.center.bundle import ATTESTATION, BundleError, OpenedBundle
    from harness.cert import dsse
    from harness.cert.keys import load_private_key

    center, files = bundle
    original = files[ATTESTATION]
    public = load_private_key(center.vendor_key).public_key()
    assert serialization.load_pem_public_key(public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for index, bit in _flips(original):
        flipped = _flipped(original, index, bit)
        with pytest.raises((BundleError, dsse.EnvelopeError)):
            envelope = dsse.Envelope.parse(flipped)
            OpenedBundle(b"", {ATTESTATION: flipped}, envelope).verify_signature(public)
            pytest.fail(f"byte {index} (bit {bit:#x}) of the attestation flipped: it verifies")

    parsed = json.loads(original)
    signature = parsed["signatures"][0]
    inside = [original.index(signature["sig"].encode()) + k for k in (0, 7, 30, 60, 85)]
    inside += [original.index(signature["keyid"].encode()) + k for k in (0, 33, 63)]
    inside += [original.index(parsed["payload"].encode()) + k for k in (0, 500, 2000)]
    for index, bit in _flips(original, every=251, extra=tuple(inside)):
        failed = _refused(center, {**files, ATTESTATION: _flipped(original, index, bit)})
        assert failed.id in ("archive", "signature"), (index, failed.id, failed.detail)


def _member_flips(data: bytes) -> list[tuple[int, int]]:
    """The first, last and six bytes spread between, lowest bit."""
    return [(i, 0x01) for i in sorted({0, len(data) - 1,
                                       *(len(data) * k // 7 for k in range(1, 7))})]


def test_every_manifest_member_is_checked_by_its_digest(
        bundle: tuple[Center, dict[str, bytes]]) -> None:
    """Each member the manifest lists (records, run.json, environment.json, whatever else
    it lists), and the manifest itself: a flipped byte stops intake at the digest check,
    which names the member."""
    from harness.center.bundle import MANIFEST

    center, files = bundle
    listed = [entry["path"] for entry in json.loads(files[MANIFEST])["files"]]
    assert "environment.json" in listed and any(p.endswith("records.jsonl") for p in listed)
    for name in [*listed, MANIFEST]:
        for index, bit in _member_flips(files[name]):
            failed = _refused(center, {**files, name: _flipped(files[name], index, bit)})
            assert failed.id == "digest", (name, index, failed.id, failed.detail)
            assert name in failed.detail, (name, failed.detail)


def test_the_chain_check_refuses_a_flipped_attestation_or_member(
        bundle: tuple[Center, dict[str, bytes]], tmp_path: Path) -> None:
    """``cert verify --bundle`` (the vendor-attestation chain, offline) refuses a bundle
    whose attestation or any listed member was flipped."""
    from harness.center.bundle import ATTESTATION, MANIFEST, open_bundle
    from harness.center.certify_bundle import bundle_chain_lines
    from harness.cert.keys import public_pem
    from harness.cert.verify import VerificationError

    center, files = bundle
    data = repack(files)
    attested = open_bundle(data).statement()["predicate"]
    statement = {"predicate": {
        "runs": [{"run_id": r["run_id"], "records_sha256": r["records_sha256"]}
                 for r in attested["runs"]],
        "provenance": {"vendor": attested["vendor"],
                       "vendor_attestation": {"sha256": open_bundle(data).digest}}}}
    from harness.cert.keys import load_private_key

    pem = public_pem(load_private_key(center.vendor_key).public_key())
    assert bundle_chain_lines(data, pem, statement)
    listed = [entry["path"] for entry in json.loads(files[MANIFEST])["files"]]
    for name in [ATTESTATION, MANIFEST, *listed]:
        for index, bit in _member_flips(files[name])[::3]:
            with pytest.raises(VerificationError, match="^chain: "):
                bundle_chain_lines(repack({**files, name: _flipped(files[name], index, bit)}),
                                   pem, statement)
