"""Shared pieces of the center tests: a real vendor run (made once per test session
with ``shipei run``), a center with keys, a database and a registered vendor, bundle
tampering, a real ``shipei serve`` process and a real PostgreSQL server."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
VENDOR = "ACME 芯片 / ACME Chips"
ADMIN_TOKEN = "center-admin-token-for-tests-0001"
_RUNS: dict[str, Path] = {}


def shipei(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "harness", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, check=False,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


def error_line(out: subprocess.CompletedProcess) -> str:
    lines = [line for line in out.stderr.splitlines() if "warning:" not in line]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def vendor_run(results: Path, reports: Path, run_id: str,
               targets: tuple[str, ...] = ("onnxruntime-cpu",)) -> Path:
    """A representative run of the operator and model suites on onnxruntime-cpu (and
    whichever other targets are named)."""
    chosen = [arg for target in targets for arg in ("--target", target)]
    out = shipei("run", "--suite", "operators", "--suite", "models", *chosen,
                 "-m", "representative", "--results-dir", str(results),
                 "--reports-dir", str(reports), "--run-id", run_id)
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr[-2000:]
    return results / run_id


def shared_run(factory: pytest.TempPathFactory, name: str = "vendor-rep",
               targets: tuple[str, ...] = ("onnxruntime-cpu",)) -> Path:
    """One vendor run per name and test session (per xdist worker), copied by whoever
    needs to change it; its reports are in ``<run>/../../reports/<run>``."""
    if name not in _RUNS:
        root = factory.mktemp(f"shared-{name}")
        _RUNS[name] = vendor_run(root / "results", root / "reports", name, targets)
    return _RUNS[name]


@pytest.fixture(scope="module", name="run_dir")
def run_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run_dir``: the session's vendor run (a module that imports this has the fixture)."""
    return shared_run(tmp_path_factory)


@pytest.fixture(name="center")
def center_fixture(tmp_path: Path) -> Center:
    """``center``: a fresh center in the test's folder (imported like ``run_dir_fixture``)."""
    return make_center(tmp_path)


def reports_of(run_dir: Path) -> Path:
    """The reports folder a :func:`vendor_run` wrote next to its results."""
    return run_dir.parent.parent / "reports"


def copy_run(run_dir: Path, dest_results: Path, run_id: str | None = None) -> Path:
    """A copy of ``run_dir`` under ``dest_results`` (renamed consistently when asked)."""
    run_id = run_id or run_dir.name
    dest = dest_results / run_id
    shutil.copytree(run_dir, dest)
    if run_id != run_dir.name:
        info = json.loads((dest / "run.json").read_text())
        info["run_id"] = run_id
        (dest / "run.json").write_text(json.dumps(info))
        lines = []
        for line in (dest / "records.jsonl").read_text().splitlines():
            record = json.loads(line)
            record["run_id"] = run_id
            lines.append(json.dumps(record))
        (dest / "records.jsonl").write_text("\n".join(lines) + "\n")
    return dest


@dataclass
class Center:
    root: Path
    db: str
    token: str

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def center_key(self) -> Path:
        return self.keys / "center.key"

    @property
    def vendor_key(self) -> Path:
        return self.keys / "vendor" / "vendor.key"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def loc(self) -> list[str]:
        return ["--results-dir", str(self.results), "--reports-dir", str(self.reports)]


def make_center(root: Path, db: str | None = None) -> Center:
    """Center and vendor keys, a migrated database and the vendor registered in it
    (through the Python API: the CLI paths have their own tests)."""
    from harness.center.store import Store, add_vendor, upgrade
    from harness.center.vendor_keys import init_vendor_keys
    from harness.cert.keys import init_keys

    db = db or f"sqlite:///{root / 'center.db'}"
    init_keys(root / "keys", "测试中心 / Test Center")
    public, _ = init_vendor_keys(root / "keys" / "vendor", VENDOR)
    upgrade(db)
    store = Store(db)
    with store.session() as session:
        _, token = add_vendor(session, VENDOR, public.read_text())
    store.close()
    return Center(root, db, token)


