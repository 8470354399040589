"""Evidence bundles: a vendor's runs packed into one signed, reproducible archive.

A bundle is a gzip-compressed tar with these members, sorted by name, every one a
regular file with mtime 0, uid/gid 0, no owner names and mode 0644 (gzip header
mtime 0 too), so the same runs give the same bytes::

    attestation.dsse.json         DSSE envelope of the vendor's in-toto Statement
    manifest.json                 every other member with its sha256 and size
    environment.json              platform fingerprint, installed distributions,
                                  sha256 of the driver's files
    runs/<run-id>/run.json        each run folder as ``shipei run`` left it
    runs/<run-id>/records.jsonl   (records, samples, LoadGen logs)
    reports/<run-id>/...          its reports (JUnit, matrix CSV/HTML, pages)

The Statement's subject is ``manifest.json`` (by sha256) and each run's
records; its predicate is modelled on in-toto's test-result predicate (result,
passed/warned/failed tests, configuration) with the vendor, the target and the
runs named. Verifying the envelope and then every manifest digest proves that
no member was changed, added or left out since the vendor signed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.cert import dsse
from harness.cert.files import canonical_json, sha256_bytes
from harness.cert.keys import fingerprint
from harness.cert.statement import PAYLOAD_TYPE, STATEMENT_TYPE
from harness.results.case_record import NOT_PASSING, Status
from harness.results.record_files import RECORDS_FILE, RUN_FILE, load_run

PREDICATE_TYPE = "https://shipei.dev/attestations/evidence-bundle/v1"
BUNDLE_SCHEMA_VERSION = "1.0"
ATTESTATION = "attestation.dsse.json"
MANIFEST = "manifest.json"
ENVIRONMENT = "environment.json"
RUNS_DIR = "runs"
REPORTS_DIR = "reports"
#: the largest bundle and member read (a bigger one is refused before it is unpacked)
MAX_BUNDLE_BYTES = 256 << 20
MAX_MEMBERS = 20_000
#: the most a bundle unpacks to, and the largest member (checked as the archive streams)
MAX_UNPACKED_BYTES = 1 << 30
MAX_MEMBER_BYTES = 128 << 20
#: after the tar's last member: its two-block end marker and zero padding to a record
MAX_TAR_TRAILER = 2 * tarfile.RECORDSIZE
#: the pax header keys a bundle member may carry (the writer's long names and sizes)
PAX_KEYS = {"path", "size"}
GZIP_FHCRC = 0x02
CHUNK = 1 << 16
#: the statuses the Statement counts as passed: those that are not a failure
PASSING = tuple(s.value for s in Status if s not in NOT_PASSING)
WARNING = ("flaky",)


class BundleError(Exception):
    """A bundle that cannot be built or read; the message is one line and starts with
    the name of the check that failed (``archive:``, ``signature:``, ``digest:`` ...)."""


# ---------------------------------------------------------------- building (vendor)

def _run_files(run_dir: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(run_dir).as_posix()}": p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def installed_distributions() -> dict[str, str]:
    """Name -> version of every importable distribution. Where a name is found twice on
    ``sys.path`` the first wins, as for :func:`importlib.metadata.version` (which the
    run's fingerprint uses), so the two never disagree about one installation."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found.setdefault(name.lower(), dist.version)
    return dict(sorted(found.items()))


def statement_result(records: list[dict[str, Any]]) -> tuple[str, dict[str, list[str]]]:
    """The statement's result and passed/warned/failed test lists for a target's records:
    what the vendor signs, and what intake's consistency check recomputes."""
    tests: dict[str, list[str]] = {"passed": [], "warned": [], "failed": []}
    for r in sorted(records, key=lambda r: (r["target"], r["suite"], r["case"])):
        name = f"{r['target']}/{r['suite']}::{r['case']}"
        ok = r["status"] in PASSING or r.get("as_expected") is True
        group = "warned" if r["status"] in WARNING else "passed" if ok else "failed"
        tests[group].append(name)
    result = "FAILED" if tests["failed"] else "WARNED" if tests["warned"] else "PASSED"
    return result, tests


@dataclass
class BundleRequest:
    run_dirs: list[Path]
    reports_root: Path | None
    vendor: str
    target: str | None
    environment: dict[str, Any]
    driver_files: list[dict[str, str]]
    key: Ed25519PrivateKey


def bundle_members(request: BundleRequest) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every member but the attestation, and the statement that signs them."""
    files: dict[str, bytes] = {}
    runs: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    targets: set[str] = set()
    for run_dir in request.run_dirs:
        info, run_records = load_run(run_dir)
        run_id = run_dir.name
        if info.get("run_id") != run_id:
            raise BundleError(f"run folder {run_id} holds run {info.get('run_id')!r}; bundle "
                              "runs under their own id")
        files.update(_run_files(run_dir, f"{RUNS_DIR}/{run_id}"))
        if request.reports_root is not None and (request.reports_root / run_id).is_dir():
            files.update(_run_files(request.reports_root / run_id, f"{REPORTS_DIR}/{run_id}"))
        runs.append({"run_id": run_id, "finished_at": info.get("finished_at"),
                     "records_sha256": sha256_bytes(files[f"{RUNS_DIR}/{run_id}/{RECORDS_FILE}"]),
                     "run_json_sha256": sha256_bytes(files[f"{RUNS_DIR}/{run_id}/{RUN_FILE}"])})
        records += run_records
        targets |= set(info.get("targets") or {})
    target = request.target or (next(iter(targets)) if len(targets) == 1 else None)
    if target is None:
        raise BundleError(f"the runs hold targets {', '.join(sorted(targets)) or 'none'}; "
                          "name the one this bundle is for with --target")
    if target not in targets:
        raise BundleError(f"no run in the bundle has target {target!r}")
    mine = [r for r in records if r.get("target") == target]
    files[ENVIRONMENT] = canonical_json({"environment": request.environment,
                                         "distributions": installed_distributions(),
                                         "driver_files": request.driver_files})
    manifest = {"schema_version": BUNDLE_SCHEMA_VERSION,
                "files": [{"path": p, "sha256": sha256_bytes(b), "size": len(b)}
                          for p, b in sorted(files.items())]}
    files[MANIFEST] = canonical_json(manifest)
    result, tests = statement_result(mine)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": MANIFEST, "digest": {"sha256": sha256_bytes(files[MANIFEST])}}]
        + [{"name": f"run:{r['run_id']}/{RECORDS_FILE}", "digest": {"sha256": r["records_sha256"]}}
           for r in runs],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "vendor": request.vendor,
            "target": target,
            # the newest run's end, not the clock: the same runs give the same bundle
            "created_at": max(str(r["finished_at"] or "") for r in runs),
            "result": result,
            "passedTests": tests["passed"], "warnedTests": tests["warned"],
            "failedTests": tests["failed"],
            "configuration": [{"name": f"{RUNS_DIR}/{r['run_id']}/{RUN_FILE}",
                               "digest": {"sha256": r["run_json_sha256"]}} for r in runs],
            "runs": runs,
            "platform_id": request.environment.get("platform_id"),
        },
    }
    return files, statement


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="", compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def build_bundle(request: BundleRequest) -> bytes:
    """The bundle's bytes: the same runs, environment and key give the same bytes
    (Ed25519 signatures are deterministic)."""
    files, statement = bundle_members(request)
    keyid = fingerprint(request.key.public_key())
    files[ATTESTATION] = canonical_json(dsse.sign(PAYLOAD_TYPE, canonical_json(statement),
                                                  request.key, keyid))
    return _tar_bytes(files)


# ---------------------------------------------------------------- reading (center)

def _safe_name(name: str) -> bool:
    normal = posixpath.normpath(name)
    return (normal == name and not name.startswith("/") and ".." not in name.split("/")
            and name not in ("", "."))


class _Inflater(io.RawIOBase):
    """A gzip stream inflated piece by piece with a running count: more than ``limit``
    bytes, a second gzip member or any byte after the stream's end is refused, and the
    last :data:`TAIL` bytes handed out are kept for the check after the tar's end."""

    TAIL = 64 << 10

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__()
        _check_gzip_header(data)
        self._data, self._pos, self._limit = memoryview(data), 0, limit
        self._inflate = zlib.decompressobj(wbits=31)  # gzip framing only
        self._pending = b""
        self.total = 0
        self.tail = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._inflate.eof:
            self._pending = self._inflate_some()
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self.tail += self._pending[:size]
        del self.tail[:-self.TAIL]
        self._pending = self._pending[size:]
        if self._inflate.eof and not self._pending:
            self._check_end()
        return size

    def _inflate_some(self) -> bytes:
        source = self._inflate.unconsumed_tail
        if not source:
            source = self._data[self._pos:self._pos + CHUNK]
            self._pos += len(source)
            if not source:
                raise BundleError("archive: the gzip stream is cut short")
        try:
            out = self._inflate.decompress(source, CHUNK)
        except zlib.error:
            raise BundleError("archive: not a gzip-compressed bundle") from None
        self.total += len(out)
        if self.total > self._limit:
            raise BundleError(f"archive: the bundle unpacks to more than its limit of "
                              f"{self._limit} bytes")
        return out

    def _check_end(self) -> None:
        rest = bytes(self._inflate.unused_data) + bytes(self._data[self._pos:self._pos + 2])
        if rest.startswith(b"\x1f\x8b"):
            raise BundleError("archive: a second gzip member follows the first (not signed)")
        if rest:
            raise BundleError("archive: data after the end of the gzip stream (not signed)")


def _check_gzip_header(data: bytes) -> None:
    if len(data) < 10 or data[:3] != b"\x1f\x8b\x08":
        raise BundleError("archive: not a gzip-compressed bundle")
    if data[3] & ~GZIP_FHCRC & 0xFF:
        raise BundleError("archive: the gzip header carries a name, comment or extra field "
                          "(not signed)")


def _after_the_end(stream: _Inflater, tar: tarfile.TarFile) -> None:
    """What follows the tar's last member must be its end marker and zero padding."""
    while stream.read(CHUNK):
        pass
    trailer = stream.total - tar.offset
    if trailer < 2 * tarfile.BLOCKSIZE:
        raise BundleError("archive: the tar archive has no end marker (cut short?)")
    if trailer > min(stream.TAIL, MAX_TAR_TRAILER) or any(stream.tail[-trailer:]):
        raise BundleError("archive: data after the end of the tar archive (not signed)")


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo, keep: bool) -> tuple[bytes, str]:
    """The member's bytes (when kept; else empty) and its sha256, read in pieces."""
    handle = tar.extractfile(member)
    digest, parts = hashlib.sha256(), []
    while handle is not None and (piece := handle.read(CHUNK)):
        digest.update(piece)
        if keep:
            parts.append(piece)
    return b"".join(parts), digest.hexdigest()


