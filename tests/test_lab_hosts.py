"""A framework target on a labgrid place's SSH host (``--target onnxruntime-cpu,place=NAME``),
against a real lab on loopback: labgrid's coordinator and an exporter publishing a
``NetworkService`` for an ``sshd`` of the test's own (its own host key, a client key made
for the test). One ``shipei run`` through the place is shared by the module's tests."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.driver.registry import RegistryError, TargetRequest, discover
from harness.run.target_pool import TargetPool, build_target
from tests.lab_support import REPO, Lab, SshServer, running_lab, running_sshd

#: a few operator cases: enough to show every case ran on the host, quick over ssh
CASES = "test_abs or test_relu or test_add"


@dataclass
class HostLab:
    lab: Lab
    sshd: SshServer
    place: str
    label: str
    run: subprocess.CompletedProcess[str]
    results: Path


def host_label(place: str, sshd: SshServer, **more: str) -> str:
    options = {"place": place, "python": sys.executable, "pythonpath": str(REPO),
               "ssh_config": str(sshd.config), **more}
    return "onnxruntime-cpu," + ",".join(f"{k}={v}" for k, v in options.items())


def shipei_run(lab: Lab, out: Path, *args: str, coordinator_env: bool = False
               ) -> subprocess.CompletedProcess[str]:
    env = lab.env
    if not coordinator_env:  # the coordinator comes from --lg-coordinator alone
        env.pop("LG_COORDINATOR")
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", "--suite", "operators", "-k", CASES,
         "--results-dir", str(out / "results"), "--reports-dir", str(out / "reports"),
         *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        check=False)


@pytest.fixture(scope="module")
def host_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostLab]:
    with running_sshd() as sshd:
        service = (f"host0:\n  NetworkService:\n    address: 127.0.0.1\n"
                   f"    username: {getpass.getuser()}\n    port: {sshd.port}\n"
                   f"host1:\n  NetworkService:\n    address: 127.0.0.1\n"
                   f"    username: {getpass.getuser()}\n    port: {sshd.port}\n"
                   "    password: hunter2\n")
        with running_lab(boards=1, extra_groups=service) as lab:
            place = lab.create_place("srv-01", group="host0", tags={"arch": "x86_64"})
            lab.create_place("board-only", board=0)
            lab.create_place("srv-password", group="host1")
            out = tmp_path_factory.mktemp("host-run")
            label = host_label(place, sshd)
            done = shipei_run(lab, out, "--target", label, "--run-id", "on-host",
                              "--lg-coordinator", lab.address)
            yield HostLab(lab, sshd, place, label, done, out / "results" / "on-host")


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr)[-3000:]


def test_a_framework_target_runs_on_the_place_s_host(host_lab: HostLab) -> None:
    assert host_lab.run.returncode == 0, _output(host_lab.run)
    records = [json.loads(line) for line in
               (host_lab.results / "records.jsonl").read_text().splitlines() if line]
    assert len(records) >= 3 and {r["status"] for r in records} == {"pass"}
    assert {r["target"] for r in records} == {host_lab.label}


def test_run_json_records_the_place_and_the_host_s_environment(host_lab: HostLab) -> None:
    assert host_lab.run.returncode == 0, _output(host_lab.run)
    info = json.loads((host_lab.results / "run.json").read_text())
    described = info["targets"][host_lab.label]
    where = described["place"]
    assert where["place"] == host_lab.place
    # --lg-coordinator was the only coordinator given (LG_COORDINATOR unset)
    assert where["coordinator"] == host_lab.lab.address
    assert where["exporter"] == host_lab.lab.exporter
    assert where["resource"] == f"{host_lab.lab.exporter}/host0/NetworkService/NetworkService"
    assert where["ssh_host"] == {"address": "127.0.0.1", "username": getpass.getuser(),
                                 "port": host_lab.sshd.port}
    assert where["tags"] == {"arch": "x86_64"}
    # what ran there said so: it came in over ssh, and it is that machine's interpreter
    worker = where["worker"]
    assert worker["launcher"] == "ssh" and worker["ssh_connection"], worker
    assert worker["ssh_connection"].split()[-1] == str(host_lab.sshd.port)
    assert worker["executable"] == sys.executable and worker["machine"]
    assert where["environment"]["runtimes"]["onnxruntime"]
    assert described["runtime"] == "onnxruntime" and described["available"] is True
    # the place's options are the place's: the driver was given none of them
    assert described["request"]["options"]["place"] == host_lab.place


def test_the_place_is_released_after_the_run(host_lab: HostLab) -> None:
    assert host_lab.lab.wait_free(host_lab.place)


def test_the_worker_is_launched_over_ssh(host_lab: HostLab, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setenv("LG_COORDINATOR", host_lab.lab.address)
    pool = TargetPool([host_lab.label])
    try:
        (request,) = pool.requests
        host = pool.fresh_process_host(request)
        assert host.argv[0] == "ssh" and "-F" in host.argv
        assert host.argv[-2:] == ["-m", "harness.isolation.worker_main"]
        assert "place" not in host.options and "ssh_config" not in host.options
        assert pool.host(request) is not None
    finally:
        pool.close()
        from harness.lab.place import release_all
        release_all()
    assert host_lab.lab.wait_free(host_lab.place)


def refusal(host_lab: HostLab, label: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Why the target ``label`` is not available, as a run would say before its first
    case (asked in this process: the run's own path is the busy-place test's)."""
    from harness.lab.place import release_all

    monkeypatch.setenv("LG_COORDINATOR", host_lab.lab.address)
    try:
        availability = build_target(discover(), TargetRequest.parse(label)).availability()
    finally:
        release_all()
    assert not availability.available
    return availability.reason


