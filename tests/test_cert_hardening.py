"""Adversarial inputs to certification (issue 16, items 1 to 5), each reproduced on the
real code path: option injection through ``run.json``, registries that would un-revoke,
verification without a revocation list, profiles posing as packaged ones and signed but
malformed predicates. None of them may give a traceback or a certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cert.evidence import EvidenceError, changed_between, check_commit, is_commit_id
from harness.cert.profile import Profile, ProfileError
from tests.cert_support import Center


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    (root / "harness").mkdir(parents=True)
    (root / "harness" / "judge.py").write_text("v1\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "one")
    return root, _git(root, "rev-parse", "HEAD")


@pytest.mark.parametrize("commit", ["--output=VICTIM", "-p", "HEAD", "HEAD~1", "abc",
                                    "g" * 40, "a" * 65, "", "a" * 40 + "\n"])
def test_only_hex_object_ids_are_commits(commit: str) -> None:
    assert not is_commit_id(commit.replace("VICTIM", "x"))


def test_a_git_commit_posing_as_an_option_never_reaches_git(repo, tmp_path: Path) -> None:
    """``"git_commit": "--output=FILE"`` in run.json used to truncate FILE through
    ``git diff`` and the certificate was issued anyway."""
    root, head = repo
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    with pytest.raises(EvidenceError, match="not a git commit id"):
        check_commit("r1", f"--output={victim}", head, ["harness"])
    with pytest.raises(EvidenceError, match="not a git commit id"):
        changed_between(f"--output={victim}", head, ["harness"], root)
    with pytest.raises(EvidenceError, match="not a git commit id"):
        changed_between(head, "--no-index", ["harness"], root)
    assert victim.read_text() == "keep me\n"
    assert changed_between(head[:12], head, ["harness"], root) == []


def test_a_marker_expression_posing_as_an_option_is_refused() -> None:
    data = {"name": "x", "version": "1", "kind": "framework", "title_zh": "x",
            "title_en": "x", "scopes": {"full": {"title_zh": "x", "title_en": "x"},
                                        "sub": {"title_zh": "s", "title_en": "s",
                                                "markexpr": "--basetemp=/etc"}},
            "criteria": [{"id": "c", "title_zh": "c", "title_en": "c", "suite": "operators",
                          "thresholds": {"full": 1.0, "limited": 0.5}}]}
    with pytest.raises(ProfileError, match="not starting with '-'"):
        Profile.from_dict(data)


@pytest.fixture
def center(tmp_path: Path) -> Center:
    return Center(tmp_path / "center")


def _reason(raw_or_path: bytes | Path, center: Center, **options) -> str:
    from harness.cert.verify import VerificationError, VerifyOptions, verify_certificate

    path = raw_or_path
    if isinstance(raw_or_path, bytes):
        path = center.root / "probe.dsse.json"
        path.write_bytes(raw_or_path)
    with pytest.raises(VerificationError) as info:
        verify_certificate(path, VerifyOptions(center.public, **options))
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- item 5: signed but malformed predicates -------------------------------------------

def _drop(key: str):
    return lambda p: p.pop(key)


def _set(key: str, value):
    return lambda p: p.__setitem__(key, value)


MALFORMED = [
    ("truncated criteria", lambda p: p["criteria"].pop(),
     "predicate: the certificate lists criteria ['ops'], the profile defines ['ops', "
     "'contract']"),
    ("bad issued_at", _set("issued_at", "yesterday"),
     "predicate: issued_at and expires_at must be ISO 8601 times"),
    ("issued_at not a string", _set("issued_at", 20260101), "predicate: issued_at: "),
    ("expires before issued", lambda p: p.__setitem__("expires_at", "2000-01-01T00:00:00+00:00"),
     "predicate: expires_at is not after issued_at"),
    ("unknown level", lambda p: p["level"].__setitem__("id", "platinum"), "predicate: level/id: "),
    ("level named otherwise", lambda p: p["level"].__setitem__("zh", "不兼容"),
     "predicate: level 'full' is named 不兼容"),
    ("missing runs", _drop("runs"), "predicate: (top level): 'runs' is a required property"),
    ("no runs", _set("runs", []), "predicate: runs: [] should be non-empty"),
    ("run not an object", _set("runs", ["r1"]), "predicate: runs/0: 'r1' is not of type"),
    ("id escapes a folder", _set("certificate_id", "../../etc/x"), "predicate: certificate_id: "),
    ("blockers not lists", _set("blockers", {"full": "x"}), "predicate: blockers/full: "),
    ("criterion counts", lambda p: p["criteria"][0].__setitem__("passed", -1),
     "predicate: criteria/0/passed: "),
    ("profile edited, sha256 kept",
     lambda p: p["profile"]["definition"].__setitem__("title_en", "x"),
     "predicate: the embedded profile does not match its sha256"),
    ("nested 60 deep", _set("harness", __import__("functools").reduce(
        lambda inner, _: [inner], range(60), 0)), "predicate: predicate is nested more than"),
    ("unknown scope", lambda p: p["scope"].__setitem__("name", "tiny"),
     "predicate: scope 'tiny' is not in the profile"),
]


@pytest.mark.parametrize("change, expected", [(c, e) for _, c, e in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_a_signed_but_malformed_predicate_is_one_line(center: Center, change,
                                                     expected: str) -> None:
    from harness.cert.verify import VerificationError, open_certificate

    statement = center.statement()
    change(statement["predicate"])
    with pytest.raises(VerificationError) as info:
        open_certificate(center.sign(statement), center.public)
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_no_subject_is_refused(center: Center) -> None:
    from harness.cert.verify import VerificationError, open_certificate

    statement = center.statement()
    statement["subject"] = [{"name": "x"}]
    with pytest.raises(VerificationError, match="^predicate: subject must be"):
        open_certificate(center.sign(statement), center.public)


def test_nesting_beyond_the_parsers_limit_is_one_line(center: Center) -> None:
    from harness.cert.statement import encode
    from harness.cert.verify import VerificationError, open_certificate

    statement = center.statement()
    statement["predicate"]["harness"] = "DEEP"
    body = encode(statement).replace(b'"DEEP"', b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(VerificationError, match="^signature: the payload is nested too deeply"):
        open_certificate(center.sign(body), center.public)
    with pytest.raises(VerificationError, match="^signature: the envelope is nested too deeply"):
        open_certificate(b"[" * 200_000 + b"]" * 200_000, center.public)


def test_a_well_formed_statement_opens(center: Center) -> None:
    from harness.cert.verify import open_certificate

    statement = center.statement()
    assert open_certificate(center.sign(statement), center.public) == statement


def test_cli_verify_of_a_malformed_certificate_is_one_line(center: Center, cli) -> None:
    statement = center.statement()
    statement["predicate"]["issued_at"] = "yesterday"
    path = center.write(statement)
    out = cli("cert", "verify", str(path), "--pubkey", str(center.pubkey_file))
    assert out.returncode == 1
    assert out.stderr.strip() == ("shipei cert verify: INVALID: predicate: issued_at and "
                                  "expires_at must be ISO 8601 times")


def _shipei(*args: str) -> subprocess.CompletedProcess:
    import os
    import sys
    import tempfile

    env = dict(os.environ, SHIPEI_STATE_DIR=tempfile.mkdtemp(prefix="state-"))
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=300, check=False, env=env,
                          cwd=Path(__file__).resolve().parent.parent)


# --- item 4: a custom profile posing as a packaged one ----------------------------------

def _posing_framework() -> Profile:
    from harness.cert.profile import load_profile

    definition = dict(load_profile("framework").definition)
    definition["criteria"] = [dict(c, thresholds={k: 0.01 for k in c["thresholds"]})
                              for c in definition["criteria"]]
    return Profile.from_dict(definition)


def test_certify_refuses_a_custom_profile_named_like_a_packaged_one(tmp_path: Path) -> None:
    import tomllib

    from harness.cert.profile import PROFILES_DIR, check_not_posing, load_profile

    text = (PROFILES_DIR / "framework.toml").read_text(encoding="utf-8")
    assert 'thresholds = { full = 0.97, limited = 0.85 }' in text
    posing = tmp_path / "framework.toml"
    posing.write_text(text.replace("full = 0.97, limited = 0.85", "full = 0.01, limited = 0.01"),
                      encoding="utf-8")
    assert tomllib.loads(posing.read_text())["name"] == "framework"
    with pytest.raises(ProfileError, match="is not the packaged profile of that name"):
        check_not_posing(load_profile(posing))
    check_not_posing(load_profile(PROFILES_DIR / "framework.toml"))  # the packaged file itself
    check_not_posing(load_profile("framework"))
    out = _shipei("certify", "--target", "onnxruntime-cpu", "--profile", str(posing),
                  "--key", str(tmp_path / "none.key"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is not the packaged profile of that name" in out.stderr.strip().splitlines()[-1]


def test_verify_refuses_a_certificate_whose_profile_poses_as_a_packaged_one(
        center: Center) -> None:
    path = center.write(center.statement(_posing_framework()))
    start_revocation_list(center)
    text = _reason(path, center)
    version = _posing_framework().version
    assert text.startswith(f"profile: the certificate's profile 'framework' v{version} is not "
                           "the packaged profile of that name (its sha256 differs")


def test_a_custom_profile_is_stated_as_custom_on_verify_and_page(center: Center) -> None:
    from harness.cert.page import render_certificate
    from harness.cert.verify import VerifyOptions, verify_certificate

    statement = center.statement()
    assert statement["predicate"]["profile"]["origin"] == "custom"
    path = center.write(statement)
    lines = verify_certificate(path, VerifyOptions(center.public, check_revocation=False))
    assert "profile: CUSTOM profile 'hardening-check' v1, not a packaged Shipei profile" in \
        " ".join(lines)
    page = render_certificate(statement, center.keyid)
    assert "自定义认证规范" in page and "Custom profile" in page
    statement["predicate"]["profile"]["origin"] = "packaged"
    claimed = center.write(statement, center.root / "claimed")
    assert _reason(claimed, center, check_revocation=False).startswith(
        "profile: the certificate says its profile is packaged; it is custom")


def test_a_packaged_profile_is_recognised(center: Center) -> None:
    from harness.cert.page import render_certificate
    from harness.cert.profile import load_profile
    from harness.cert.verify import VerifyOptions, verify_certificate

    statement = center.statement(load_profile("framework"))
    path = center.write(statement)
    lines = verify_certificate(path, VerifyOptions(center.public, check_revocation=False))
    version = statement["predicate"]["profile"]["version"]
    assert f"profile: packaged framework v{version} (sha256 matches the released profile)" \
        in lines
    assert "自定义认证规范" not in render_certificate(statement, center.keyid)


def start_revocation_list(center: Center) -> None:
    """An empty signed revocation list beside the center's certificates."""
    from harness.cert.revocation import REVOCATIONS_FILE, ensure_list

    ensure_list(center.certs / REVOCATIONS_FILE, center.key)


