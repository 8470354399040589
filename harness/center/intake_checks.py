"""The intake checks, in the order intake runs them: id -> (中文, English). Kept apart
from :mod:`harness.center.intake` so ``shipei intake --help`` needs no database stack."""

from __future__ import annotations

CHECKS: dict[str, tuple[str, str]] = {
    "archive": ("归档格式与大小", "Archive format and size"),
    "signature": ("厂商签名", "Vendor signature"),
    "digest": ("清单摘要", "Manifest digests"),
    "consistency": ("证据内部一致性", "Artefacts of the bundle agree"),
    "replay": ("重放检测（按内容）", "Replay detection (by content)"),
    "environment": ("记录与所述环境一致", "Records consistent with their environment"),
    "completeness": ("配置文件与范围的完整性", "Completeness for the profile and scope"),
    "accuracy": ("性能运行中的精度（TEST01 式）",
                 "Accuracy inside the performance run (TEST01-style)"),
    "caching": ("缓存检测（TEST04 式）", "Caching detection (TEST04-style)"),
}
