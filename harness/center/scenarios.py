"""The registry speaks scenarios: the scenario catalogue (场景清单), the supply-capability
catalogue (供给能力目录) and the matching between them (供需对接).

- A **demand** is what the center's admin enters for a scenario of the plan: the task
  (detection, speech recognition, ...), optionally the models asked for, floors and
  ceilings on the task's figures (accuracy, latency) and a volume (queries per second).
- The **supply** is derived from the published certificates, never typed in: each valid
  certificate (published, not revoked, not expired) is one certified chip / framework /
  configuration, with the task figures of its records (the cited runs' records where the
  registry holds them, else the signed model table's rows; for a scenario profile, also
  its scenario fit). Sensor certificates are the supply
  of a scenario's required sensors (the vehicles scenario's IMU and ultrasonic radar).
- **Matching** a demand goes through every supply entry: one that has the task and meets
  every requirement is listed with its evidence (certificate, case, figures); one that
  misses is listed with each requirement it misses and by how much.

The volume is compared with the single-stream rate one instance sustains,
``1000 / latency_p50_ms`` of the task: an estimate from one stream, and said so.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.center import revocations
from harness.center.models import Certificate, Run, ScenarioDemand, Vendor
from harness.cert.profile import ProfileError, level_label, load_profile
from harness.cert.scenario_fit import SCENARIOS, fit_label, scenario_of

AT_LEAST, AT_MOST = "at_least", "at_most"
MAX_NAME, MAX_NOTE, MAX_MODELS = 200, 2000, 20


class DemandError(ValueError):
    """A demand that cannot be entered; the message is one line."""


@dataclass(frozen=True)
class Task:
    zh: str
    en: str
    #: case-name patterns of the task's records (scenario and models suites)
    cases: tuple[str, ...]


TASKS: dict[str, Task] = {
    "detection": Task("目标检测", "Object detection", ("test_detection_*",)),
    "asr_zh": Task("中文语音识别", "Chinese speech recognition",
                   ("test_asr_zh*", "test_asr_*_zh")),
    "asr_en": Task("英文语音识别", "English speech recognition",
                   ("test_asr_en*", "test_asr_*_en")),
    "text": Task("文本向量与检索", "Text embedding and retrieval", ("test_text_*",)),
    "generation": Task("自回归生成（大模型）", "Autoregressive generation (LLM)",
                       ("test_generation_*",)),
    "ocr": Task("文字识别 OCR", "OCR", ("test_ocr_pipeline",)),
    "vad": Task("语音端点检测", "Voice activity detection", ("test_vad_segments*",)),
}

#: figure -> (direction, 中文, English): floors on accuracies and rates, ceilings on errors
#: and latencies (the scenario suite's metrics contract, docs/scenarios.md)
FIGURES: dict[str, tuple[str, str, str]] = {
    "map50": (AT_LEAST, "mAP@0.5（对真值）", "mAP@0.5 vs truth"),
    "map50_95": (AT_LEAST, "mAP@0.5:0.95（对真值）", "mAP@0.5:0.95 vs truth"),
    "map50_vs_reference": (AT_LEAST, "mAP@0.5（对参考）", "mAP@0.5 vs reference"),
    "cer": (AT_MOST, "字错率 CER", "character error rate"),
    "wer": (AT_MOST, "词错率 WER", "word error rate"),
    "cer_vs_reference": (AT_MOST, "字错率（对参考）", "CER vs reference"),
    "wer_vs_reference": (AT_MOST, "词错率（对参考）", "WER vs reference"),
    "cosine_min": (AT_LEAST, "最小余弦（对参考）", "least cosine vs reference"),
    "retrieval_top1": (AT_LEAST, "检索 top-1", "retrieval top-1"),
    "token_agreement": (AT_LEAST, "逐词一致率", "token agreement"),
    "perplexity_ratio": (AT_MOST, "困惑度比", "perplexity ratio"),
    "char_accuracy": (AT_LEAST, "字符准确率", "character accuracy"),
    "speech_coverage": (AT_LEAST, "语音覆盖率", "speech coverage"),
    "accuracy_drop": (AT_MOST, "量化精度损失", "accuracy drop vs fp32"),
    "latency_p50_ms": (AT_MOST, "时延 P50（毫秒）", "latency p50 (ms)"),
    "latency_p99_ms": (AT_MOST, "时延 P99（毫秒）", "latency p99 (ms)"),
    "ttft_ms": (AT_MOST, "首词时延（毫秒）", "time to first token (ms)"),
    "tpot_ms": (AT_MOST, "每词时延（毫秒）", "time per output token (ms)"),
    "tokens_per_s": (AT_LEAST, "每秒词数", "tokens per second"),
}


def task_of(case: str) -> str | None:
    """The task a case's record measures, by its name."""
    name = case.lower()
    return next((key for key, task in TASKS.items()
                 if any(fnmatch.fnmatchcase(name, p) for p in task.cases)), None)


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemandError(f"{what} must be a number, not {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise DemandError(f"{what} must be a finite number")
    return number


def parse_demand(data: dict[str, Any]) -> dict[str, Any]:
    """A demand's fields, checked: ``name``, ``scenario``, ``task``, ``models`` (list or
    comma-separated), ``requirements`` (``[{"figure", "value"}]``), ``volume_qps`` (or
    none), ``note``. Raise :class:`DemandError` with one line naming what is wrong."""
    if not isinstance(data, dict):
        raise DemandError("a demand is a JSON object")
    name = str(data.get("name") or "").strip()
    if not name or len(name) > MAX_NAME:
        raise DemandError(f"name must be 1 to {MAX_NAME} characters")
    scenario = str(data.get("scenario") or "")
    if scenario not in SCENARIOS:
        raise DemandError(f"unknown scenario {scenario[:40]!r}; known: {', '.join(SCENARIOS)}")
    task = str(data.get("task") or "")
    if task not in TASKS:
        raise DemandError(f"unknown task {task[:40]!r}; known: {', '.join(TASKS)}")
    models = data.get("models") or []
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, list) or not all(isinstance(m, str) and 0 < len(m) <= 100
                                               for m in models) or len(models) > MAX_MODELS:
        raise DemandError(f"models must be a list of at most {MAX_MODELS} names")
    requirements = data.get("requirements") or []
    if not isinstance(requirements, list) or not all(isinstance(r, dict)
                                                     for r in requirements):
        raise DemandError("requirements must be a list of {figure, value}")
    checked = []
    for entry in requirements:
        figure = str(entry.get("figure") or "")
        if figure not in FIGURES:
            raise DemandError(f"unknown figure {figure[:40]!r}; known: {', '.join(FIGURES)}")
        checked.append({"figure": figure, "value": _number(entry.get("value"), figure)})
    volume = data.get("volume_qps")
    volume = None if volume in (None, "") else _number(volume, "volume_qps")
    if volume is not None and volume <= 0:
        raise DemandError("volume_qps must be positive (queries per second)")
    note = str(data.get("note") or "").strip()
    if len(note) > MAX_NOTE:
        raise DemandError(f"note must be at most {MAX_NOTE} characters")
    if not checked and volume is None:
        raise DemandError("a demand needs at least one requirement or a volume")
    return {"name": name, "scenario": scenario, "task": task, "models": models,
            "requirements": checked, "volume_qps": volume, "note": note}