# --- item 2: publishing never un-revokes ------------------------------------------------

@pytest.fixture
def cli(capsys, monkeypatch, tmp_path: Path):
    """``shipei ARGS`` in this process (the commands under test, without the start-up cost
    of a new interpreter); returns its exit status, stdout and stderr."""
    import signal
    from types import SimpleNamespace

    from harness.cli.main import main

    monkeypatch.setenv("SHIPEI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    # no center database: the list file is the master (never the checkout's center/)
    monkeypatch.delenv("SHIPEI_DB", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def _index(registry: Path) -> dict[str, str]:
    import json

    data = json.loads((registry / "index.json").read_text(encoding="utf-8"))
    return {e["id"]: e["status"] for e in data["certificates"]}


def test_publishing_never_lifts_a_revocation(center: Center, tmp_path: Path, cli) -> None:
    import shutil

    from harness.cert.revocation import REVOCATIONS_FILE, write_revocations

    registry = tmp_path / "registry"
    pub = ["--registry", str(registry), "--pubkey", str(center.pubkey_file)]
    a, b, c = (center.write(center.statement()) for _ in range(3))
    ids = [p.name.removesuffix(".dsse.json") for p in (a, b, c)]
    assert cli("cert", "publish", str(a), str(b), *pub).returncode == 0
    out = cli("cert", "revoke", ids[0], "--reason", "recalled", "--key",
                  str(center.root / "keys" / "center.key"), "--certificates-dir",
                  str(center.certs), "--registry", str(registry))
    assert out.returncode == 0, out.stderr
    assert _index(registry) == {ids[0]: "revoked", ids[1]: "valid"}
    list_1 = (center.certs / REVOCATIONS_FILE).read_bytes()

    # another certificate published from a folder without a list: A stays revoked
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(b, elsewhere)
    assert cli("cert", "publish", str(elsewhere / b.name), *pub).returncode == 0
    assert _index(registry)[ids[0]] == "revoked"

    # the revoked certificate itself, copied elsewhere, is not published as valid
    shutil.copy(a, elsewhere)
    out = cli("cert", "publish", str(elsewhere / a.name), *pub)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"certificate {ids[0]} was revoked on" in out.stderr and "not published" in out.stderr
    assert _index(registry)[ids[0]] == "revoked"

    # an older copy of the list beside a certificate does not replace the registry's newer
    out = cli("cert", "revoke", ids[1], "--reason", "second", "--key",
                  str(center.root / "keys" / "center.key"), "--certificates-dir",
                  str(center.certs), "--registry", str(registry))
    assert out.returncode == 0, out.stderr
    old = tmp_path / "old"
    old.mkdir()
    (old / REVOCATIONS_FILE).write_bytes(list_1)
    shutil.copy(c, old)
    assert cli("cert", "publish", str(old / c.name), *pub).returncode == 0
    assert _index(registry) == {ids[0]: "revoked", ids[1]: "revoked", ids[2]: "valid"}

    # a newer list signed by the center that drops a revocation is refused
    write_revocations(old / REVOCATIONS_FILE, {
        "_type": "https://shipei.dev/revocations/v1", "issuer_keyid": center.keyid,
        "sequence": 99, "updated_at": None, "next_update": "2999-01-01T00:00:00+00:00",
        "revoked": []}, center.key)
    out = cli("cert", "publish", str(old / c.name), *pub)
    assert out.returncode == 2 and "a revocation is never lifted" in out.stderr
    assert _index(registry) == {ids[0]: "revoked", ids[1]: "revoked", ids[2]: "valid"}


def test_pages_show_a_revocation(center: Center, tmp_path: Path, cli) -> None:
    """After 'cert revoke', the page beside the certificate, the registry's copy and a
    page rendered again with 'cert page' all say 已吊销 / REVOKED, not only the index."""
    path = center.write(center.statement())
    cid = path.name.removesuffix(".dsse.json")
    pub = ["--pubkey", str(center.pubkey_file)]
    registry = tmp_path / "registry"
    assert cli("cert", "page", str(path), *pub).returncode == 0
    page = path.with_name(f"{cid}.html")
    assert "已吊销" not in page.read_text(encoding="utf-8")
    assert cli("cert", "publish", str(path), *pub, "--registry", str(registry)).returncode == 0
    out = cli("cert", "revoke", cid, "--reason", "驱动召回 / driver recalled", "--key",
              str(center.root / "keys" / "center.key"), "--certificates-dir", str(center.certs),
              "--registry", str(registry))
    assert out.returncode == 0, out.stderr
    for shown in (page, registry / "certificates" / f"{cid}.html"):
        text = shown.read_text(encoding="utf-8")
        assert "本证书已被吊销" in text and "REVOKED" in text and "driver recalled" in text
    again = tmp_path / "again.html"
    assert cli("cert", "page", str(path), *pub, "-o", str(again)).returncode == 0
    assert "本证书已被吊销" in again.read_text(encoding="utf-8")


# --- item 3: verification fails closed on revocation ------------------------------------

def test_verify_without_a_revocation_list_fails_unless_told(center: Center, cli) -> None:
    from harness.cert.verify import VerifyOptions, verify_certificate

    path = center.write(center.statement())
    assert _reason(path, center).startswith("revocation: no revocation list (revocations."
                                            "dsse.json beside the certificate or one folder "
                                            "up); pass --revocations FILE, or "
                                            "--no-revocation-check")
    lines = verify_certificate(path, VerifyOptions(center.public, check_revocation=False))
    assert "revocation: NOT CHECKED (--no-revocation-check)" in lines
    pub = ["--pubkey", str(center.pubkey_file)]
    out = cli("cert", "verify", str(path), *pub)
    assert out.returncode == 1 and out.stderr.startswith(
        "shipei cert verify: INVALID: revocation: no revocation list")
    out = cli("cert", "verify", str(path), *pub, "--no-revocation-check")
    assert out.returncode == 0 and "revocation: NOT CHECKED" in out.stdout


def test_a_stale_or_rolled_back_revocation_list_is_refused(center: Center, tmp_path: Path,
                                                          cli) -> None:
    from datetime import UTC, datetime, timedelta

    from harness.cert.revocation import REVOCATIONS_FILE, SeenSequences, renew
    from harness.cert.verify import VerifyOptions, verify_certificate

    path = center.write(center.statement())
    listed = center.certs / REVOCATIONS_FILE
    first = renew(listed, center.key, days=7)
    assert first["sequence"] == 1 and "next_update" in first
    copy_1 = listed.read_bytes()
    later = datetime.now(UTC) + timedelta(days=8)
    assert _reason(path, center, at=later).startswith(
        "revocation: list #1 is stale: a newer one was due on ")
    seen = SeenSequences(tmp_path / "state" / "seen.json")
    renew(listed, center.key)
    assert verify_certificate(path, VerifyOptions(center.public, seen=seen))
    assert seen.get(center.keyid) == 2
    listed.write_bytes(copy_1)  # someone serves the older list
    assert _reason(path, center, seen=seen).startswith(
        "revocation: the list is #1, older than #2 already seen")
    assert _reason(path, center, min_sequence=2).startswith("revocation: the list is #1")
    out = cli("cert", "verify", str(path), "--pubkey", str(center.pubkey_file),
              "--min-sequence", "5")
    assert out.returncode == 1 and "older than #5 already seen" in out.stderr


def test_a_signed_list_with_malformed_entries_is_one_line(center: Center) -> None:
    from harness.cert.revocation import REVOCATIONS_FILE, write_revocations

    path = center.write(center.statement())
    base = {"_type": "https://shipei.dev/revocations/v1", "issuer_keyid": center.keyid,
            "sequence": 1, "updated_at": None, "next_update": "2999-01-01T00:00:00+00:00"}
    for revoked, expected in (
            (["SP-1"], "payload: revoked/0: 'SP-1' is not of type 'object'"),
            ([{"certificate_id": "SP-1"}], "payload: revoked/0: 'reason' is a required"),
            ("SP-1", "payload: revoked: 'SP-1' is not of type 'array'")):
        write_revocations(center.certs / REVOCATIONS_FILE, {**base, "revoked": revoked},
                          center.key)
        text = _reason(path, center)
        assert text.startswith("revocation: revocation list ") and expected in text, text
    write_revocations(center.certs / REVOCATIONS_FILE,
                      {**base, "revoked": [], "next_update": "soon"}, center.key)
    assert "next_update 'soon' is not an ISO time" in _reason(path, center)


def test_forked_revocation_lists_are_refused() -> None:
    from harness.cert.revocation import RevocationError, newer_list

    def listed(sequence: int, *ids: str) -> dict:
        return {"sequence": sequence, "revoked": [{"certificate_id": i, "reason": "r",
                                                   "revoked_at": "t"} for i in ids]}

    assert newer_list(listed(2, "A"), listed(1, "A")) == listed(2, "A")  # an older copy
    assert newer_list(listed(1, "A"), listed(2, "A", "B")) == listed(2, "A", "B")
    with pytest.raises(RevocationError, match="a revocation is never lifted"):
        newer_list(listed(1, "A"), listed(2, "B"))
    with pytest.raises(RevocationError, match="the lists have forked"):
        newer_list(listed(3, "A"), listed(2, "A", "B"))
    with pytest.raises(RevocationError, match="two different revocation lists carry"):
        newer_list(listed(2, "A"), listed(2, "A", "B"))


def test_cert_revocations_shows_and_renews_the_list(center: Center, cli) -> None:
    args = ["cert", "revocations", "--certificates-dir", str(center.certs), "--pubkey",
            str(center.pubkey_file), "--registry", str(center.root / "no-registry")]
    out = cli(*args)
    assert out.returncode == 2 and "no revocation list at" in out.stderr
    key = ["--key", str(center.root / "keys" / "center.key")]
    out = cli(*args, *key, "--renew", "--days", "7")
    assert out.returncode == 0, out.stderr
    assert "list #1, updated " in out.stdout and ", 0 revoked" in out.stdout
    out = cli(*args, *key, "--renew")
    assert out.returncode == 0 and "list #2" in out.stdout
    assert cli(*args).stdout.startswith("list #2, updated ")
    out = cli(*args, *key, "--renew", "--days", "0")
    assert out.returncode == 2 and "between 1 and 366 days, not 0" in out.stderr