def _check_member(member: tarfile.TarInfo, seen: dict[str, str], member_limit: int) -> None:
    if len(seen) >= MAX_MEMBERS:
        raise BundleError(f"archive: more than {MAX_MEMBERS} members")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise BundleError(f"archive: member {member.name!r} is not a regular file")
    if not _safe_name(member.name) or member.name in seen:
        raise BundleError(f"archive: member name {member.name!r} is not allowed")
    if set(member.pax_headers) - PAX_KEYS:
        raise BundleError(f"archive: member {member.name!r} carries extra pax headers "
                          f"({', '.join(sorted(set(member.pax_headers) - PAX_KEYS))}; "
                          "not signed)")
    if member.size > member_limit:
        raise BundleError(f"archive: member {member.name!r} is {member.size} bytes, over the "
                          f"limit of {member_limit}")


@dataclass
class Archive:
    """A bundle archive read: the kept members' bytes, every member's sha256."""

    files: dict[str, bytes]
    digests: dict[str, str]


def stream_archive(data: bytes, max_bytes: int = MAX_BUNDLE_BYTES,
                   keep: Callable[[str], bool] | None = None) -> Archive:
    """Read a bundle archive in one pass with bounded memory: gzip and tar are streamed
    with a running byte count (at most ``4 * max_bytes`` unpacked, one member at most
    :data:`MAX_MEMBER_BYTES`), each member is hashed as it is read and its bytes kept
    only when ``keep(name)`` (default: all). Links, odd names, extra pax headers, a second
    gzip member and anything after the gzip stream or the tar's end are refused."""
    if len(data) > max_bytes:
        raise BundleError(f"archive: the bundle is {len(data)} bytes, over the limit of "
                          f"{max_bytes}")
    unpacked = min(4 * max_bytes, MAX_UNPACKED_BYTES)
    stream = _Inflater(data, unpacked)
    files: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                _check_member(member, digests, min(MAX_MEMBER_BYTES, unpacked))
                wanted = keep is None or keep(member.name)
                content, digests[member.name] = _member_data(tar, member, wanted)
                if wanted:
                    files[member.name] = content
            _after_the_end(stream, tar)
    except tarfile.TarError as exc:
        raise BundleError(f"archive: not a tar archive ({exc})") from None
    return Archive(files, digests)