def form_demand(form: dict[str, str]) -> dict[str, Any]:
    """The registry form's fields (one accuracy figure, a p99 latency ceiling, a volume)
    as a demand for :func:`parse_demand`."""
    requirements = []
    if (form.get("accuracy_value") or "").strip():
        requirements.append({"figure": form.get("accuracy_figure"),
                             "value": form.get("accuracy_value")})
    if (form.get("latency_p99_ms") or "").strip():
        requirements.append({"figure": "latency_p99_ms", "value": form.get("latency_p99_ms")})
    return {"name": form.get("name"), "scenario": form.get("scenario"),
            "task": form.get("task"), "models": form.get("models") or "",
            "requirements": requirements, "volume_qps": form.get("volume_qps"),
            "note": form.get("note")}


def add_demand(session: Session, data: dict[str, Any]) -> ScenarioDemand:
    row = ScenarioDemand(**parse_demand(data), created_at=datetime.now(UTC).replace(
        microsecond=0))
    session.add(row)
    session.flush()
    return row


def describe_demand(row: ScenarioDemand) -> dict[str, Any]:
    scenario, task = SCENARIOS[row.scenario], TASKS[row.task]
    return {"id": row.id, "name": row.name, "scenario": row.scenario,
            "scenario_label": scenario.label(), "task": row.task,
            "task_label": f"{task.zh} / {task.en}", "models": list(row.models),
            "requirements": [dict(r, **_bound(r["figure"], r["value"]))
                             for r in row.requirements],
            "volume_qps": row.volume_qps, "note": row.note,
            "required_sensors": required_sensors(row.scenario),
            "created_at": row.created_at.isoformat() if row.created_at else None}