def register_vendor(center: Center, name: str) -> Path:
    """Another vendor with its own key, registered at the center; its private key's path."""
    from harness.center.store import Store, add_vendor
    from harness.center.vendor_keys import init_vendor_keys

    folder = center.keys / f"vendor-{len(list(center.keys.glob('vendor-*')))}"
    public, _ = init_vendor_keys(folder, name)
    store = Store(center.db)
    with store.session() as session:
        add_vendor(session, name, public.read_text())
    store.close()
    return folder / "vendor.key"


def edit_run(run_dir: Path, info_edit: Any = None, records_edit: Any = None) -> None:
    """Change a run folder's records (``records_edit(records) -> records``, every attempt)
    and run.json (``info_edit(info)``) in place. Like a careful forger, run.json's status
    counts are made again from the edited records (before ``info_edit``)."""
    from harness.results.build import count_statuses
    from harness.results.record_files import load_run

    if records_edit is not None:
        lines = (run_dir / "records.jsonl").read_text().splitlines()
        records = records_edit([json.loads(line) for line in lines if line.strip()])
        (run_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    info = json.loads((run_dir / "run.json").read_text())
    if records_edit is not None:
        info["counts"] = count_statuses(load_run(run_dir)[1])
    if info_edit is not None:
        info_edit(info)
    (run_dir / "run.json").write_text(json.dumps(info))


@functools.cache
def describe(label: str) -> dict[str, Any]:
    """The center's description of a target, made once per test process (it imports the
    driver in a subprocess to list its files)."""
    from harness.center.center_target import describe_center_target

    return describe_center_target(label)


def build(run_dirs: list[Path], key_path: Path, vendor: str = VENDOR,
          reports: Path | None = None) -> bytes:
    from harness.center.bundle import BundleRequest, build_bundle
    from harness.cert.files import cite_file
    from harness.cert.keys import load_private_key
    from harness.results.record_files import load_run_info

    info = load_run_info(run_dirs[0])
    files = describe("onnxruntime-cpu")["driver_files"]
    return build_bundle(BundleRequest(
        run_dirs=run_dirs, reports_root=reports, vendor=vendor, target="onnxruntime-cpu",
        environment=info["environment"], driver_files=[cite_file(p) for p in files],
        key=load_private_key(key_path)))


def members(data: bytes) -> dict[str, bytes]:
    from harness.center.bundle import read_archive

    return read_archive(data)


def repack(files: dict[str, bytes]) -> bytes:
    """A bundle archive of ``files`` (not re-signed: what a tamperer can make)."""
    from harness.center.bundle import _tar_bytes

    return _tar_bytes(files)


def resign(data: bytes, key_path: Path, files_edit: Any = None, statement_edit: Any = None
           ) -> bytes:
    """``data`` with its members changed by ``files_edit(files)`` and its statement by
    ``statement_edit(statement)``, the manifest and statement digests made again and
    signed with ``key_path``: what a vendor (who can sign anything) can make."""
    from harness.center.bundle import (
        ATTESTATION,
        MANIFEST,
        PAYLOAD_TYPE,
        _tar_bytes,
        read_archive,
    )
    from harness.cert import dsse
    from harness.cert.files import canonical_json, sha256_bytes
    from harness.cert.keys import fingerprint, load_private_key

    files = read_archive(data)
    statement = json.loads(dsse.Envelope.parse(files.pop(ATTESTATION)).body)
    old_manifest = files.pop(MANIFEST)
    if files_edit is not None:
        files_edit(files)
    manifest = files.pop(MANIFEST, None)
    if manifest is None:
        manifest = canonical_json({**json.loads(old_manifest), "files": [
            {"path": p, "sha256": sha256_bytes(b), "size": len(b)}
            for p, b in sorted(files.items())]})
    files[MANIFEST] = manifest
    subject = [s for s in statement["subject"] if s["name"] != MANIFEST]
    for s in subject:  # run:<id>/records.jsonl
        run_path = "runs/" + s["name"].removeprefix("run:")
        if run_path in files:
            s["digest"]["sha256"] = sha256_bytes(files[run_path])
    for run in statement["predicate"].get("runs", []):
        records = files.get(f"runs/{run['run_id']}/records.jsonl")
        if records is not None:
            run["records_sha256"] = sha256_bytes(records)
    statement["subject"] = [{"name": MANIFEST,
                             "digest": {"sha256": sha256_bytes(manifest)}}] + subject
    if statement_edit is not None:
        statement_edit(statement)
    key = load_private_key(key_path)
    files[ATTESTATION] = canonical_json(dsse.sign(PAYLOAD_TYPE, canonical_json(statement), key,
                                                  fingerprint(key.public_key())))
    return _tar_bytes(files)


def edit_member(data: bytes, name: str, change: Any) -> bytes:
    files = members(data)
    if change is None:
        del files[name]
    else:
        files[name] = change(files[name])
    return repack(files)


def intake(center: Center, data: bytes, scope: str = "representative",
           uploader: str | None = None) -> Any:
    from harness.center.intake import IntakeRequest, review
    from harness.center.store import Store

    store = Store(center.db)
    try:
        with store.session() as session:
            return review(session, data, IntakeRequest(
                profile="framework", scope=scope, describe_target=describe,
                max_bytes=64 << 20, uploader=uploader))
    finally:
        store.close()


def accept(center: Center, data: bytes, scope: str = "representative") -> Any:
    """The intake result of a bundle that must be accepted (the refusal, when it is not)."""
    result = intake(center, data, scope)
    assert result.accepted, result.refusal()
    return result


# ---------------------------------------------------------------- a real server

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, center: Center, max_upload: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token_file = center.root / "admin.token"
        token_file.write_text(ADMIN_TOKEN)
        args = ["serve", "--db", center.db, "--key", str(center.center_key), "--port",
                str(self.port), "--admin-token-file", str(token_file)]
        if max_upload is not None:
            args += ["--max-upload", str(max_upload)]
        self.log = (center.root / f"serve-{self.port}.log").open("w")
        self.process = subprocess.Popen([PYTHON, "-m", "harness", *args], cwd=center.root,
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, PYTHONPATH=str(REPO)))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"shipei serve exited: {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url + "/api/certificates", timeout=2).read()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise RuntimeError("shipei serve did not start within 90 s")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()

    def request(self, path: str, method: str = "GET", token: str | None = None,
                body: bytes | None = None, content_type: str | None = None
                ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def upload(self, data: bytes, token: str | None, scope: str = "representative"
               ) -> tuple[int, Any]:
        body, content_type = multipart({"profile": "framework", "scope": scope},
                                       "bundle", "bundle.tar.gz", data)
        return self.request("/api/bundles", "POST", token, body, content_type)


def multipart(fields: dict[str, str], file_field: str, filename: str, data: bytes
              ) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                  f"{value}\r\n".encode())
    out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; "
              f"filename=\"{filename}\"\r\nContent-Type: application/gzip\r\n\r\n".encode())
    out.write(data + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------- a real PostgreSQL

def postgres_url(root: Path) -> tuple[str, Any]:
    """Start a PostgreSQL server from Debian's packages in ``root``; return its URL and a
    function that stops it. Skips with the reason when the binaries are missing."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed "
                    "(apt-get install postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        runuser = shutil.which("runuser")
        if not runuser:
            pytest.skip("running as root and no runuser to start PostgreSQL as postgres")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user")
        prefix = [runuser, "-u", "postgres", "--"]
        # the postgres user cannot reach pytest's private temp folders
        root = Path(tempfile.mkdtemp(prefix="shipei-pg-"))
        root.chmod(0o777)
    data = root / "pgdata"
    port = free_port()
    done = subprocess.run([*prefix, initdb, "-D", str(data), "-U", "shipei", "--auth=trust",
                           "-E", "UTF8", "--locale=C"], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"initdb failed: {done.stderr.strip().splitlines()[-1:]}")
    started = subprocess.run([*prefix, pg_ctl, "-D", str(data), "-w", "-t", "60", "-l",
                              str(root / "pg.log"), "-o",
                              f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                             capture_output=True, text=True, check=False)
    if started.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {(root / 'pg.log').read_text()[-300:]}")
    subprocess.run([*prefix, str(Path(initdb).resolve().with_name("createdb")), "-h", "127.0.0.1",
                    "-p", str(port), "-U", "shipei", "center"], check=True,
                   capture_output=True)

    def stop() -> None:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, check=False)
        if prefix:
            shutil.rmtree(root, ignore_errors=True)

    return f"postgresql://shipei@127.0.0.1:{port}/center", stop

