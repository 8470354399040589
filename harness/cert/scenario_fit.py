"""Scenario certification (场景适配认证): the plan's scenarios and the fit levels.

A scenario profile (``harness/cert/profiles/scenario-<id>.toml``) is an ordinary
certification profile whose criteria use ``measure = "task_metric"``
(:class:`harness.cert.measures.TaskMetric`): a case counts as passing when its status is
``pass`` and each named figure of its ``metrics`` lies within the profile's bound
(``at_least`` for accuracy floors and throughput, ``at_most`` for error rates and latency
ceilings, ``at_most_when_recorded`` for figures only some configurations record, such as
the accuracy drop of an int8 or fp16 configuration against fp32). A case that misses says
why with its figure, and the certificate's blockers carry that sentence, so a page shows
what blocked the scenario.

The scenario of a profile is its name: ``scenario-inspection`` is :data:`SCENARIOS`
``["inspection"]``. The levels read as fit levels there (场景适配等级, :data:`FIT_LEVELS`).
"""

from __future__ import annotations

from dataclasses import dataclass

PROFILE_PREFIX = "scenario-"


@dataclass(frozen=True)
class Scenario:
    """One scenario of the plan (重点场景布局)."""

    id: str
    zh: str
    en: str
    #: where the plan names it (section of the seed plan)
    plan_zh: str

    @property
    def profile(self) -> str:
        return PROFILE_PREFIX + self.id

    def label(self) -> str:
        return f"{self.zh} / {self.en}"


SCENARIOS: dict[str, Scenario] = {s.id: s for s in (
    Scenario("inspection", "机器视觉工业检测", "Machine-vision industrial inspection",
             "二（一）制造业：离散型制造业机器视觉工业检测"),
    Scenario("vehicles", "智慧交通与智能网联汽车", "Smart transport and connected vehicles",
             "二（二）交通；三（三）8 图像、惯性传感器与超声波雷达"),
    Scenario("medical", "医疗智能辅助诊断", "Medical assisted diagnosis",
             "二（二）医疗：智能辅助诊断"),
    Scenario("education", "智慧教育", "Education (smart classroom)",
             "二（二）教育：智慧教室、沉浸式线上教学"),
    Scenario("speech", "智能语音交互", "Speech interaction",
             "三（三）8 语音处理芯片；二（一）智能终端"),
    Scenario("llm", "大模型与 AIGC", "Large models and AIGC",
             "三（二）6 国产 AI 大模型；三（三）7 AIGC"),
)}

#: level id -> (中文, English) as a scenario fit (场景适配等级)
FIT_LEVELS: dict[str, tuple[str, str]] = {
    "full": ("完全适配", "Fits the scenario"),
    "limited": ("基本适配", "Fits with limitations"),
    "none": ("不适配", "Does not fit"),
}


def scenario_of(profile_name: str) -> Scenario | None:
    """The scenario a profile certifies, or None for a profile that is not a scenario's."""
    if not profile_name.startswith(PROFILE_PREFIX):
        return None
    return SCENARIOS.get(profile_name[len(PROFILE_PREFIX):])


def fit_label(level: str) -> str:
    zh, en = FIT_LEVELS[level]
    return f"{zh} / {en}"