def _bound(figure: str, value: float) -> dict[str, Any]:
    direction, zh, en = FIGURES[figure]
    sign = "≥" if direction == AT_LEAST else "≤"
    return {"direction": direction, "label": f"{zh} / {en}", "text": f"{figure} {sign} {value:g}"}


def demands(session: Session) -> list[ScenarioDemand]:
    return list(session.scalars(select(ScenarioDemand).order_by(ScenarioDemand.id)).all())


def required_sensors(scenario: str) -> list[str]:
    """The sensor targets a scenario's profile names (``[sets] required_sensors``)."""
    try:
        profile = load_profile(SCENARIOS[scenario].profile)
    except ProfileError:
        return []
    return list(profile.sets.get("required_sensors", ()))


# ---------------------------------------------------------------- supply

def _valid(row: Certificate, revoked: dict[str, Any], now: str) -> bool:
    return row.published and row.certificate_id not in revoked and row.expires_at > now


def supply(session: Session) -> list[dict[str, Any]]:
    """The supply-capability catalogue: one entry per valid published certificate."""
    now = datetime.now(UTC).isoformat()
    revoked = revocations.revoked(session)
    rows = session.scalars(select(Certificate).where(Certificate.published.is_(True))
                           .order_by(Certificate.issued_at.desc())).all()
    return [_entry(session, row) for row in rows if _valid(row, revoked, now)]


def _numeric(metrics: Any) -> dict[str, float]:
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in sorted(metrics.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def stored_figures(session: Session, row: Certificate) -> dict[str, dict[str, float]]:
    """case -> every numeric figure of its record, from the runs the certificate cites
    when the registry holds them (runs of accepted bundles): the certificate's model table
    keeps at most eight figures per case."""
    cited = {str(r.get("run_id")) for r in (row.statement.get("predicate") or {}).get(
        "runs") or [] if r.get("run_id")}
    if not cited:
        return {}
    names = cited | {f"{run_id}/{row.target}" for run_id in cited}
    runs = session.scalars(select(Run).where(Run.run_id.in_(names),
                                             Run.target == row.target)).all()
    return {r.case: _numeric(r.metrics) for run in runs for r in run.records
            if task_of(r.case)}


def _entry(session: Session, row: Certificate) -> dict[str, Any]:
    predicate = row.statement.get("predicate") or {}
    identity = (predicate.get("target") or {}).get("identity") or {}
    kind = (predicate.get("profile") or {}).get("kind") or identity.get("kind")
    stored = stored_figures(session, row)
    tasks: dict[str, list[dict[str, Any]]] = {}
    for model_row in predicate.get("models") or []:
        case = str(model_row.get("case", ""))
        task = task_of(case)
        if task:
            tasks.setdefault(task, []).append({
                "case": case, "model": model_row.get("model"),
                "status": model_row.get("status"), "precision": model_row.get("precision"),
                "figures": stored.get(case) or _numeric(model_row.get("metrics"))})
    scenario = scenario_of(row.profile)
    vendor = session.get(Vendor, row.vendor_id) if row.vendor_id else None
    return {
        "certificate_id": row.certificate_id, "vendor": vendor.name if vendor else None,
        "target": row.target, "kind": kind, "chip": row.chip, "framework": row.framework,
        "configuration": identity.get("configuration") or "default",
        "profile": row.profile, "level": row.level, "level_label": level_label(row.level),
        "scenario": scenario.id if scenario else None,
        "scenario_fit": (f"{scenario.label()}: {fit_label(row.level)}" if scenario else None),
        "issued_at": row.issued_at, "expires_at": row.expires_at, "tasks": tasks}


# ---------------------------------------------------------------- matching

def _check(figure: str, required: float, value: Any) -> dict[str, Any]:
    direction = FIGURES[figure][0]
    found = {"figure": figure, "required": required, "direction": direction,
             **_bound(figure, required)}
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
            value):
        return found | {"value": None, "met": False, "gap": None,
                        "why": f"{figure} not on the certificate"}
    gap = (required - value) if direction == AT_LEAST else (value - required)
    met = gap <= 0
    relative = f", {abs(gap) / abs(required):.1%}" if required else ""
    why = "" if met else (f"{figure} = {value:.4g}, short by {gap:.4g}{relative}"
                          if direction == AT_LEAST else
                          f"{figure} = {value:.4g}, over by {gap:.4g}{relative}")
    return found | {"value": value, "met": met, "gap": 0.0 if met else gap, "why": why}


