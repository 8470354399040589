"""Tampering with a real certificate, its records, its files or its key is detected,
each with the right one-line reason; so are expiry and revocation.

One certificate is issued per module (``shipei certify`` on onnxruntime-cpu, the
framework profile's representative scope); every test works on copies.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import onnx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper

from harness.cert import dsse
from harness.cert.keys import fingerprint, init_keys, load_private_key, load_public_key
from harness.cert.revocation import REVOCATIONS_FILE, revoke, write_revocations
from harness.cert.statement import PAYLOAD_TYPE
from harness.cert.verify import (
    VerificationError,
    VerifyOptions,
    open_certificate,
    verify_certificate,
)

REPO = Path(__file__).resolve().parent.parent
#: verify remembers revocation-list sequences here, never in the user's home
STATE_DIR = tempfile.mkdtemp(prefix="shipei-state-")


def shipei(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=600, check=False,
                          env=dict(os.environ, PYTHONUNBUFFERED="1",
                                   SHIPEI_STATE_DIR=STATE_DIR))


class Issued:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        self.results = root / "results"
        self.reports = root / "reports"
        self.certs = root / "certificates"

    def locations(self) -> list[str]:
        return ["--results-dir", str(self.results), "--reports-dir", str(self.reports)]

    def certify(self, *extra: str) -> Path:
        before = set(self.certs.glob("SP-*.dsse.json"))
        out = shipei("certify", "--target", "onnxruntime-cpu", "--key",
                     str(self.keys / "center.key"), "--certificates-dir", str(self.certs),
                     *self.locations(), *extra)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        (new,) = set(self.certs.glob("SP-*.dsse.json")) - before
        return new

    @property
    def pubkey(self):  # noqa: ANN201 - an Ed25519 public key
        return load_public_key(self.keys / "center.pub")

    def statement(self, certificate: Path) -> dict:
        envelope = json.loads(certificate.read_text())
        return json.loads(base64.b64decode(envelope["payload"]))


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    state = Issued(tmp_path_factory.mktemp("cert"))
    init_keys(state.keys, "测试中心 / Test Center")
    state.certificate = state.certify("--profile", "framework", "--scope", "representative")
    return state


@pytest.fixture
def work(issued: Issued, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the certificate and of the results folder to tamper with."""
    certificate = tmp_path / issued.certificate.name
    shutil.copyfile(issued.certificate, certificate)
    shutil.copyfile(issued.certs / REVOCATIONS_FILE, tmp_path / REVOCATIONS_FILE)
    results = tmp_path / "results"
    shutil.copytree(issued.results, results)
    return certificate, results


def reason(certificate: Path, issued: Issued, **options) -> str:
    with pytest.raises(VerificationError) as info:
        verify_certificate(certificate, VerifyOptions(options.pop("key", issued.pubkey),
                                                      **options))
    text = str(info.value)
    assert "\n" not in text
    return text


def test_untouched_certificate_verifies_with_records_and_files(work, issued: Issued) -> None:
    certificate, results = work
    lines = verify_certificate(certificate, VerifyOptions(issued.pubkey, results,
                                                          check_files=True))
    assert lines[-1].startswith(f"certificate {certificate.name.split('.')[0]} is valid")
    assert any(line.startswith("level: recomputed") for line in lines)


@pytest.mark.extended
def test_flipping_any_byte_of_the_envelope_is_detected(issued: Issued) -> None:
    """Every byte, lowest bit flipped (and every 97th byte's highest bit too); in memory,
    through the same check verify runs first."""
    original = issued.certificate.read_bytes()
    key = issued.pubkey
    assert open_certificate(original, key)
    for index in range(len(original)):
        for bit in (0x01, 0x80) if index % 97 == 0 else (0x01,):
            flipped = bytearray(original)
            flipped[index] ^= bit
            with pytest.raises(VerificationError) as info:
                open_certificate(bytes(flipped), key)
            assert str(info.value).startswith("signature:"), (index, bit, str(info.value))


