"""The certificate commands end to end, as a center uses them: keys init, certify
onnxruntime-cpu (framework profile, representative scope), verify with the public
key and the records, the bilingual page in headless Chromium, publish, revoke,
verify fails with "revoked"; and the refusals, each one line with exit status 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: verify remembers revocation-list sequences here, never in the user's home
STATE_DIR = tempfile.mkdtemp(prefix="shipei-state-")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


def shipei(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=600, check=False,
                          env=dict(os.environ, PYTHONUNBUFFERED="1",
                                   SHIPEI_STATE_DIR=STATE_DIR))


def error_line(out: subprocess.CompletedProcess) -> str:
    """The one line a refusal prints (other lines are warnings from unrelated plugins)."""
    lines = [line for line in out.stderr.splitlines() if "warning:" not in line]
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


class Center:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        self.results = root / "results"
        self.reports = root / "reports"
        self.certs = root / "reports" / "certificates"
        self.registry = root / "registry"

    def loc(self) -> list[str]:
        return ["--results-dir", str(self.results), "--reports-dir", str(self.reports)]

    def certify(self, *args: str) -> subprocess.CompletedProcess:
        return shipei("certify", "--key", str(self.keys / "center.key"),
                      "--certificates-dir", str(self.certs), *self.loc(), *args)


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Center:
    state = Center(tmp_path_factory.mktemp("center"))
    out = shipei("keys", "init", "--dir", str(state.keys), "--name", "测试中心 / Test Center")
    assert out.returncode == 0, out.stderr
    state.keys_stdout = out.stdout
    out = state.certify("--target", "onnxruntime-cpu", "--profile", "framework",
                        "--scope", "representative")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    state.certify_stdout = out.stdout
    (state.certificate,) = state.certs.glob("SP-*.dsse.json")
    state.cid = state.certificate.name.removesuffix(".dsse.json")
    (state.run_dir,) = [p for p in state.results.iterdir() if p.is_dir()]
    return state


def test_keys_are_private_and_never_overwritten(center: Center, tmp_path: Path) -> None:
    private = center.keys / "center.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "PRIVATE" not in center.keys_stdout
    secret = private.read_text().splitlines()[1]
    assert secret not in center.keys_stdout
    fingerprint_line = next(line for line in center.keys_stdout.splitlines()
                            if line.startswith("fingerprint:"))
    shown = shipei("keys", "show", "--dir", str(center.keys))
    assert fingerprint_line in shown.stdout
    again = shipei("keys", "init", "--dir", str(center.keys))
    assert again.returncode == 2 and "already exists" in error_line(again)
    other = tmp_path / "keys"
    assert shipei("keys", "init", "--dir", str(other)).returncode == 0
    forced = shipei("keys", "init", "--dir", str(other), "--force")
    assert forced.returncode == 0
    assert stat.S_IMODE((other / "center.key").stat().st_mode) == 0o600
    (other / "center.key").chmod(0o644)
    loose = shipei("certify", "--target", "onnxruntime-cpu", "--profile", "framework",
                   "--key", str(other / "center.key"))
    assert loose.returncode == 2 and "chmod 600" in error_line(loose)


def test_certify_reports_the_computed_level(center: Center) -> None:
    """The representative scope caps the level at 基本兼容; the core operators it ran pass
    on onnxruntime-cpu, so that is the level."""
    assert "level:       基本兼容 / Compatible with limitations (scope representative)" \
        in center.certify_stdout
    assert re.search(r"core_operators\s+operators\s+\d+/\d+ = ", center.certify_stdout)
    for criterion in ("all_operators", "model_accuracy", "latency_measured", "driver_contract"):
        assert re.search(rf"^  {criterion} ", center.certify_stdout, re.M), criterion


def test_verify_with_public_key_and_records(center: Center) -> None:
    out = shipei("cert", "verify", str(center.certificate), "--pubkey",
                 str(center.keys / "center.pub"), "--records", str(center.results),
                 "--check-files")
    assert out.returncode == 0, out.stderr
    assert f"certificate {center.cid} is valid: 基本兼容 / Compatible with limitations" \
        in out.stdout
    assert "level: recomputed from the records" in out.stdout


def test_page_is_bilingual_self_contained_and_a4(center: Center) -> None:
    page = (center.certs / f"{center.cid}.html").read_text(encoding="utf-8")
    for text in ("兼容性认证证书", "Compatibility Certificate", "基本兼容",
                 "Compatible with limitations", center.cid, "SHA256:", "@page { size: A4",
                 "判定标准 / Criteria", "模型 / Models", "时延 / Latency", "测试中心"):
        assert text in page, text
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:|url\(\s*["']?https?:""", page)


