"""Bad input to the certificate, key and registry commands: exit 2, one line on stderr,
no traceback, nothing changed (issue 27 item 12; ``tests/test_bad_inputs.py`` has the
same table for the run commands).

Every row runs in this process (``harness.cli.main.main``) on its own copy of a folder
holding a center key, a signed certificate, its revocation list, an empty center
database and bad files; the folder is hashed before and after each row.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cert_support import Center
from tests.test_bad_inputs import _in_process  # the same in-process main()


@dataclass(frozen=True)
class Row:
    args: tuple[str, ...]
    message: str


def row(*args: str, message: str, id: str) -> object:
    return pytest.param(Row(args, message), id=id)


KEY = ("--key", "{dir}/keys/center.key")
PUB = ("--pubkey", "{dir}/keys/center.pub")
CERTIFY = ("certify", "--target", "onnxruntime-cpu", "--profile", "framework", *KEY,
           "--runs", "never-read", "--results-dir", "{dir}/results", "--reports-dir",
           "{dir}/reports", "--certificates-dir", "{dir}/certs")
PAGE = ("cert", "page", "{cert}", *PUB)
DB = ("--db", "sqlite:///{dir}/center.db")

ROWS = [
    row("keys", "init", "--dir", "{dir}/afile", message="key folder {dir}/afile is not a folder",
        id="keys-init-dir-is-file"),
    row("keys", "init", "--dir", "{dir}/afile/sub", message="is not a folder",
        id="keys-init-dir-under-a-file"),
    row("keys", "init", "--role", "vendor", "--vendor", "V", "--dir", "{dir}/afile",
        message="is not a folder", id="keys-init-vendor-dir-is-file"),
    row(*CERTIFY, "--certificates-dir", "{dir}/afile",
        message="--certificates-dir {dir}/afile is not a folder",
        id="certify-certificates-dir-is-file"),
    row(*CERTIFY, "--valid-days", "0", message="--valid-days must be between 1 and",
        id="certify-valid-days-0"),
    row(*CERTIFY, "--valid-days", "-3", message="--valid-days must be between 1 and",
        id="certify-valid-days-negative"),
    row(*CERTIFY, "--expectations", "{dir}/random.bin",
        message="--expectations: cannot read expectations", id="certify-expectations-random"),
    row(*CERTIFY, "--expectations", "{dir}/malformed.toml", message="not TOML",
        id="certify-expectations-malformed"),
    row(*CERTIFY, "--expectations", "{dir}/invalid.toml", message="status must be one of",
        id="certify-expectations-invalid"),
    row("cert", "publish", "{cert}", *PUB, "--registry", "{dir}/afile",
        message="--registry {dir}/afile is not a folder", id="cert-publish-registry-is-file"),
    row(*PAGE, "-o", "{dir}/nodir/page.html", message="folder {dir}/nodir does not exist",
        id="cert-page-output-folder-missing"),
    row(*PAGE, "-o", "{dir}/certs", message="is a folder; name the file",
        id="cert-page-output-is-folder"),
    row(*PAGE, "--pdf", "{dir}/nodir/page.pdf", message="folder {dir}/nodir does not exist",
        id="cert-page-pdf-folder-missing"),
    row("cert", "revocations", "--renew", "--days", "99999999999", *KEY, "--certificates-dir",
        "{dir}/certs", "--registry", "{dir}/no-registry",
        message="stays current between 1 and 366 days, not 99999999999",
        id="cert-revocations-days-huge"),
    row("cert", "revocations", "--renew", "--days", "0", *KEY, "--certificates-dir",
        "{dir}/certs", "--registry", "{dir}/no-registry", message="between 1 and 366 days",
        id="cert-revocations-days-0"),
    row("cert", "verify", "{cert}", *PUB, "--revocations", "https://center.example/rev.json",
        message="is a URL: fetch the list first", id="cert-verify-revocations-url"),
    row("cert", "revoke", "SP-NOPE", "--reason", "r", *KEY, "--certificates-dir",
        "{dir}/certs", "--registry", "{dir}/no-registry", *DB,
        message="no certificate SP-NOPE in this registry", id="cert-revoke-unknown-with-db"),
    row("db", "bundle", "get", "zz", "-o", "{dir}/b.tar.gz", *DB,
        message="neither a bundle number", id="db-bundle-get-bad-ref"),
    row("db", "bundle", "get", "7", "-o", "{dir}/b.tar.gz", *DB,
        message="no accepted bundle '7'", id="db-bundle-get-missing"),
    row("db", "certify", "{dir}/afile", "--profile", "framework", *KEY, "--certificates-dir",
        "{dir}/afile", *DB, message="--certificates-dir {dir}/afile is not a folder",
        id="db-certify-certificates-dir-is-file"),
]

#: SQLite's write-ahead log and shared memory, made by opening the database
SQLITE_SIDE_FILES = ("-wal", "-shm")
FILES = {
    "afile": b"not a folder\n",
    "malformed.toml": b"[operators\n",
    "invalid.toml": b'[operators.test_abs]\nstatus = "bogus"\nreason = "x"\n',
    "random.bin": bytes(range(256)) * 3,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The folder every row copies, and its certificate's file name."""
    from harness.center.store import Store, upgrade
    from harness.cert.revocation import REVOCATIONS_FILE, renew

    root = tmp_path_factory.mktemp("bad-cert-inputs") / "work"
    root.mkdir()
    center = Center(root)
    certificate = center.write(center.statement())
    renew(center.certs / REVOCATIONS_FILE, center.key)
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    upgrade(f"sqlite:///{root / 'center.db'}")
    Store(f"sqlite:///{root / 'center.db'}").close()  # in WAL mode from now on
    with contextlib.closing(sqlite3.connect(root / "center.db")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in center.db itself
    return root, certificate.name


def _digest(folder: Path) -> str:
    total = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()
                       and not p.name.endswith(SQLITE_SIDE_FILES)):
        total.update(path.relative_to(folder).as_posix().encode() + b"\0")
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


@pytest.mark.parametrize("spec", ROWS)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
        spec: Row, base: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    source, name = base
    work = tmp_path / "work"
    shutil.copytree(source, work)
    monkeypatch.setenv("SHIPEI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)  # the default center/center.db is not there
    monkeypatch.delenv("SHIPEI_DB", raising=False)
    argv = [a.format(dir=work, cert=work / "certs" / name) for a in spec.args]
    before = _digest(work)
    outcome = _in_process(argv)
    code, stderr = outcome.code, outcome.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert spec.message.format(dir=work) in lines[0], lines[0]
    assert _digest(work) == before


def test_a_revocation_list_without_next_update_is_refused(base: tuple[Path, str],
                                                          tmp_path: Path) -> None:
    """A list with no ``next_update`` would never go stale: a revoked certificate shipped
    with an old list would verify on any new machine. The verifier refuses it."""
    from harness.cert.revocation import REVOCATIONS_FILE, write_revocations
    from harness.cert.verify import VerificationError, VerifyOptions, verify_certificate

    source, name = base
    work = tmp_path / "work"
    shutil.copytree(source, work)
    center_key = work / "keys" / "center.key"
    from harness.cert.keys import fingerprint, load_private_key

    key = load_private_key(center_key)
    write_revocations(work / "certs" / REVOCATIONS_FILE, {
        "_type": "https://shipei.dev/revocations/v1", "issuer_keyid": fingerprint(
            key.public_key()), "sequence": 3, "updated_at": None, "revoked": []}, key)
    with pytest.raises(VerificationError, match="has no next_update"):
        verify_certificate(work / "certs" / name, VerifyOptions(key.public_key()))
