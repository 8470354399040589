"""A real labgrid lab on loopback, for the lab tests.

:class:`Lab` starts ``labgrid-coordinator`` on a free port of 127.0.0.1, simulated
boards (``shipei sim board``, each on its own pty), one ``labgrid-exporter`` that
exports each board's pty as a ``RawSerialPort`` (the exporter serves it through
ser2net as RFC 2217 while a place holds it) and, per board, a ``NetworkPowerPort``
(labgrid's ``simplerest`` model) switched by a small HTTP power switch in the test
process, which logs every switching. Places are created, matched and tagged by
labgrid's client session (what ``labgrid-client create/add-match/set-tags`` run);
other users act through ``labgrid-client`` itself (:meth:`Lab.client`). Every process
is stopped at the end, children included.

A missing component (labgrid, ser2net, ptys) skips the test with its name::

    @pytest.fixture(scope="module")
    def lab():
        with running_lab(boards=2) as started:
            yield started

    def test_x(lab):
        lab.create_place("p-x", board=0, tags={"soc": "sim"})
        ... lab.env ... LG_COORDINATOR=lab.address
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from harness.lab.coordinator import LabSession

REPO = Path(__file__).resolve().parent.parent
#: seconds a component may take to come up (a busy 2-core CI machine included)
START_TIMEOUT_S = 60.0
_COORDINATOR = "from labgrid.remote.coordinator import main; main()"
_EXPORTER = "from labgrid.remote.exporter import main; main()"
_CLIENT = "from labgrid.remote.client import main; main()"


def ser2net_path() -> str | None:
    found = shutil.which("ser2net")
    if found is None and os.path.isfile("/usr/sbin/ser2net"):
        found = "/usr/sbin/ser2net"
    return found


def missing_component() -> str | None:
    """Why a lab cannot be started here (the missing component), or None."""
    try:
        import labgrid.remote.client  # noqa: F401
        import labgrid.remote.coordinator  # noqa: F401
        import labgrid.remote.exporter  # noqa: F401
    except ImportError as exc:
        return f"labgrid is not installed ({exc}): pip install labgrid"
    if ser2net_path() is None:
        return "ser2net is not installed (Debian: apt-get install ser2net)"
    try:
        master, slave = os.openpty()
    except OSError as exc:
        return f"no pseudo-terminals here ({exc})"
    os.close(master)
    os.close(slave)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PowerSwitch:
    """An HTTP power switch for labgrid's ``simplerest`` model: ``GET /power/I/V`` sets
    outlet I to V (0 or 1), ``GET /power/I`` reads it. :attr:`log` holds every
    switching as ``(outlet, "on"|"off")``; :attr:`broken` makes it answer 500."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str]] = []
        self.state: dict[int, bool] = {}
        self.broken = False
        switch = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = self.path.strip("/").split("/")
                if switch.broken or len(parts) not in (2, 3) or parts[0] != "power":
                    self.send_error(500 if switch.broken else 404)
                    return
                outlet = int(parts[1])
                if len(parts) == 3 and parts[2] in ("0", "1"):
                    switch.state[outlet] = parts[2] == "1"
                    switch.log.append((outlet, "on" if parts[2] == "1" else "off"))
                body = b"1" if switch.state.get(outlet, True) else b"0"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/power/{{index}}/{{value}}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def switched(self, outlet: int) -> list[str]:
        return [what for number, what in self.log if number == outlet]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Lab:
    """A coordinator, ``boards`` simulated boards (or the simulated ``devices`` named:
    ``board``, ``imu``, ``ultrasonic``) and one exporter (``exporter``) on 127.0.0.1.
    Device ``i`` is the exporter's group ``board<i>``; :meth:`create_place` makes a
    place of it. :attr:`env` is the environment for processes that use the
    lab (``LG_COORDINATOR``)."""

    def __init__(self, folder: Path, boards: int = 1, exporter: str = "shipei-exp",
                 sim_args: Mapping[int, list[str]] | None = None,
                 devices: Sequence[str] | None = None, extra_groups: str = "") -> None:
        self.folder = folder
        self.exporter = exporter
        self.address = f"127.0.0.1:{free_port()}"
        self.power = PowerSwitch()
        self._procs: list[subprocess.Popen[bytes]] = []
        self.ptys: list[str] = []
        self.sims: list[subprocess.Popen[bytes]] = []
        self._lab_session: LabSession | None = None
        self.sim_args = dict(sim_args or {})
        #: what ``shipei sim`` serves in each group: board (default), imu, ultrasonic
        self.devices = list(devices or ["board"] * boards)
        #: more exporter groups, as exporter YAML (e.g. a NetworkService)
        self.extra_groups = extra_groups
        try:
            self._start(len(self.devices))
        except BaseException:
            self.close()
            raise

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, LG_COORDINATOR=self.address, PYTHONUNBUFFERED="1")
        env.pop("SHIPEI_LAB_HELD", None)
        return env

    # -- starting --------------------------------------------------------------------
    def _start(self, boards: int) -> None:
        self._spawn([sys.executable, "-c", _COORDINATOR, "-l", self.address], "coordinator")
        sims = [self._spawn([sys.executable, "-m", "harness", "sim", self.devices[i], "-q",
                             *self.sim_args.get(i, [])], f"sim{i}", stdout=subprocess.PIPE)
                for i in range(boards)]
        self.sims = sims
        self.ptys = [self._first_line(sim, f"shipei sim board #{i}") for i, sim in
                     enumerate(sims)]
        self._wait_port(self.address, "labgrid-coordinator")
        config = self.folder / "exporter.yaml"
        config.write_text("".join(
            f"board{i}:\n"
            f"  RawSerialPort:\n    port: {pty}\n    speed: 921600\n"
            f"  NetworkPowerPort:\n    model: simplerest\n    host: '{self.power.url}'\n"
            f"    index: {i}\n" for i, pty in enumerate(self.ptys)) + self.extra_groups,
            encoding="utf-8")
        self._spawn([sys.executable, "-c", _EXPORTER, "-c", self.address, "-n",
                     self.exporter, "--hostname", "127.0.0.1", str(config)], "exporter")
        self._wait_resources({line[:-1] for line in config.read_text().splitlines()
                              if line.endswith(":") and not line.startswith(" ")})

    def _spawn(self, argv: list[str], name: str, **kwargs: object
               ) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - the process keeps it
        kwargs.setdefault("stdout", log)
        proc = subprocess.Popen(argv, cwd=self.folder, stderr=log, stdin=subprocess.DEVNULL,
                                env=self.env, start_new_session=True, **kwargs)  # type: ignore[call-overload]
        log.close()
        self._procs.append(proc)
        return proc

    def _first_line(self, proc: subprocess.Popen[bytes], what: str) -> str:
        assert proc.stdout is not None
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        text = line[0].decode().strip() if line else ""
        if not text:
            raise RuntimeError(f"{what} did not start: {self.log(what)}")
        return text

    def _wait_port(self, address: str, what: str) -> None:
        host, port = address.rsplit(":", 1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} does not listen on {address}")

    def _wait_resources(self, wanted: set[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        session = self._session()
        while time.monotonic() < deadline:
            session.loop.run_until_complete(session.session.sync_with_coordinator())
            if wanted <= set(session.session.resources.get(self.exporter, {})):
                return
            session.sleep(0.2)
        raise RuntimeError(f"the exporter's resources did not appear; exporter log: "
                           f"{self.log('exporter')}")

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    # -- using -----------------------------------------------------------------------
    def client(self, *args: str, place: str | None = None, check: bool = True,
               user: str | None = None) -> subprocess.CompletedProcess[str]:
        """``labgrid-client [-p PLACE] ARGS`` against this lab (as ``user`` when given)."""
        argv = [sys.executable, "-c", _CLIENT, "-x", self.address]
        if place is not None:
            argv += ["-p", place]
        env = self.env
        if user is not None:
            env["LG_USERNAME"] = user
        done = subprocess.run([*argv, *args], capture_output=True, text=True, env=env,
                              timeout=START_TIMEOUT_S, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"labgrid-client {' '.join(args)} failed: {done.stderr}")
        return done

    def create_place(self, name: str, board: int = 0,
                     tags: Mapping[str, str] | None = None, group: str | None = None,
                     match: str | None = None) -> str:
        """A place matching board ``board``'s resources (or group ``group``'s, or the
        labgrid pattern ``match``), tagged ``tags``: what
        ``labgrid-client create``, ``add-match`` and ``set-tags`` do, through the same
        client session methods, without an interpreter start for each."""
        self._command(name, "add_place")
        pattern = match or f"{self.exporter}/{group or f'board{board}'}/*"
        self._command(name, "add_match", patterns=[pattern])
        if tags:
            self._command(name, "set_tags", tags=[f"{k}={v}" for k, v in tags.items()])
        return name

    def holder(self, place: str) -> str | None:
        """Who holds ``place`` now (``host/user``), or None."""
        session = self._session()
        session.loop.run_until_complete(session.session.sync_with_coordinator())
        session.name = place
        return session.state()["acquired"]

    def wait_free(self, place: str, timeout: float = 180.0) -> bool:
        """Whether ``place`` is free within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.holder(place) is None:
                return True
            time.sleep(0.1)
        return False

    def _session(self) -> LabSession:
        if self._lab_session is None:
            self._lab_session = LabSession(self.address, "")
        return self._lab_session

    def _command(self, place: str, command: str, **args: object) -> None:
        session = self._session()
        session.name = place
        session.session.args = argparse.Namespace(place=place, **args)
        session._act(getattr(session.session, command)())

    # -- stopping --------------------------------------------------------------------
    def stop_exporter(self) -> None:
        """Stop the exporter and its ser2net processes: the lab's network goes away."""
        for proc in self._procs:
            if proc.args[2:3] == [_EXPORTER]:
                _stop(proc)

    def close(self) -> None:
        """Stop every process this lab started, with its children (ser2net), newest
        first."""
        if self._lab_session is not None:
            self._lab_session.close()
            self._lab_session = None
        for proc in reversed(self._procs):
            _stop(proc)
        self._procs.clear()
        self.power.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of its group (ser2net)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def running_lab(boards: int = 1, sim_args: Mapping[int, list[str]] | None = None,
                devices: Sequence[str] | None = None, extra_groups: str = ""
                ) -> Iterator[Lab]:
    """A :class:`Lab` for the ``with`` block (``sim_args[i]``: more options for board
    ``i``'s ``shipei sim board``); skips (naming the missing component) when one cannot
    run here."""
    missing = missing_component()
    if missing:
        pytest.skip(f"labgrid lab: {missing}")
    folder = Path(tempfile.mkdtemp(prefix="shipei-lab-"))
    lab = Lab(folder, boards=boards, sim_args=sim_args, devices=devices,
              extra_groups=extra_groups)
    try:
        yield lab
    finally:
        lab.close()
        shutil.rmtree(folder, ignore_errors=True)



SSHD = "/usr/sbin/sshd"


class SshServer:
    """``sshd`` on a free port of 127.0.0.1 with keys of its own (a host key, a client
    key authorized for this user): what a lab's SSH-reachable host is, on loopback.
    :attr:`client` is the ssh argv prefix that logs in with the client key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(folder / name)], check=True, capture_output=True)
        (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
        os.chmod(folder / "authorized_keys", 0o600)
        config = folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n"
            f"PidFile {folder / 'sshd.pid'}\nUsePAM no\nPermitRootLogin prohibit-password\n")
        self.log = folder / "sshd.log"
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),  # noqa: SIM115
                                     start_new_session=True)
        self.client = ["ssh", "-i", str(folder / "client"), "-o", "IdentitiesOnly=yes",
                       "-o", f"UserKnownHostsFile={folder / 'known_hosts'}",
                       "-o", "StrictHostKeyChecking=accept-new"]
        #: the same as an ssh client configuration file (``ssh -F``, ``ssh_config=``)
        self.config = folder / "ssh_config"
        self.config.write_text(
            f"Host *\n  IdentityFile {folder / 'client'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {folder / 'known_hosts'}\n"
            "  StrictHostKeyChecking accept-new\n", encoding="utf-8")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 1):
                return
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"sshd did not start: {self.log.read_text(errors='replace')}")

    def close(self) -> None:
        _stop(self.proc)  # type: ignore[arg-type]


def ssh_missing() -> str | None:
    """Why an sshd cannot be run here, or None."""
    if not os.path.isfile(SSHD) or shutil.which("ssh") is None \
            or shutil.which("ssh-keygen") is None:
        return "OpenSSH (sshd, ssh, ssh-keygen) is not installed (Debian: openssh-server)"
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        return "sshd as root needs its privilege separation folder /run/sshd"
    return None


@contextlib.contextmanager
def running_sshd() -> Iterator[SshServer]:
    """An :class:`SshServer` for the ``with`` block; skips naming what is missing."""
    missing = ssh_missing()
    if missing:
        pytest.skip(f"ssh host: {missing}")
    folder = Path(tempfile.mkdtemp(prefix="shipei-sshd-"))
    server = SshServer(folder)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(folder, ignore_errors=True)