def _chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _has_cjk_font() -> bool:
    fc_list = shutil.which("fc-list")
    if not fc_list:
        return False
    out = subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True, check=False)
    return bool(out.stdout.strip())


def _screenshot(chromium: str, page: Path, png: Path, profile: Path, size: str) -> None:
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                    f"--screenshot={png}", f"--window-size={size}", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert png.exists(), f"chromium wrote no screenshot of {page}"


@pytest.mark.extended
def test_page_renders_in_headless_chromium_with_chinese(center: Center, tmp_path: Path) -> None:
    from PIL import Image, ImageChops

    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium fonts-noto-cjk)")
    if not _has_cjk_font():
        pytest.skip("no CJK font is installed (apt-get install fonts-noto-cjk)")
    png = tmp_path / "certificate.png"
    _screenshot(chromium, center.certs / f"{center.cid}.html", png, tmp_path / "p1",
                "1240,1754")
    with Image.open(png) as image:
        assert image.size == (1240, 1754)
        grey = image.convert("L")
        dark = sum(grey.histogram()[:128]) / (grey.width * grey.height)
    assert 0.01 < dark < 0.5, f"the page looks blank or black ({dark:.1%} dark pixels)"
    # two different Chinese characters must render as two different glyphs, not as the
    # same "missing glyph" box
    shots = []
    for char in ("兼", "容"):
        html = tmp_path / f"{ord(char)}.html"
        html.write_text(f'<html><body style="margin:0;font:160px/1 sans-serif">{char}'
                        "</body></html>", encoding="utf-8")
        shot = tmp_path / f"{ord(char)}.png"
        _screenshot(chromium, html, shot, tmp_path / f"p{ord(char)}", "200,200")
        shots.append(Image.open(shot).convert("L"))
    assert ImageChops.difference(*shots).getbbox() is not None


@pytest.mark.extended
def test_pdf_of_the_page(center: Center, tmp_path: Path) -> None:
    weasyprint = pytest.importorskip("weasyprint",
                                     reason="PDF output needs weasyprint (shipei[pdf])")
    if not _has_cjk_font():
        pytest.skip("no CJK font is installed (apt-get install fonts-noto-cjk)")
    pdf, page = tmp_path / "certificate.pdf", tmp_path / "page.html"
    out = shipei("cert", "page", str(center.certificate), "--pubkey",
                 str(center.keys / "center.pub"), "-o", str(page), "--pdf", str(pdf))
    assert out.returncode == 0, out.stderr
    assert pdf.read_bytes().startswith(b"%PDF-")
    document = weasyprint.HTML(string=page.read_text(encoding="utf-8")).render()
    document.write_pdf()
    a4 = (210 / 25.4 * 96, 297 / 25.4 * 96)  # CSS pixels
    assert all(p.width == pytest.approx(a4[0]) and p.height == pytest.approx(a4[1])
               for p in document.pages)
    fonts = [bytes(f.name).decode(errors="replace") for f in document.fonts.values()]
    assert any(family in name for name in fonts for family in _cjk_families()), fonts