def test_edited_payload_is_detected(work, issued: Issued) -> None:
    certificate, _ = work
    envelope = json.loads(certificate.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["level"] = {"id": "full", "zh": "完全兼容", "en": "Fully compatible"}
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    certificate.write_text(json.dumps(envelope))
    assert reason(certificate, issued).startswith("signature: signature does not verify")


def test_another_public_key_is_refused(work, issued: Issued) -> None:
    certificate, _ = work
    other = Ed25519PrivateKey.generate().public_key()
    text = reason(certificate, issued, key=other)
    assert text.startswith("signature: no signature by key") and "wrong public key" in text


def test_a_resigned_certificate_does_not_pass_as_the_centers(work, issued: Issued) -> None:
    """An attacker re-signs an edited statement with their own key but keeps the keyid."""
    certificate, _ = work
    envelope = json.loads(certificate.read_text())
    body = base64.b64decode(envelope["payload"])
    forged = dsse.sign(PAYLOAD_TYPE, body, Ed25519PrivateKey.generate(),
                       fingerprint(issued.pubkey))
    certificate.write_text(json.dumps(forged))
    assert reason(certificate, issued).startswith("signature: signature does not verify")


def test_editing_one_record_is_detected(work, issued: Issued) -> None:
    certificate, results = work
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    records = run_dir / "records.jsonl"
    lines = records.read_text().splitlines()
    first = json.loads(lines[0])
    first["status"] = "fail" if first["status"] == "pass" else "pass"
    lines[0] = json.dumps(first, sort_keys=True)
    records.write_text("\n".join(lines) + "\n")
    text = reason(certificate, issued, records_dir=results)
    assert text == (f"records: records.jsonl of run {run_dir.name} does not match the "
                    "certificate (edited or replaced)")


def test_missing_run_is_reported(work, issued: Issued, tmp_path: Path) -> None:
    certificate, _ = work
    empty = tmp_path / "empty"
    empty.mkdir()
    assert reason(certificate, issued, records_dir=empty).startswith("records: run ")


def test_a_level_the_records_do_not_support_is_detected(work, issued: Issued) -> None:
    """The center's key signs a statement claiming more than its records show."""
    certificate, results = work
    statement = issued.statement(certificate)
    statement["predicate"]["level"] = {"id": "full", "zh": "完全兼容", "en": "Fully compatible"}
    key = load_private_key(issued.keys / "center.key")
    body = json.dumps(statement, ensure_ascii=False).encode()
    certificate.write_text(json.dumps(dsse.sign(PAYLOAD_TYPE, body, key, fingerprint(
        key.public_key()))))
    assert verify_certificate(certificate, VerifyOptions(issued.pubkey))  # signature alone
    text = reason(certificate, issued, records_dir=results)
    assert text == ("level: recomputed from the records it is 基本兼容 / Compatible with "
                    "limitations; the certificate claims 完全兼容 / Fully compatible")


def test_a_changed_suite_file_is_detected(work, issued: Issued, monkeypatch) -> None:
    certificate, _ = work
    statement = issued.statement(certificate)
    cited = statement["predicate"]["files"]["suites"][0]
    assert cited["package"] == "suites"
    fake_root = certificate.parent / "suites_copy"
    shutil.copytree(REPO / "suites", fake_root, ignore=shutil.ignore_patterns("__pycache__"))
    with open(fake_root / cited["path"], "a") as handle:
        handle.write("\n# changed\n")
    import harness.cert.files as files

    real = files.package_dir
    monkeypatch.setattr(files, "package_dir",
                        lambda name: fake_root if name == "suites" else real(name))
    text = reason(certificate, issued, check_files=True)
    assert text.startswith(f"files: suite file suites:{cited['path']} differs")


def test_expired_and_not_yet_valid(work, issued: Issued) -> None:
    certificate, _ = work
    predicate = issued.statement(certificate)["predicate"]
    expires = datetime.fromisoformat(predicate["expires_at"])
    later = expires + timedelta(seconds=1)
    assert reason(certificate, issued, at=later) == \
        f"expired: the certificate expired on {predicate['expires_at']}"
    earlier = datetime.fromisoformat(predicate["issued_at"]) - timedelta(days=1)
    assert reason(certificate, issued, at=earlier).startswith("not yet valid")
    # the revocation list (30 days) is long stale a year on: validity alone is checked
    assert verify_certificate(certificate, VerifyOptions(issued.pubkey, at=expires,
                                                         check_revocation=False))


def test_revoked_certificate_is_refused(work, issued: Issued) -> None:
    certificate, _ = work
    key = load_private_key(issued.keys / "center.key")
    cid = issued.statement(certificate)["predicate"]["certificate_id"]
    revoke(certificate.parent / REVOCATIONS_FILE, key, "SP-00000000-OTHER", "another one")
    assert verify_certificate(certificate, VerifyOptions(issued.pubkey))
    revoke(certificate.parent / REVOCATIONS_FILE, key, cid, "driver recalled")
    text = reason(certificate, issued)
    assert text.startswith(f"revoked: certificate {cid} was revoked on ")
    assert text.endswith(": driver recalled")


def test_a_revocation_list_from_another_key_is_not_trusted(work, issued: Issued) -> None:
    certificate, _ = work
    lists = certificate.parent / REVOCATIONS_FILE
    write_revocations(lists, {"_type": "https://shipei.dev/revocations/v1", "issuer_keyid": "x",
                              "sequence": 1, "updated_at": None, "revoked": []},
                      Ed25519PrivateKey.generate())
    assert reason(certificate, issued).startswith("revocation: revocation list")
    lists.write_text("{not json")
    assert reason(certificate, issued).startswith("revocation: revocation list")


def _tiny_model(path: Path, op: str) -> None:
    node = helper.make_node(op, ["x"], ["y"])
    graph = helper.make_graph([node], "tiny", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


MODEL_PROFILE = """
name = "model-file-check"
version = "1"
kind = "framework"
title_zh = "模型文件检查"
title_en = "Model file check"
[scopes.full]
title_zh = "完整"
title_en = "Full"
[[criteria]]
id = "model_file"
title_zh = "模型文件"
title_en = "Model file"
suite = "model_file"
thresholds = { full = 1.0, limited = 1.0 }
"""


def test_a_changed_model_file_is_detected(issued: Issued, tmp_path: Path) -> None:
    model = tmp_path / "tiny_relu.onnx"
    _tiny_model(model, "Relu")
    profile = tmp_path / "model-file-check.toml"
    profile.write_text(MODEL_PROFILE, encoding="utf-8")
    run_id = f"modelfile-{datetime.now(UTC):%H%M%S%f}"
    out = shipei("run", "--suite", "model_file", "--model", str(model), "--target",
                 "onnxruntime-cpu", "--run-id", run_id, *issued.locations())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    certificate = issued.certify("--profile", str(profile), "--runs", run_id)
    (cited,) = issued.statement(certificate)["predicate"]["files"]["models"]
    assert (cited["path"], cited["source"]) == (str(model), str(model))
    assert len(cited["sha256"]) == 64
    assert verify_certificate(certificate, VerifyOptions(issued.pubkey, check_files=True))
    _tiny_model(model, "Sigmoid")
    text = reason(certificate, issued, check_files=True)
    assert text == f"files: model file {model} differs from the certified file (sha256)"


def _vendor_run(issued: Issued, name: str) -> Path:
    """A copy of the certified run as if made on another machine (its fingerprint and
    platform id recomputed, so the run itself is consistent)."""
    from harness.results.fingerprint import git_commit, platform_digest

    (source,) = [p for p in issued.results.iterdir() if p.is_dir() and p.name != name
                 and not p.name.startswith(("modelfile-", "vendor-"))]
    copy = issued.results / name
    shutil.copytree(source, copy)
    info = json.loads((copy / "run.json").read_text())
    info["run_id"] = name
    info["git_commit"] = git_commit()  # other work may have landed since the fixture ran
    info["environment"]["cpu_model"] = "Vendor Lab CPU"
    info["environment"]["platform_id"] = platform_digest(info["environment"])
    (copy / "run.json").write_text(json.dumps(info))
    return copy


def test_vendor_lab_evidence_need_not_come_from_this_machine(issued: Issued,
                                                            tmp_path: Path) -> None:
    """The provenance hook the center service uses: runs from a vendor's lab are not
    refused for their platform, and the certificate says where they were made."""
    from harness.cert.certify import issue
    from harness.cert.evidence import EvidenceError
    from harness.cert.profile import load_profile
    from harness.cli.cmd_certify import _target, certify_request

    run_dir = _vendor_run(issued, "vendor-run")
    request, described, files = _target("onnxruntime-cpu")
    key = load_private_key(issued.keys / "center.key")
    certify = certify_request(load_profile("framework"), "representative", request.label,
                              described, files, key, "c", 30, tmp_path / "certs")
    with pytest.raises(EvidenceError, match="was made on another platform"):
        issue(certify, [run_dir])
    with pytest.raises(EvidenceError, match="provenance must be an object"):
        issue(certify, [run_dir], provenance={"source": "elsewhere"})
    provenance = {"source": "vendor", "lab": "ACME lab"}
    done = issue(certify, [run_dir], provenance=provenance)
    predicate = done.statement["predicate"]
    assert predicate["provenance"] == provenance
    assert predicate["platform"]["cpu_model"] == "Vendor Lab CPU"
    assert "vendor lab" in done.page.read_text(encoding="utf-8")
    seen = []

    def chain_check(statement: dict) -> list[str]:
        seen.append(statement["predicate"]["certificate_id"])
        return ["chain: ok"]

    assert not (done.certificate.parent / REVOCATIONS_FILE).exists()  # the API writes none
    no_list = VerifyOptions(issued.pubkey, check_revocation=False)
    lines = verify_certificate(done.certificate, no_list, chain_check=chain_check)
    assert "provenance: evidence from the vendor lab (ACME lab)" in lines
    assert "chain: ok" in lines and seen == [predicate["certificate_id"]]

    def refuse(statement: dict) -> list[str]:
        raise VerificationError("chain: the lab's upload signature does not verify")

    with pytest.raises(VerificationError, match="^chain: the lab"):
        verify_certificate(done.certificate, no_list, chain_check=refuse)
