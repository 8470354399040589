"""The registry speaks scenarios: the scenario catalogue (场景清单) whose demands the center's
admin enters, the supply-capability catalogue (供给能力目录) derived from the published
certificates (revoked, expired and unpublished ones left out), and the matching page and
JSON API: every certified chip / framework / configuration that meets a demand with its
evidence, and every one that misses with by how much; the vehicles scenario also asks for
certified IMU and ultrasonic sensors. Ends in a real browser (Chromium through Selenium)
against a real ``shipei serve``.

The certificates are signed by the real code path (evaluate -> statement -> DSSE) from
records that follow the scenario suite's metrics contract (tests/test_scenario_profiles.py).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.center import revocations
from harness.center.certify_bundle import store_certificate
from harness.center.scenarios import DemandError, match, parse_demand, supply
from harness.center.store import Store
from harness.center.web import create_app
from harness.cert.keys import load_private_key
from harness.cert.profile import Profile, load_profile
from tests import cert_support
from tests.center_support import ADMIN_TOKEN, Center, Server, make_center
from tests.test_scenario_profiles import records

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
DRIVER = shutil.which("chromedriver")

SENSOR_PROFILE = {
    "name": "sensor-check", "version": "1", "kind": "sensor",
    "title_zh": "传感器检查", "title_en": "Sensor check",
    "scopes": {"full": {"title_zh": "完整", "title_en": "Full"}},
    "criteria": [{"id": "stream", "title_zh": "数据流", "title_en": "Stream",
                  "suite": "sensors", "thresholds": {"full": 1.0, "limited": 0.5}}],
}
INSPECTION = {"name": "质检产线 A / Inspection line A", "scenario": "inspection",
              "task": "detection", "models": [],
              "requirements": [{"figure": "map50", "value": 0.6},
                               {"figure": "latency_p99_ms", "value": 50}],
              "volume_qps": 20}


def _statement(signer: cert_support.Center, profile: Profile, found: list[dict[str, Any]],
               target: str, device: str, runtime: str, configuration: str = "default",
               kind: str = "framework") -> dict[str, Any]:
    statement = signer.statement(profile, found)
    predicate = statement["predicate"]
    predicate["target"]["label"] = target
    predicate["target"]["identity"] = dict(
        predicate["target"]["identity"], name=target.split(",")[0], kind=kind,
        device=device, runtime=runtime, runtime_version="1.0", configuration=configuration)
    return statement


@dataclass
class Supply:
    center: Center
    store: Store
    ids: dict[str, str]


def _publish(store: Store, signer: cert_support.Center, statements: dict[str, Any],
             published: bool = True) -> dict[str, str]:
    ids = {}
    with store.session() as session:
        for name, statement in statements.items():
            store_certificate(session, statement, signer.sign(statement), None, None,
                              published)
            ids[name] = statement["predicate"]["certificate_id"]
    return ids


@pytest.fixture()
def registry(tmp_path: Path) -> Supply:
    """Three certified NPU configurations for inspection (fast, slow, wrong boxes), an IMU
    sensor, an unpublished and a revoked certificate."""
    center = make_center(tmp_path / "center")
    signer = cert_support.Center(tmp_path / "signer")
    store = Store(center.db)
    inspection = load_profile("scenario-inspection")
    statements = {
        "fast": _statement(signer, inspection, records(), "npu-a", "NPU-A 芯片", "npu-rt"),
        "slow": _statement(signer, inspection, records(
            {"test_detection_yolo": {"latency_p99_ms": 80.0, "latency_p50_ms": 70.0}}),
            "npu-b:int8", "NPU-B 芯片", "npu-rt", "int8"),
        "wrong": _statement(signer, inspection, records(
            {"test_detection_yolo": {"map50": 0.3, "map50_vs_reference": 0.35}}),
            "npu-c", "NPU-C 芯片", "npu-rt"),
        "imu": _statement(signer, Profile.from_dict(SENSOR_PROFILE), [
            {"target": "t", "suite": "sensors", "case": "test_stream", "status": "pass",
             "tags": {}}], "serial-imu,url=socket://imu:5555", "IMU-1", "serial",
            kind="sensor"),
    }
    ids = _publish(store, signer, statements)
    hidden = {"draft": _statement(signer, inspection, records(), "npu-d", "NPU-D", "npu-rt"),
              "revoked": _statement(signer, inspection, records(), "npu-e", "NPU-E",
                                    "npu-rt")}
    ids |= _publish(store, signer, {"draft": hidden["draft"]}, published=False)
    ids |= _publish(store, signer, {"revoked": hidden["revoked"]})
    with store.session() as session:
        revocations.revoke(session, load_private_key(center.center_key), ids["revoked"],
                           "recalled")
    return Supply(center, store, ids)


def test_supply_is_derived_from_valid_published_certificates(registry: Supply) -> None:
    with registry.store.session() as session:
        entries = supply(session)
    ids = registry.ids
    assert {e["certificate_id"] for e in entries} == {ids["fast"], ids["slow"], ids["wrong"],
                                                      ids["imu"]}
    fast = next(e for e in entries if e["certificate_id"] == ids["fast"])
    assert fast["chip"] == "NPU-A 芯片" and fast["framework"] == "npu-rt 1.0"
    assert fast["scenario_fit"] == ("机器视觉工业检测 / Machine-vision industrial inspection: "
                                    "完全适配 / Fits the scenario")
    assert [r["case"] for r in fast["tasks"]["detection"]] == ["test_detection_yolo",
                                                              "test_detection_yolo_int8"]
    assert fast["tasks"]["detection"][0]["figures"]["map50"] == 0.82
    assert [r["case"] for r in fast["tasks"]["asr_zh"]] == ["test_asr_int8_zh", "test_asr_zh"]
    assert set(fast["tasks"]) >= {"detection", "asr_zh", "asr_en", "text", "generation", "ocr",
                                  "vad"}
    wrong = next(e for e in entries if e["certificate_id"] == ids["wrong"])
    assert wrong["level"] == "none" and "不适配 / Does not fit" in wrong["scenario_fit"]


def test_a_demand_is_met_with_evidence_and_missed_by_how_much(registry: Supply) -> None:
    with registry.store.session() as session:
        result = match(parse_demand(INSPECTION), supply(session))
    ids = registry.ids
    assert [c["certificate_id"] for c in result["meets"]] == [ids["fast"]]
    met = result["meets"][0]
    assert met["evidence"]["case"] == "test_detection_yolo"
    assert {c["figure"]: c["value"] for c in met["checks"]} == {
        "map50": 0.82, "latency_p99_ms": 30.5, "volume_qps": pytest.approx(1000 / 21.0)}
    misses = {c["certificate_id"]: c["misses"] for c in result["misses"]}
    assert misses[ids["slow"]] == ["latency_p99_ms = 80, over by 30, 60.0%",
                                   "single-stream rate 14.29/s, short by 5.714/s (28.6%)"]
    assert misses[ids["wrong"]] == ["map50 = 0.3, short by 0.3, 50.0%"]
    slow = next(c for c in result["misses"] if c["certificate_id"] == ids["slow"])
    assert slow["configuration"] == "int8" and slow["chip"] == "NPU-B 芯片"
    assert result["sensors"] == []


def test_a_model_or_a_sensor_the_supply_lacks_is_named(registry: Supply) -> None:
    with registry.store.session() as session:
        entries = supply(session)
    wanted = match(parse_demand(dict(INSPECTION, models=["yolov99"])), entries)
    assert not wanted["meets"]
    assert all(c["misses"] == ["no detection record of model yolov99 on this certificate"]
               for c in wanted["misses"])
    vehicles = match(parse_demand(dict(INSPECTION, scenario="vehicles")), entries)
    assert vehicles["sensors"] == [
        {"sensor": "serial-imu", "certificates": [registry.ids["imu"]]},
        {"sensor": "serial-ultrasonic", "certificates": []}]
    assert not vehicles["meets"]
    fast = next(c for c in vehicles["misses"] if c["certificate_id"] == registry.ids["fast"])
    assert fast["misses"] == ["no published sensor certificate for serial-ultrasonic"]


def test_figures_come_from_the_cited_runs_when_the_registry_holds_them(
        registry: Supply, tmp_path: Path) -> None:
    """A certificate's model table keeps eight figures a case; a record may have more. The
    registry reads them all from the cited run's records when it holds them."""
    from harness.center.models import Record, Run

    figures = {"accuracy_drop": 0.0, "latency_p50_ms": 0.2, "latency_p99_ms": 36.6,
               "perplexity": 21.9, "perplexity_ratio": 1.0, "reference_perplexity": 21.9,
               "token_agreement": 1.0, "tokens_per_s": 379.2, "tpot_ms": 2.18,
               "ttft_ms": 0.52}
    found = records({"test_generation_greedy": figures})
    signer = cert_support.Center(tmp_path / "signer-llm")
    statement = _statement(signer, load_profile("scenario-llm"), found, "npu-f", "NPU-F",
                           "npu-rt")
    statement["predicate"]["runs"][0]["run_id"] = "run-llm"
    (row,) = [r for r in statement["predicate"]["models"]
              if r["case"] == "test_generation_greedy"]
    # a table without the figure: a record with more task figures than the table's eight
    # (or a certificate issued before the table preferred them)
    row["metrics"].pop("ttft_ms")
    demand = parse_demand({"name": "对话 / Dialogue", "scenario": "llm", "task": "generation",
                           "requirements": [{"figure": "ttft_ms", "value": 100}]})
    (cid,) = _publish(registry.store, signer, {"llm": statement}).values()
    with registry.store.session() as session:
        before = match(demand, supply(session))
    (missed,) = [c for c in before["misses"] if c["certificate_id"] == cid]
    assert missed["misses"] == ["ttft_ms not on the certificate"]
    with registry.store.session() as session:
        run = Run(run_id="run-llm", target="npu-f", driver_version="1", runtime="npu-rt",
                  runtime_version="1.0", device="NPU-F", harness_version="0",
                  platform_id="ab" * 32, started_at="", finished_at="")
        session.add(run)
        session.flush()
        session.add(Record(run_pk=run.id, suite="scenarios", case="test_generation_greedy",
                           status="pass", metrics=dict(figures, texts=["a"])))
    with registry.store.session() as session:
        after = match(demand, supply(session))
    (met,) = [c for c in after["meets"] if c["certificate_id"] == cid]
    assert met["checks"][0]["value"] == 0.52