def _cjk_families() -> set[str]:
    """Installed font families with Chinese glyphs, as PDF font names spell them."""
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True,
                         check=False).stdout
    return {family.strip().replace(" ", "-") for line in out.splitlines()
            for family in line.split(",") if family.strip()}


def test_publish_revoke_and_verify_fails_with_revoked(center: Center) -> None:
    pub = str(center.keys / "center.pub")
    out = shipei("cert", "publish", str(center.certificate), "--registry",
                 str(center.registry), "--pubkey", pub)
    assert out.returncode == 0, out.stderr
    index = json.loads((center.registry / "index.json").read_text())
    (entry,) = index["certificates"]
    assert (entry["id"], entry["vendor"], entry["target"], entry["level"], entry["status"]) \
        == (center.cid, "Microsoft", "onnxruntime-cpu", "limited", "valid")
    for relative in (entry["certificate"], entry["page"], "center.pub", "index.html"):
        assert (center.registry / relative).is_file(), relative
    html = (center.registry / "index.html").read_text(encoding="utf-8")
    assert center.cid in html and 'id="q"' in html and 'id="level"' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)
    published = center.registry / entry["certificate"]
    assert shipei("cert", "verify", str(published), "--pubkey", pub).returncode == 0

    out = shipei("cert", "revoke", center.cid, "--reason", "driver recalled by vendor",
                 "--key", str(center.keys / "center.key"), "--certificates-dir",
                 str(center.certs), "--registry", str(center.registry))
    assert out.returncode == 0, out.stderr
    index = json.loads((center.registry / "index.json").read_text())
    assert index["certificates"][0]["status"] == "revoked"
    for where in (center.certificate, published):
        out = shipei("cert", "verify", str(where), "--pubkey", pub, "--records",
                     str(center.results))
        assert out.returncode == 1
        line = out.stderr.strip()
        assert line.startswith("shipei cert verify: INVALID: revoked: certificate "
                               f"{center.cid} was revoked on ")
        assert line.endswith("driver recalled by vendor") and "\n" not in line
    again = shipei("cert", "revoke", center.cid, "--reason", "x", "--key",
                   str(center.keys / "center.key"), "--certificates-dir", str(center.certs))
    assert again.returncode == 2 and "already revoked" in error_line(again)
    unknown = shipei("cert", "revoke", "SP-19700101-NOPE", "--reason", "x", "--key",
                     str(center.keys / "center.key"), "--certificates-dir", str(center.certs))
    assert unknown.returncode == 2 and "no certificate SP-19700101-NOPE" in error_line(unknown)


def _copy_run(center: Center, name: str, edit) -> str:  # noqa: ANN001 - edit(run_info)
    copy = center.results / name
    shutil.copytree(center.run_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    info["run_id"] = name
    edit(info)
    (copy / "run.json").write_text(json.dumps(info))
    return name


def test_certify_refuses_runs_that_do_not_fit(center: Center) -> None:
    run_id = center.run_dir.name
    base = ["--target", "onnxruntime-cpu", "--profile", "framework"]
    cases = [
        (["--scope", "full", "--runs", run_id],
         f"run {run_id} selected cases with -m representative; scope 'full' needs no "
         "selection (every case)"),
        (["--scope", "representative", "--runs", _copy_run(
            center, "other-runtime",
            lambda i: i["targets"]["onnxruntime-cpu"].update(runtime_version="1.0.0"))],
         "run other-runtime was made with runtime_version '1.0.0'; the target being "
         "certified has"),
        (["--scope", "representative", "--runs", _copy_run(
            center, "edited-platform", lambda i: i["environment"].update(kernel="9.9"))],
         "run edited-platform: its environment does not hash to its platform_id"),
        (["--scope", "representative", "--runs", _copy_run(
            center, "unfinished", lambda i: i.update(exit_status=None))],
         "run unfinished did not finish"),
    ]
    for args, expected in cases:
        out = center.certify(*base, *args)
        assert out.returncode == 2, out.stdout
        assert error_line(out).startswith(f"shipei certify: error: cannot certify: {expected}")
    renamed = center.results / "renamed"
    shutil.copytree(center.run_dir, renamed)
    out = center.certify(*base, "--scope", "representative", "--runs", "renamed")
    assert "run folder renamed holds run" in error_line(out)
    out = center.certify("--target", "onnxruntime-cpu,intra_op_threads=1", "--profile",
                         "framework", "--scope", "representative", "--runs", run_id)
    assert "has no target 'onnxruntime-cpu,intra_op_threads=1'" in error_line(out)


@pytest.mark.parametrize("args, expected", [
    (["--profile", "sensor", "--runs", "RUN"], "profile 'sensor' certifies sensor targets"),
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "framework", "--scope", "tiny"], "has no scope 'tiny'"),
    (["--profile", "framework", "--valid-days", "9999"], "--valid-days must be between 1"),
    (["--profile", "framework", "--runs", "no-such-run"], "no run 'no-such-run'"),
])
def test_certify_usage_errors(center: Center, args: list[str], expected: str) -> None:
    args = [center.run_dir.name if a == "RUN" else a for a in args]
    out = center.certify("--target", "onnxruntime-cpu", *args)
    assert out.returncode == 2
    assert expected in error_line(out)


