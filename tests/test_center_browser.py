"""The vendor-to-certificate walk-through, ending in a real browser (Debian's Chromium
driven by Selenium through chromium-driver): a vendor's run is bundled (shipei bundle),
uploaded as the vendor on the upload page (intake), audited (shipei audit), certified
and published (shipei certify --bundle FILE --publish); then the certificate is found by search,
opened and verified in the browser (WebCrypto Ed25519 against the center key, and the
server's re-check), a tampered bundle uploaded in the browser is refused with the
check named, and a page on another port of the same host that posts to the registry with
the vendor's cookie is refused (CSRF). ``SHIPEI_SCREENSHOTS=docs/img`` writes the pages'
screenshots there."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.center_support import (
    Center,
    Server,
    edit_member,
    make_center,
    shared_run,
    shipei,
)

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver)")


@pytest.fixture()
def browser():  # type: ignore[no-untyped-def]
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--lang=zh-CN", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(120)
    driver.implicitly_wait(30)  # elements of a page still loading
    yield driver
    driver.quit()


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SHIPEI_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shot(browser, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole page, not just the window."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(int(height) + 40, 600))
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(path))
    browser.set_window_size(1280, 1000)


def upload_in_browser(browser, server: Server, center: Center, bundle: Path) -> str:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/upload")
    browser.find_element(By.ID, "token").send_keys(center.token)
    browser.find_element(By.ID, "bundle").send_keys(str(bundle))
    scope = browser.find_element(By.ID, "scope")
    scope.clear()
    scope.send_keys("representative")
    browser.find_element(By.ID, "upload-button").click()
    WebDriverWait(browser, 180).until(ready.presence_of_element_located((By.ID, "verdict")))
    return browser.find_element(By.ID, "verdict").text


@pytest.mark.extended
def test_vendor_to_certificate_in_a_real_browser(browser, tmp_path_factory,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = screenshots(tmp_path)
    run_dir = shared_run(tmp_path_factory)  # the vendor's run, made by shipei run
    center = make_center(tmp_path / "center")
    bundle = tmp_path / "acme.tar.gz"
    made = shipei("bundle", run_dir.name, "--key", str(center.vendor_key), "-o", str(bundle),
                  "--results-dir", str(run_dir.parent), "--reports-dir", str(center.reports))
    assert made.returncode == 0, made.stderr
    server = Server(center)
    try:
        browser.get(server.url + "/upload")
        shot(browser, shots / "center-upload.png")
        verdict = upload_in_browser(browser, server, center, bundle)
        assert "Accepted" in verdict, browser.page_source[-3000:]
        shot(browser, shots / "center-intake.png")

        audited = shipei("audit", str(bundle), "--sample", "3", "--db", center.db,
                         *center.loc(), "--report-dir", str(center.reports / "audit"))
        assert audited.returncode == 0, audited.stdout + audited.stderr
        certified = shipei("certify", "--bundle", str(bundle), "--profile", "framework",
                           "--scope",
                           "representative", "--key", str(center.center_key), "--db",
                           center.db, "--results-dir", str(center.results),
                           "--certificates-dir", str(center.reports / "certificates"),
                           "--publish")
        assert certified.returncode == 0, certified.stdout + certified.stderr
        cid = certified.stdout.split("(")[1].split(",")[0]

        browser.get(server.url + "/?vendor=ACME&level=limited")
        links = browser.find_elements(By.CLASS_NAME, "certificate-link")
        assert [link.text for link in links] == [cid]
        shot(browser, shots / "center-search.png")
        links[0].click()
        assert browser.find_element(By.ID, "certificate-id").text == cid
        browser.find_element(By.ID, "verify-button").click()
        result = browser.find_element(By.ID, "verify-result")
        WebDriverWait(browser, 60).until(lambda _: "有效" in result.text or "INVALID" in
                                         result.text)
        text = result.text
        assert "VALID" in text and "INVALID" not in text, text
        assert "Ed25519 signature valid (WebCrypto)" in text
        assert "chain: vendor attestation" in text and "revocation: not revoked" in text
        shot(browser, shots / "center-certificate.png")

        browser.get(server.url + "/targets/onnxruntime-cpu")
        assert browser.find_elements(By.CSS_SELECTOR, "svg.history polyline")
        shot(browser, shots / "center-target.png")

        tampered = tmp_path / "tampered.tar.gz"
        tampered.write_bytes(edit_member(bundle.read_bytes(),
                                         f"runs/{run_dir.name}/records.jsonl",
                                         lambda raw: raw.replace(b'"fail"', b'"pass"', 1)
                                         + b"\n"))
        verdict = upload_in_browser(browser, server, center, tampered)
        assert "Refused" in verdict
        assert browser.find_element(By.ID, "failed-check").text == "digest"
        shot(browser, shots / "center-refusal.png")

        # a page on another port of the same host posts with the vendor's cookie: refused
        with _attacker_page(tmp_path, server.url + "/upload") as attack:
            browser.get(attack)
            WebDriverWait(browser, 60).until(lambda b: b.current_url.startswith(server.url))
            detail = browser.find_element(By.ID, "error-detail").text
        assert detail.startswith("csrf: a form posted from http://127.0.0.1:"), detail
    finally:
        server.kill()


@contextlib.contextmanager
def _attacker_page(tmp_path: Path, target: str) -> Iterator[str]:
    """An auto-submitting form to ``target``, served from another port of 127.0.0.1."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "attacker"
    folder.mkdir()
    (folder / "index.html").write_text(
        f'<form id="f" method="post" action="{target}"><input name="profile" '
        'value="framework"></form><script>document.getElementById("f").submit()</script>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    finally:
        httpd.shutdown()
        httpd.server_close()
