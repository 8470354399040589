"""The center's door: a bundle archive is read as a stream with bounded memory, and
nothing that is not signed rides along. Decompression bombs (one huge member, or many
members over the unpacked limit) are refused without inflating them (peak memory
measured with tracemalloc); zero padding or a second gzip member after the gzip stream,
bytes after the tar's end, gzip header fields and extra pax headers are refused with the
check named (``archive:``); an envelope with a second signature entry and a payload with
duplicate keys, NaN or Infinity are refused (``signature:``)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.center.bundle import (
    ATTESTATION,
    MANIFEST,
    PAYLOAD_TYPE,
    SIGNED_MEMBERS,
    BundleError,
    _tar_bytes,
    open_bundle,
    read_archive,
    stream_archive,
)
from harness.cert import dsse
from harness.cert.files import canonical_json, sha256_bytes
from harness.cert.keys import fingerprint

MiB = 1 << 20
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info.tobuf(tarfile.PAX_FORMAT)


def _zero_members(sizes: dict[str, int]) -> bytes:
    """A gzip-compressed tar of members full of zeros, made piece by piece (the test
    itself never holds the inflated bytes)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(b"")]
    piece = bytes(MiB)
    for name, size in sizes.items():
        out.append(packer.compress(_header(name, size)))
        for start in range(0, size, MiB):
            out.append(packer.compress(piece[:min(MiB, size - start)]))
        out.append(packer.compress(bytes(-size % tarfile.BLOCKSIZE)))
    out.append(packer.compress(bytes(tarfile.RECORDSIZE)))
    return b"".join(out) + packer.flush()


def _peak(read: Callable[[], object]) -> tuple[int, str]:
    """The peak memory traced while ``read`` is refused, and its refusal."""
    tracemalloc.start()
    try:
        with pytest.raises(BundleError) as refused:
            read()
        return tracemalloc.get_traced_memory()[1], str(refused.value)
    finally:
        tracemalloc.stop()


def test_one_huge_member_is_refused_before_it_is_inflated() -> None:
    bomb = _zero_members({"runs/r/records.jsonl": 300 * MiB})
    assert len(bomb) < MiB  # a small upload that would inflate 300 times
    peak, message = _peak(lambda: read_archive(bomb))
    assert message.startswith("archive: member 'runs/r/records.jsonl' is 314572800 bytes, "
                              "over the limit")
    assert peak < 4 * MiB, peak


def test_many_members_over_the_unpacked_limit_are_refused_as_they_stream() -> None:
    bomb = _zero_members({f"runs/r/part-{n:02d}": MiB for n in range(40)})
    peak, message = _peak(lambda: read_archive(bomb, max_bytes=MiB))
    assert message == ("archive: the bundle unpacks to more than its limit of "
                       f"{4 * MiB} bytes")
    assert peak < 12 * MiB, peak  # the 4 MiB kept so far, not the 40 MiB


def test_members_not_asked_for_are_hashed_not_kept() -> None:
    data = _zero_members({"a.json": 10, "runs/r/big": 20 * MiB})
    tracemalloc.start()
    try:
        archive = stream_archive(data, keep={"a.json"}.__contains__)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert set(archive.files) == {"a.json"} and set(archive.digests) == {"a.json", "runs/r/big"}
    assert archive.digests["a.json"] == sha256_bytes(bytes(10))
    assert peak < 4 * MiB, peak


FILES = {"a.json": b'{"a": 1}\n', "runs/r/records.jsonl": b'{"case": "x"}\n'}


def test_a_well_formed_archive_reads_back() -> None:
    assert read_archive(_tar_bytes(FILES)) == FILES


def _gzip(raw: bytes, **header: object) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, **header) as packer:  # type: ignore[arg-type]
        packer.write(raw)
    return out.getvalue()