def test_verify_usage_errors(center: Center, tmp_path: Path) -> None:
    out = shipei("cert", "verify", str(center.certificate), "--pubkey", str(tmp_path / "x"))
    assert out.returncode == 2 and "does not exist" in error_line(out)
    out = shipei("cert", "verify", str(tmp_path / "none.dsse.json"), "--pubkey",
                 str(center.keys / "center.pub"))
    assert out.returncode == 2 and "does not exist" in error_line(out)


def test_publish_refuses_foreign_certificates_and_registries(center: Center,
                                                            tmp_path: Path) -> None:
    from harness.cert.keys import init_keys

    other, _ = init_keys(tmp_path / "other", "other center")
    out = shipei("cert", "publish", str(center.certificate), "--registry",
                 str(tmp_path / "reg"), "--pubkey", str(other.public))
    assert out.returncode == 2
    assert "not published: signature: no signature by key" in error_line(out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text(json.dumps(
        {"schema_version": "1.0", "issuer": {"keyid": "ab" * 32}, "certificates": []}))
    out = shipei("cert", "publish", str(center.certificate), "--registry", str(foreign),
                 "--pubkey", str(center.keys / "center.pub"))
    assert out.returncode == 2 and "belongs to key abababab" in error_line(out)
    assert json.loads((foreign / "index.json").read_text())["certificates"] == []


def test_certify_refuses_a_git_commit_that_poses_as_an_option(center: Center,
                                                             tmp_path: Path) -> None:
    """issue 16.1: ``"git_commit": "--output=FILE"`` in run.json used to truncate FILE
    through ``git diff`` and the certificate was issued anyway."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    run_id = _copy_run(center, "injected", lambda i: i.update(git_commit=f"--output={victim}"))
    out = center.certify("--target", "onnxruntime-cpu", "--profile", "framework", "--scope",
                         "representative", "--runs", run_id)
    assert out.returncode == 2
    assert error_line(out) == (
        f"shipei certify: error: cannot certify: run injected records git_commit "
        f"'--output={str(victim)[:31]}', which is not a git commit id (7 to 64 hex digits); "
        "refusing the run")
    assert victim.read_text() == "keep me\n"


def test_representative_scope_says_what_it_does_not_measure(center: Center) -> None:
    """issue 18.3: the subset scope selects no contract or performance case; certify says
    so instead of claiming to run them."""
    out = center.certify_stdout
    assert "certify: running cases marked -m representative in " in out
    (line,) = [s for s in out.splitlines() if s.startswith("not measured: ")]
    assert "contract" in line and "performance" in line and "scope representative" in line


def test_a_not_compatible_certificate_exits_1_and_says_so(center: Center) -> None:
    """issue 18.3: a 不兼容 certificate is written, its page says so prominently, and certify
    exits 1 with the level printed."""
    from harness.results.fingerprint import git_commit

    name = "all-failed"
    copy = center.results / name
    shutil.copytree(center.run_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    # this checkout's commit: other work may have landed since the fixture's run was made
    info.update(run_id=name, git_commit=git_commit())
    (copy / "run.json").write_text(json.dumps(info))
    lines = []
    for text in (copy / "records.jsonl").read_text().splitlines():
        record = json.loads(text)
        if record["suite"] == "operators":
            record.update(status="fail", as_expected=False)
        lines.append(json.dumps(record))
    (copy / "records.jsonl").write_text("\n".join(lines) + "\n")
    before = set(center.certs.glob("SP-*.dsse.json"))
    out = center.certify("--target", "onnxruntime-cpu", "--profile", "framework", "--scope",
                         "representative", "--runs", name)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "level:       不兼容 / Not compatible" in out.stdout
    assert "the certificate says 不兼容 / Not compatible" in out.stdout
    (new,) = set(center.certs.glob("SP-*.dsse.json")) - before
    page = new.with_name(new.name.replace(".dsse.json", ".html")).read_text(encoding="utf-8")
    assert "This certificate states NOT COMPATIBLE" in page and "本证书认定：不兼容" in page
    assert "why not 基本兼容 / Compatible with limitations" in page


def test_performance_options_are_checked_against_the_profile(center: Center) -> None:
    base = ["--target", "onnxruntime-cpu", "--profile", "framework"]
    out = center.certify(*base, "--perf-min-queries", "10")
    assert out.returncode == 2
    from harness.cert.profile import load_profile

    version = load_profile("framework").version
    assert error_line(out) == ("shipei certify: error: --perf-min-queries must be at least 64 "
                               f"(profile framework v{version}), not 10")
    out = center.certify(*base, "--perf-min-duration", "nan")
    assert out.returncode == 2 and "--perf-min-duration must be at least 10" in error_line(out)
    out = center.certify(*base, "--perf-min-queries", "100", "--runs", center.run_dir.name)
    assert out.returncode == 2 and "not to --runs" in error_line(out)


def test_page_discloses_what_computed_the_numbers_and_the_drivers_adaptations(
        center: Center) -> None:
    """A simulator computing through another runtime, a scalar fed as a one-element
    tensor: what the driver declares in its capabilities is on the page."""
    import base64
    import copy

    from harness.cert.page import render_certificate

    envelope = json.loads((center.certs / f"{center.cid}.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    page = render_certificate(statement, "k" * 64)
    # onnxruntime-cpu declares the raw-bits exchange of types numpy cannot hand over
    assert "驱动适配 / Driver adaptations" in page and "raw bits" in page
    statement["predicate"]["target"]["capabilities"]["extra"].pop("adaptations")
    page = render_certificate(statement, "k" * 64)
    assert "Computed by" not in page and "Driver adaptations" not in page
    disclosed = copy.deepcopy(statement)
    disclosed["predicate"]["target"]["capabilities"] = {"extra": {
        "computed_by": "onnxruntime 1.20.1 on the host CPU (NPU simulator)",
        "adaptations": ["0-d input 'k' fed as a 1-element Mat"]}}
    page = render_certificate(disclosed, "k" * 64)
    assert "实际计算者 / Computed by" in page
    assert "onnxruntime 1.20.1 on the host CPU (NPU simulator)" in page
    assert "驱动适配 / Driver adaptations" in page and "1-element Mat" in page
    assert "Lab place" not in page
    placed = copy.deepcopy(statement)
    placed["predicate"]["target"]["identity"]["place"] = {
        "place": "k230-03", "exporter_host": "rack2", "resource": "NetworkSerialPort"}
    page = render_certificate(placed, "k" * 64)
    assert "实验室位置 / Lab place" in page and "k230-03" in page and "rack2" in page
