"""Files named on the command line are read with a bound: an endless device
(``/dev/zero``) given as a key, public key, revocation list, expectations file, token
file or bundle is refused with one line and exit status 2 before a byte of it is read,
and a regular file over its limit is refused the same way. The commands run in one child
process whose address space is capped, so a regression fails the test instead of
exhausting the machine's memory."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bounded import BoundedReadError, check_bounded, read_bounded
from tests.center_support import REPO

ZERO = "/dev/zero"

#: each command names ZERO in one option; the rest of its line is valid enough that the
#: bounded read is what answers
CASES = {
    "cert-verify-pubkey": (["cert", "verify", "{tmp}/cert.dsse.json", "--pubkey", ZERO],
                           "public key /dev/zero is not a regular file"),
    "cert-verify-certificate": (["cert", "verify", ZERO, "--pubkey", "{keys}/center.pub"],
                                "certificate /dev/zero is not a regular file"),
    "cert-verify-revocations": (["cert", "verify", "{tmp}/cert.dsse.json", "--pubkey",
                                 "{keys}/center.pub", "--revocations", ZERO],
                                "revocation list /dev/zero is not a regular file"),
    "cert-verify-bundle": (["cert", "verify", "{tmp}/cert.dsse.json", "--pubkey",
                            "{keys}/center.pub", "--no-revocation-check", "--bundle", ZERO,
                            "--vendor-pubkey", "{keys}/center.pub"],
                           "bundle /dev/zero is not a regular file"),
    "cert-revoke-key": (["cert", "revoke", "SP-1", "--reason", "x", "--key", ZERO,
                         "--certificates-dir", "{tmp}/certs"],
                        "private key /dev/zero is not a regular file"),
    "bundle-key": (["bundle", "some-run", "--key", ZERO, "-o", "{tmp}/b.tar.gz"],
                   "private key /dev/zero is not a regular file"),
    "certify-key": (["certify", "--target", "onnxruntime-cpu", "--profile", "framework",
                     "--key", ZERO], "private key /dev/zero is not a regular file"),
    "certify-expectations": (["certify", "--target", "onnxruntime-cpu", "--profile",
                              "framework", "--key", "{keys}/center.key", "--expectations", ZERO],
                             "expectations file /dev/zero is not a regular file"),
    "run-expectations": (["run", "--suite", "operators", "--target", "onnxruntime-cpu",
                          "--expectations", ZERO, "--results-dir", "{tmp}/results"],
                         "expectations file /dev/zero is not a regular file"),
    "intake-bundle": (["intake", ZERO, "--profile", "framework", "--db", "{db}"],
                      "bundle /dev/zero is not a regular file"),
    "audit-bundle": (["audit", ZERO, "--sample", "1", "--db", "{db}"],
                     "bundle /dev/zero is not a regular file"),
    "db-certify-bundle": (["db", "certify", ZERO, "--profile", "framework", "--key",
                           "{keys}/center.key", "--db", "{db}"],
                          "bundle /dev/zero is not a regular file"),
    "db-vendor-add-pubkey": (["db", "vendor-add", "X", "--pubkey", ZERO, "--db", "{db}"],
                             "public key /dev/zero is not a regular file"),
    "serve-key": (["serve", "--key", ZERO, "--db", "{db}"],
                  "private key /dev/zero is not a regular file"),
    "serve-admin-token": (["serve", "--key", "{keys}/center.key", "--db", "{db}",
                           "--admin-token-file", ZERO],
                          "admin token file /dev/zero is not a regular file"),
    "intake-too-big": (["intake", "{tmp}/big.tar.gz", "--profile", "framework",
                        "--max-bytes", "1000", "--db", "{db}"],
                       "bundle {tmp}/big.tar.gz is over the limit of 1000 bytes"),
}

_CHILD = """
import contextlib, io, json, sys
from harness.cli.main import main
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


def _limit_memory() -> None:
    limit = 3 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    from harness.center.store import upgrade
    from harness.cert.keys import init_keys

    tmp = tmp_path_factory.mktemp("door")
    init_keys(tmp / "keys", "Door Center")
    db = f"sqlite:///{tmp / 'center.db'}"
    upgrade(db)
    (tmp / "cert.dsse.json").write_text("{}")
    (tmp / "big.tar.gz").write_bytes(bytes(4000))
    fill = {"tmp": str(tmp), "keys": str(tmp / "keys"), "db": db}
    argvs = {name: [arg.format(**fill) for arg in argv] for name, (argv, _) in CASES.items()}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(argvs)], cwd=tmp,
                         capture_output=True, text=True, timeout=600, check=False,
                         preexec_fn=_limit_memory, env={"PYTHONPATH": str(REPO),
                                                        "PATH": "/usr/bin:/bin",
                                                        "SHIPEI_CACHE_DIR": str(tmp / "c")})
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.splitlines()[-1])
    return {name: (code, err.replace(str(tmp), "{tmp}")) for name, (code, err) in found.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_endless_or_oversized_file_is_refused_in_one_line(
        answers: dict[str, tuple[int, str]], case: str) -> None:
    code, err = answers[case]
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].endswith(CASES[case][1]), lines[0]


def test_read_bounded_reads_at_most_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bounded(path, 10, "file") == b"x" * 10
    with pytest.raises(BoundedReadError, match=r"^file .*f is over the limit of 9 bytes$"):
        read_bounded(path, 9, "file")
    with pytest.raises(BoundedReadError, match=r"^file .*nothing does not exist$"):
        read_bounded(tmp_path / "nothing", 9, "file")
    with pytest.raises(BoundedReadError, match="is not a regular file$"):
        read_bounded(tmp_path, 9, "file")
    assert check_bounded(tmp_path / "nothing", 9, "file") == tmp_path / "nothing"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(BoundedReadError, match="is not a regular file$"):
        read_bounded(fifo, 10, "public key")
    with pytest.raises(BoundedReadError, match="is not a regular file$"):
        check_bounded(fifo, 10, "public key")