def _tar(files: dict[str, bytes], pax: dict[str, str] | None = None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = dict(pax or {})
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _without_end_marker(raw: bytes) -> bytes:
    """The members' blocks only: the zero blocks after the last one cut off."""
    used = len(raw.rstrip(b"\0"))
    return raw[:-(-used // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE]


@pytest.mark.parametrize(("archive", "message"), [
    pytest.param(lambda: _tar_bytes(FILES) + bytes(64),
                 "archive: data after the end of the gzip stream (not signed)", id="gzip-padding"),
    pytest.param(lambda: _tar_bytes(FILES) + gzip.compress(b"unsigned note"),
                 "archive: a second gzip member follows the first (not signed)",
                 id="second-gzip-member"),
    pytest.param(lambda: _gzip(_tar(FILES) + b"unsigned text after the end"),
                 "archive: data after the end of the tar archive (not signed)",
                 id="after-tar-end"),
    pytest.param(lambda: _gzip(_tar(FILES)[:-tarfile.RECORDSIZE + 512]
                               + b"x" * (tarfile.RECORDSIZE - 512)),
                 "archive: data after the end of the tar archive (not signed)",
                 id="in-tar-padding"),
    pytest.param(lambda: _gzip(_tar(FILES), filename="note.txt"),
                 "archive: the gzip header carries a name, comment or extra field (not signed)",
                 id="gzip-name"),
    pytest.param(lambda: _gzip(_tar(FILES, {"comment": "unsigned"})),
                 "archive: member 'a.json' carries extra pax headers (comment; not signed)",
                 id="pax-comment"),
    pytest.param(lambda: _tar_bytes(FILES)[:-12],
                 "archive: the gzip stream is cut short", id="cut-short"),
    pytest.param(lambda: _gzip(_without_end_marker(_tar(FILES))),
                 "archive: the tar archive has no end marker (cut short?)", id="no-end-marker"),
])
def test_unsigned_data_around_the_archive_is_refused(archive: Callable[[], bytes],
                                                     message: str) -> None:
    with pytest.raises(BundleError) as refused:
        read_archive(archive())
    assert str(refused.value) == message


# ---------------------------------------------------------------- the envelope


def _statement_body() -> bytes:
    return canonical_json({"_type": "https://in-toto.io/Statement/v1", "subject": [],
                           "predicateType": "https://shipei.dev/attestations/evidence-bundle/v1",
                           "predicate": {}})


def _envelope(body: bytes, extra_signatures: int = 0) -> bytes:
    envelope = dsse.sign(PAYLOAD_TYPE, body, KEY, fingerprint(KEY.public_key()))
    for n in range(extra_signatures):
        envelope["signatures"].append({"keyid": f"bogus-{n}", "sig": dsse.b64encode(b"x" * 64)})
    return canonical_json(envelope)


def _bundle(envelope: bytes) -> bytes:
    return _tar_bytes({ATTESTATION: envelope, MANIFEST: b"{}"})


def test_a_single_signature_opens() -> None:
    opened = open_bundle(_bundle(_envelope(_statement_body())))
    assert opened.verify_signature(KEY.public_key())["_type"].startswith("https://in-toto")


def test_a_second_signature_entry_is_refused() -> None:
    with pytest.raises(BundleError, match="^signature: the envelope has 2 signature entries; "
                                          "a Shipei envelope is signed by exactly one key$"):
        open_bundle(_bundle(_envelope(_statement_body(), extra_signatures=1)))


@pytest.mark.parametrize(("body", "message"), [
    (b'{"_type": "a", "_type": "b"}', "the payload repeats the key '_type'"),
    (b'{"value": NaN}', "the payload holds NaN, which JSON does not allow"),
    (b'{"value": -Infinity}', "the payload holds -Infinity, which JSON does not allow"),
    (b'{"value": 1e999}', "the payload holds the number 1e999, too large for a float"),
    (b'{"value": 1}{', "the payload is not valid JSON (Extra data at line 1 column 13)"),
])
def test_the_signed_payload_is_parsed_strictly(body: bytes, message: str) -> None:
    with pytest.raises(dsse.EnvelopeError) as refused:
        dsse.Envelope.parse(_envelope(body))
    assert str(refused.value) == message
    with pytest.raises(BundleError, match="^signature: " + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        open_bundle(_bundle(_envelope(body)))


def test_a_duplicate_key_in_the_envelope_is_refused() -> None:
    raw = _envelope(_statement_body())
    doubled = raw.replace(b'"payloadType":', b'"payloadType":"x","payloadType":', 1)
    with pytest.raises(dsse.EnvelopeError, match="^the envelope repeats the key 'payloadType'$"):
        dsse.Envelope.parse(doubled)


def test_a_certificate_with_a_second_signature_is_refused(tmp_path: Path) -> None:
    from harness.cert.verify import VerificationError, open_certificate

    envelope = json.loads(_envelope(_statement_body(), extra_signatures=1))
    with pytest.raises(VerificationError, match="^signature: the envelope has 2 signature"):
        open_certificate(canonical_json(envelope), KEY.public_key())


def _signed_bundle(files: dict[str, bytes]) -> bytes:
    manifest = canonical_json({"schema_version": "1.0", "files": [
        {"path": n, "sha256": sha256_bytes(b), "size": len(b)} for n, b in sorted(files.items())]})
    statement = json.loads(_statement_body())
    statement["subject"] = [{"name": MANIFEST, "digest": {"sha256": sha256_bytes(manifest)}}]
    statement["predicate"] = {"runs": []}
    return _tar_bytes({**files, MANIFEST: manifest,
                       ATTESTATION: _envelope(canonical_json(statement))})


def test_verifying_with_only_the_signed_members_in_memory_still_checks_every_digest() -> None:
    files = {"runs/r/records.jsonl": b'{"case": "x"}\n' * 1000, "environment.json": b"{}"}
    opened = open_bundle(_signed_bundle(files), members=SIGNED_MEMBERS)
    assert set(opened.files) == {ATTESTATION, MANIFEST}
    assert opened.verify_digests(opened.verify_signature(KEY.public_key())) == 2
    raw = _tar_bytes({**read_archive(_signed_bundle(files)),
                      "runs/r/records.jsonl": b'{"case": "y"}\n'})  # edited, not re-signed
    edited = open_bundle(raw, members=SIGNED_MEMBERS)
    with pytest.raises(BundleError, match="^digest: runs/r/records.jsonl does not match"):
        edited.verify_digests(edited.verify_signature(KEY.public_key()))


@pytest.mark.parametrize(("member", "raw", "message"), [
    (MANIFEST, b'{"files": [], "files": []}', "digest: manifest.json repeats the key 'files'"),
    ("environment.json", b'{"environment": {"cpus": NaN}}',
     "digest: environment.json holds NaN, which JSON does not allow"),
])
def test_signed_json_members_are_parsed_strictly(member: str, raw: bytes, message: str
                                                 ) -> None:
    opened = open_bundle(_bundle(_envelope(_statement_body())))
    opened.files[member] = raw
    reader = opened.manifest if member == MANIFEST else opened.environment
    with pytest.raises(BundleError) as refused:
        reader()
    assert str(refused.value) == message