def read_archive(data: bytes, max_bytes: int = MAX_BUNDLE_BYTES) -> dict[str, bytes]:
    """The members of a bundle archive (see :func:`stream_archive` for what is refused)."""
    return stream_archive(data, max_bytes).files


@dataclass
class OpenedBundle:
    """A bundle whose envelope parsed; nothing is trusted until :meth:`verify` ran."""

    data: bytes
    files: dict[str, bytes]
    envelope: dsse.Envelope
    #: every member's sha256 (``files`` may hold only the members asked for)
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 of the attestation: what names this submission (and spots a replay)."""
        return sha256_bytes(self.files[ATTESTATION])

    @property
    def keyids(self) -> list[str]:
        return [kid for kid, _ in self.envelope.signatures]

    def statement(self) -> dict[str, Any]:
        try:
            statement = json.loads(self.envelope.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BundleError("statement: the attestation's payload is not JSON") from None
        if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE \
                or statement.get("predicateType") != PREDICATE_TYPE \
                or not isinstance(statement.get("predicate"), dict):
            raise BundleError(f"statement: not an evidence-bundle statement ({PREDICATE_TYPE})")
        return statement

    @property
    def predicate(self) -> dict[str, Any]:
        return self.statement()["predicate"]

    def verify_signature(self, public_key: Ed25519PublicKey) -> dict[str, Any]:
        try:
            self.envelope.verify(public_key, fingerprint(public_key))
        except dsse.EnvelopeError as exc:
            raise BundleError(f"signature: {exc}".replace("the certificate", "the bundle")) \
                from None
        return self.statement()

    def _signed_json(self, name: str) -> Any:
        """A signed JSON member, parsed as strictly as the envelope (no duplicate keys,
        NaN or Infinity: every reader sees what was signed); its shape is the caller's."""
        if name not in self.files:
            raise BundleError(f"digest: the bundle has no {name}")
        try:
            return dsse.strict_json(self.files[name], name)
        except dsse.EnvelopeError as exc:
            raise BundleError(f"digest: {exc}") from None

    def manifest(self) -> dict[str, Any]:
        return self._signed_json(MANIFEST)

    def verify_digests(self, statement: dict[str, Any]) -> int:
        """Every member is listed with its sha256, none is missing or extra; return how many."""
        subject = {s.get("name"): (s.get("digest") or {}).get("sha256")
                   for s in statement.get("subject", [])}
        digests = self.digests or {n: sha256_bytes(b) for n, b in self.files.items()}
        if subject.get(MANIFEST) != digests.get(MANIFEST):
            raise BundleError(f"digest: {MANIFEST} is not the one the vendor signed")
        listed = {e["path"]: e["sha256"] for e in self.manifest().get("files", [])}
        for path, digest in sorted(listed.items()):
            if path not in digests:
                raise BundleError(f"digest: {path} is listed in the manifest but missing")
            if digests[path] != digest:
                raise BundleError(f"digest: {path} does not match its sha256 in the manifest")
        extra = sorted(set(digests) - set(listed) - {MANIFEST, ATTESTATION})
        if extra:
            raise BundleError(f"digest: {extra[0]} is in the bundle but not in the manifest")
        for run in statement["predicate"].get("runs", []):
            records = digests.get(f"{RUNS_DIR}/{run['run_id']}/{RECORDS_FILE}")
            if records is None or records != run.get("records_sha256"):
                raise BundleError(f"digest: records of run {run['run_id']} do not match "
                                  "the attestation")
        return len(listed)

    def run_ids(self) -> list[str]:
        return sorted({p.split("/")[1] for p in self.files
                       if p.startswith(f"{RUNS_DIR}/") and p.endswith(f"/{RUN_FILE}")})

    def environment(self) -> dict[str, Any]:
        return self._signed_json(ENVIRONMENT)

    def extract(self, dest: Path, prefix: str = RUNS_DIR) -> Path:
        """Write the members under ``prefix`` into ``dest``; return ``dest/prefix``."""
        for name, data in self.files.items():
            if name.startswith(prefix + "/"):
                path = dest / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        return dest / prefix