@pytest.mark.parametrize(("change", "message"), [
    ({"scenario": "farming"}, "unknown scenario 'farming'"),
    ({"task": "dance"}, "unknown task 'dance'"),
    ({"requirements": [{"figure": "speed", "value": 1}]}, "unknown figure 'speed'"),
    ({"requirements": [{"figure": "map50", "value": "high"}]}, "map50 must be a number"),
    ({"volume_qps": -3}, "volume_qps must be positive"),
    ({"name": " "}, "name must be 1 to 200 characters"),
    ({"requirements": [], "volume_qps": None}, "needs at least one requirement or a volume"),
])
def test_a_bad_demand_is_refused_with_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(DemandError, match=message):
        parse_demand(dict(INSPECTION, **change))


def test_the_api_enters_and_matches_demands_for_the_admin_only(registry: Supply) -> None:
    app = create_app(registry.store, load_private_key(registry.center.center_key), ADMIN_TOKEN,
                     lambda label: {}, center_name="Test Center")
    client = app.test_client()
    assert client.post("/api/scenarios", json=INSPECTION).status_code == 401
    vendor = {"Authorization": f"Bearer {registry.center.token}"}
    assert client.post("/api/scenarios", json=INSPECTION, headers=vendor).status_code == 403
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    bad = client.post("/api/scenarios", json=dict(INSPECTION, task="dance"), headers=admin)
    assert bad.status_code == 400 and "unknown task 'dance'" in bad.get_json()["detail"]
    made = client.post("/api/scenarios", json=INSPECTION, headers=admin)
    assert made.status_code == 201, made.get_json()
    demand_id = made.get_json()["id"]
    listed = client.get("/api/scenarios").get_json()["demands"]
    assert [d["name"] for d in listed] == [INSPECTION["name"]]
    answer = client.get(f"/api/scenarios/{demand_id}").get_json()
    assert [c["certificate_id"] for c in answer["meets"]] == [registry.ids["fast"]]
    assert len(answer["misses"]) == 2
    page = client.get(f"/scenarios/{demand_id}").get_data(as_text=True)
    assert "供需对接 / Scenario matching" in page and "NPU-A 芯片" in page
    assert "latency_p99_ms = 80, over by 30, 60.0%" in page
    supply_page = client.get("/supply").get_data(as_text=True)
    assert "供给能力目录" in supply_page and registry.ids["revoked"] not in supply_page
    assert client.get("/api/scenarios/999").status_code == 404


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="needs Debian's chromium and chromium-driver (apt-get install "
                           "chromium chromium-driver)")