def test_a_place_without_an_ssh_host_is_refused_naming_it(
        host_lab: HostLab, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = refusal(host_lab, host_label("board-only", host_lab.sshd), monkeypatch)
    assert "'board-only' needs exactly one SSH host (labgrid NetworkService)" in reason
    assert host_lab.lab.wait_free("board-only")


def test_a_host_held_by_someone_else_is_refused_naming_them(host_lab: HostLab,
                                                           tmp_path: Path) -> None:
    lab = host_lab.lab
    assert lab.wait_free(host_lab.place)
    lab.client("acquire", place=host_lab.place, user="alice")
    try:
        done = shipei_run(lab, tmp_path, "--target", host_label(host_lab.place, host_lab.sshd),
                          coordinator_env=True)
    finally:
        lab.client("release", place=host_lab.place, user="alice")
    assert done.returncode == 2, _output(done)
    assert "is acquired by" in done.stderr and "/alice" in done.stderr, _output(done)


def test_a_host_ssh_will_not_log_in_to_is_named(host_lab: HostLab, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "ssh_config"  # no key: BatchMode refuses to ask for a password
    empty.write_text(f"Host *\n  IdentityFile {tmp_path / 'none'}\n  IdentitiesOnly yes\n"
                     f"  UserKnownHostsFile {tmp_path / 'known'}\n"
                     "  StrictHostKeyChecking accept-new\n", encoding="utf-8")
    label = host_label(host_lab.place, host_lab.sshd, ssh_config=str(empty))
    reason = refusal(host_lab, label, monkeypatch)
    assert f"place {host_lab.place!r}: ssh to {getpass.getuser()}@127.0.0.1" in reason
    assert "Permission denied" in reason
    assert host_lab.lab.wait_free(host_lab.place)


def test_the_center_s_lab_page_shows_the_run_in_the_place_s_history(
        host_lab: HostLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask", reason="the center's web registry needs shipei[center]")
    from harness.center.intake import store_run
    from harness.center.store import Store
    from harness.center.web import create_app
    from harness.cert.keys import load_private_key
    from tests.center_support import ADMIN_TOKEN, describe, make_center

    assert host_lab.run.returncode == 0, _output(host_lab.run)
    center = make_center(tmp_path)
    store = Store(center.db)
    try:
        with store.session() as session:
            store_run(session, host_lab.results, None)
        client = create_app(store, load_private_key(center.center_key), ADMIN_TOKEN,
                            describe).test_client()
        monkeypatch.setenv("LG_COORDINATOR", host_lab.lab.address)
        answer = client.get("/api/lab")
        assert answer.status_code == 200, answer.json
        places = {p["name"]: p for p in answer.json["places"]}
        (run,) = places[host_lab.place]["history"]
        assert run["run_id"] == "on-host" and run["target"] == host_lab.label
        assert run["coordinator"] == host_lab.lab.address
        assert run["resource"].endswith("/host0/NetworkService/NetworkService")
        assert places["board-only"]["history"] == []
        html = client.get("/lab").get_data(as_text=True)
        assert "本工位运行 / Runs at this place" in html and "on-host" in html
    finally:
        store.close()


def test_a_host_with_a_password_is_refused_and_released(
        host_lab: HostLab, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = refusal(host_lab, host_label("srv-password", host_lab.sshd), monkeypatch)
    assert "has a password; Shipei logs in with keys only" in reason
    assert host_lab.lab.wait_free("srv-password")


# -- without a lab ---------------------------------------------------------------------
def test_a_wait_that_is_not_seconds_is_refused() -> None:
    with pytest.raises(RegistryError, match="wait= must be seconds, not 'soon'"):
        build_target(discover(), TargetRequest.parse("onnxruntime-cpu,place=x,wait=soon"))


def test_a_farm_run_s_places_and_a_refused_place_are_read_as_recorded() -> None:
    from harness.center.lab_runs import places_of

    farm = {"targets": {"serial-board": {"name": "serial-board"}},
            "farm": {"places": [
                {"name": "p-a", "where": {"place": "p-a", "coordinator": "lab:1",
                                          "exporter": "e1", "resource": "e1/b/N/R"}},
                {"name": "p-b", "where": {}}, {"name": ""}, "garbage"]}}
    assert places_of(farm, "serial-board") == [
        {"place": "p-a", "coordinator": "lab:1", "exporter": "e1", "resource": "e1/b/N/R"},
        {"place": "p-b", "coordinator": "", "exporter": "", "resource": ""}]
    refused = {"targets": {"t": {"place": {"place": "x", "error": "busy"}}}}
    assert places_of(refused, "t") == []  # never stood there
    assert places_of({"targets": {"t": {"place": "x"}}}, "t") == []
    long = {"targets": {"t": {"place": {"place": "p" * 500}}}}
    assert places_of(long, "t")[0]["place"] == "p" * 200

def test_the_driver_s_bad_option_on_a_place_is_named() -> None:
    request = TargetRequest.parse("onnxruntime-cpu,place=x,threads_nonsense=2")
    with pytest.raises(RegistryError, match="threads_nonsense.*are the place's"):
        build_target(discover(), request)


def test_host_options_without_a_place_go_to_the_driver() -> None:
    with pytest.raises(TypeError, match="python"):
        build_target(discover(), TargetRequest.parse("onnxruntime-cpu,python=python3"))


def test_a_serial_target_keeps_its_own_place_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.lab.host_place import on_host_request

    registry = discover()
    serial = TargetRequest.parse("serial-board,place=x")
    assert not on_host_request(registry.spec("serial-board"), serial)
    assert on_host_request(registry.spec("onnxruntime-cpu"),
                           TargetRequest.parse("onnxruntime-cpu,place=x"))


def test_no_coordinator_makes_the_target_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    target = build_target(discover(), TargetRequest.parse("onnxruntime-cpu,place=x"))
    availability = target.availability()
    assert not availability.available
    assert "no labgrid coordinator" in availability.reason
    assert target.describe()["place"] == {"place": "x", "error": availability.reason}


def test_lg_coordinator_must_be_an_address() -> None:
    from harness.cli.main import build_parser

    for bad in ("a b:1", "host:port", "x,y"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "--lg-coordinator", bad])
    args = build_parser().parse_args(["run", "--lg-coordinator", "lab:20408"])
    assert args.lg_coordinator == "lab:20408"