#: what verifying a bundle's signature and digests needs in memory (the other members
#: are only hashed as they stream past)
SIGNED_MEMBERS = (ATTESTATION, MANIFEST)


def open_bundle(data: bytes, max_bytes: int = MAX_BUNDLE_BYTES,
                members: tuple[str, ...] | None = None) -> OpenedBundle:
    """The bundle's members and its parsed envelope. With ``members`` (for verification:
    :data:`SIGNED_MEMBERS`), only those and the attestation are kept in memory; every
    member is still hashed, so :meth:`OpenedBundle.verify_digests` checks them all."""
    wanted = None if members is None else {ATTESTATION, *members}.__contains__
    archive = stream_archive(data, max_bytes, wanted)
    files = archive.files
    if ATTESTATION not in files:
        raise BundleError(f"signature: the bundle has no {ATTESTATION}")
    try:
        envelope = dsse.Envelope.parse(files[ATTESTATION])
    except dsse.EnvelopeError as exc:
        raise BundleError(f"signature: {exc}") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise BundleError(f"signature: payloadType is {envelope.payload_type!r}")
    return OpenedBundle(data, files, envelope, archive.digests)


def target_records(files: dict[str, bytes], run_id: str) -> list[dict[str, Any]]:
    """A run's records (every attempt) as the bundle holds them."""
    raw = files.get(f"{RUNS_DIR}/{run_id}/{RECORDS_FILE}", b"")
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]