def _volume(required: float, figures: dict[str, Any]) -> dict[str, Any]:
    p50 = figures.get("latency_p50_ms")
    found = {"figure": "volume_qps", "required": required, "direction": AT_LEAST,
             "label": "单流速率 / single-stream rate (1000 / p50)",
             "text": f"volume ≥ {required:g} queries/s"}
    if not isinstance(p50, (int, float)) or isinstance(p50, bool) or not p50 > 0:
        return found | {"value": None, "met": False, "gap": None,
                        "why": "latency_p50_ms not on the certificate: no rate to compare"}
    rate = 1000.0 / p50
    gap = required - rate
    return found | {"value": rate, "met": gap <= 0, "gap": max(gap, 0.0),
                    "why": "" if gap <= 0 else (f"single-stream rate {rate:.4g}/s, short by "
                                                f"{gap:.4g}/s ({gap / required:.1%})")}


def _wanted(evidence: dict[str, Any], models: list[str]) -> bool:
    if not models:
        return True
    text = f"{evidence.get('model') or ''} {evidence.get('case') or ''}".lower()
    return any(m.lower() in text for m in models)


def _candidate(demand: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """How one supply entry measures up to the demand: its best evidence and checks."""
    base = {k: entry[k] for k in ("certificate_id", "vendor", "target", "chip", "framework",
                                  "configuration", "profile", "level", "level_label",
                                  "scenario_fit")}
    if entry["scenario"] != demand["scenario"]:
        base["scenario_fit"] = None
    rows = [e for e in entry["tasks"].get(demand["task"], []) if _wanted(e, demand["models"])]
    if not rows:
        wanted = f" of model {', '.join(demand['models'])}" if demand["models"] else ""
        return base | {"meets": False, "evidence": None, "checks": [],
                       "misses": [f"no {demand['task']} record{wanted} on this certificate"]}
    judged = []
    for evidence in rows:
        checks = [_check(r["figure"], r["value"], evidence["figures"].get(r["figure"]))
                  for r in demand["requirements"]]
        if demand["volume_qps"] is not None:
            checks.append(_volume(demand["volume_qps"], evidence["figures"]))
        misses = [c["why"] for c in checks if not c["met"]]
        if evidence["status"] != "pass":
            misses.insert(0, f"{evidence['case']} did not pass ({evidence['status']})")
        judged.append(base | {"meets": not misses, "evidence": evidence, "checks": checks,
                              "misses": misses})
    return min(judged, key=lambda c: (len(c["misses"]), _shortfall(c)))


def _shortfall(candidate: dict[str, Any]) -> float:
    """How far a candidate misses, relative to the requirements (for ordering)."""
    total = 0.0
    for check in candidate["checks"]:
        if not check["met"]:
            gap, required = check["gap"], check["required"]
            total += math.inf if gap is None else abs(gap) / (abs(required) or 1.0)
    return total


def _sensors(demand: dict[str, Any], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for sensor in required_sensors(demand["scenario"]):
        certified = [e["certificate_id"] for e in entries
                     if e["kind"] == "sensor" and e["level"] != "none"
                     and (e["target"] == sensor or e["target"].startswith(sensor + ","))]
        found.append({"sensor": sensor, "certificates": certified})
    return found


def match(demand: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Every compute entry that meets the demand (with its evidence), and every one that
    misses (with by how much); the scenario's required sensors and their certificates."""
    sensors = _sensors(demand, entries)
    missing = [s["sensor"] for s in sensors if not s["certificates"]]
    candidates = [_candidate(demand, e) for e in entries if e["kind"] != "sensor"]
    for candidate in candidates:
        if missing:
            candidate["misses"] = candidate["misses"] + [
                f"no published sensor certificate for {s}" for s in missing]
            candidate["meets"] = False
    meets = [c for c in candidates if c["meets"]]
    misses = sorted((c for c in candidates if not c["meets"]),
                    key=lambda c: (c["evidence"] is None, len(c["misses"]), _shortfall(c)))
    return {"demand": demand, "sensors": sensors, "meets": meets, "misses": misses}