@pytest.mark.extended
def test_the_admin_enters_a_demand_and_reads_the_match_in_a_real_browser(
        registry: Supply, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--lang=zh-CN", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    registry.store.close()
    server = Server(registry.center)
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    browser.set_page_load_timeout(120)
    browser.implicitly_wait(30)
    shots = Path(os.environ.get("SHIPEI_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(server.url + "/")
        browser.find_element(By.ID, "nav-scenarios").click()
        assert browser.find_element(By.ID, "no-demands").text
        browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
        browser.find_element(By.ID, "name").send_keys(INSPECTION["name"])
        Select(browser.find_element(By.ID, "scenario")).select_by_value("inspection")
        Select(browser.find_element(By.ID, "task")).select_by_value("detection")
        Select(browser.find_element(By.ID, "accuracy_figure")).select_by_value("map50")
        browser.find_element(By.ID, "accuracy_value").send_keys("0.6")
        browser.find_element(By.ID, "latency_p99_ms").send_keys("50")
        browser.find_element(By.ID, "volume_qps").send_keys("20")
        browser.find_element(By.ID, "demand-button").click()
        assert browser.find_element(By.ID, "demand-name").text == INSPECTION["name"]
        assert browser.find_element(By.ID, "meets-count").text == "1"
        (met,) = browser.find_elements(By.CLASS_NAME, "meets-row")
        assert "NPU-A 芯片" in met.text and "test_detection_yolo" in met.text
        assert "完全适配" in met.text
        missed = " ".join(r.text for r in browser.find_elements(By.CLASS_NAME, "miss-row"))
        assert "latency_p99_ms = 80, over by 30, 60.0%" in missed
        assert "map50 = 0.3, short by 0.3, 50.0%" in missed
        browser.save_screenshot(str(shots / "center-scenario-match.png"))
        browser.get(server.url + "/scenarios")
        links = browser.find_elements(By.CLASS_NAME, "demand-link")
        assert [link.text for link in links] == [INSPECTION["name"]]
        browser.find_element(By.ID, "supply-link").click()
        rows = browser.find_elements(By.CLASS_NAME, "supply-row")
        assert len(rows) == 4
        assert "map50=0.82" in browser.find_element(By.ID, "supply").text
        browser.save_screenshot(str(shots / "center-supply.png"))
    finally:
        browser.quit()
        server.kill()
