"""The scenario fit box of a certificate page (场景适配等级): which scenario of the plan the
target fits, at which fit level, and what blocked a better fit, with the figures that
missed. Only for scenario profiles (``scenario-<id>``); everything comes from the signed
predicate."""

from __future__ import annotations

import html
from typing import Any

from harness.cert.scenario_fit import FIT_LEVELS, Scenario, scenario_of

FIT_COLOURS = {"full": "#17693a", "limited": "#9a6200", "none": "#a61b1b"}
#: levels not reached, by the level reached
MISSED = {"full": (), "limited": ("full",), "none": ("limited", "full")}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _sets(predicate: dict[str, Any], name: str) -> list[str]:
    found = ((predicate["profile"].get("definition") or {}).get("sets") or {}).get(name)
    return [str(v) for v in found] if isinstance(found, list) else []


def blocked(predicate: dict[str, Any]) -> dict[str, list[str]]:
    """Level -> why it was not reached, for each level above the one awarded."""
    blockers = predicate.get("blockers") or {}
    return {level: list(blockers.get(level) or [])
            for level in MISSED.get(predicate["level"]["id"], ())}


def predicate_scenario(predicate: dict[str, Any]) -> Scenario | None:
    return scenario_of(str(predicate["profile"].get("name", "")))


def render_fit(predicate: dict[str, Any]) -> str:
    """The box, or "" for a certificate of another profile."""
    scenario = predicate_scenario(predicate)
    if scenario is None:
        return ""
    level = predicate["level"]["id"]
    zh, en = FIT_LEVELS[level]
    missed = blocked(predicate)
    if missed:
        items = "".join(
            f"<li><strong>{_e(FIT_LEVELS[lvl][0])} / {_e(FIT_LEVELS[lvl][1])}</strong>："
            + ("; ".join(_e(r) for r in reasons) or "—") + "</li>"
            for lvl, reasons in missed.items())
        why = f"<div>阻碍因素 / What blocked it:<ul class=\"tight\">{items}</ul></div>"
    else:
        why = "<div>阻碍因素 / What blocked it: 无 / nothing</div>"
    rows = [f"<div>适配场景 / Scenario: <strong>{_e(scenario.zh)}</strong> / "
            f"{_e(scenario.en)} <span class=\"note\">（行动计划 / plan: "
            f"{_e(scenario.plan_zh)}）</span></div>"]
    precisions = _sets(predicate, "precisions")
    if precisions:
        target = predicate["target"]
        precision = (target.get("capabilities") or {}).get("precision") \
            if isinstance(target.get("capabilities"), dict) else None
        rows.append(f"<div>精度类别 / Precision classes: {_e(', '.join(precisions))}"
                    f"（本证书 / this certificate: {_e(precision or 'not declared')}, "
                    f"configuration {_e(target['identity'].get('configuration') or 'default')}"
                    "）</div>")
    sensors = _sets(predicate, "required_sensors")
    if sensors:
        rows.append(f"<div>所需传感器 / Required sensors: {_e(', '.join(sensors))} — 须另有已发布的"
                    "传感器证书（sensor 规范），由登记处的场景匹配核对 / each needs a published "
                    "sensor certificate of its own (profile sensor), checked by the registry's "
                    "scenario matching</div>")
    return (f"<section class=\"verdict\" id=\"scenario-fit\" style=\"margin-top:3mm\">"
            f"<div class=\"level\" style=\"background:{FIT_COLOURS[level]}\">"
            f"场景适配等级<small>Scenario fit</small>{_e(zh)}<small>{_e(en)}</small></div>"
            f"<div>{''.join(rows)}{why}</div></section>")
