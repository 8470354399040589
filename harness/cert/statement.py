"""The certificate's content: an in-toto Statement v1 with a Shipei predicate.

https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md ::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": ..., "digest": {"sha256": ...}}, ...],
     "predicateType": PREDICATE_TYPE,
     "predicate": {...}}

Subjects: the target driver (sha256 over its files), its runtime distribution
(sha256 of the wheel's RECORD) when it is a Python distribution, and the platform
fingerprint. The predicate is documented in ``docs/certificates.md``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from harness.cert.evaluate import Evaluation
from harness.cert.profile import LEVELS, Profile
from harness.cert.schema import SchemaError, loads
from harness.cert.sections import certificate_section, recorded_settings
from harness.perf.stats import percentile_of

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://shipei.dev/attestations/compatibility-certificate/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_SCHEMA_VERSION = "1.1"
MAX_METRICS_SHOWN = 8


class StatementError(Exception):
    """A payload that is not a Shipei certificate statement."""


def new_certificate_id(now: datetime) -> str:
    return f"SP-{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


#: accuracy figures shown first in the model table, when a record has them
ACCURACY_FIGURES = ("max_abs_error", "max_rel_error", "min_cosine_similarity",
                    "cosine_similarity", "top1_agreement", "top5_overlap")
#: the scenario tasks' figures (docs/scenarios.md, metrics contract), kept before any other
#: number of their records so a certificate shows what the scenario profiles judge
TASK_FIGURES = ("map50", "map50_95", "map50_vs_reference", "cer", "cer_vs_reference", "wer",
                "wer_vs_reference", "cosine_min", "retrieval_top1", "token_agreement",
                "perplexity_ratio", "ttft_ms", "tpot_ms", "tokens_per_s", "accuracy_drop",
                "latency_p50_ms", "latency_p99_ms")
#: latency and throughput figures of a performance record's ``metrics.summary``
LATENCY_FIGURES = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms", "queries_per_s",
                   "samples_per_s")


def _numbers(metrics: dict[str, Any], preferred: tuple[str, ...]) -> dict[str, float]:
    def numeric(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    chosen = {k: metrics[k] for k in preferred if numeric(metrics.get(k))}
    if not chosen:
        chosen = {k: v for k, v in sorted(metrics.items()) if numeric(v)}
    return dict(list(chosen.items())[:MAX_METRICS_SHOWN])


def model_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(records, key=lambda r: (r["suite"], r["case"])):
        if certificate_section(r["suite"]) != "models":
            continue
        tags = r.get("tags") or {}
        rows.append({"suite": r["suite"], "case": r["case"], "status": r["status"],
                     "model": tags.get("title") or tags.get("model") or r["case"],
                     "precision": tags.get("precision"), "sha256": tags.get("model_sha256"),
                     "metrics": _numbers(r.get("metrics") or {},
                                         ACCURACY_FIGURES + TASK_FIGURES)})
    return rows


def _performance_row(record: dict[str, Any]) -> dict[str, Any]:
    metrics = record.get("metrics") or {}
    summary = metrics.get("summary") if isinstance(metrics.get("summary"), dict) else metrics
    loadgen = metrics.get("loadgen") if isinstance(metrics.get("loadgen"), dict) else {}
    return {"case": record["case"], "status": record["status"],
            "scenario": metrics.get("scenario"), "model": metrics.get("model"),
            "batch_size": metrics.get("batch_size"), "valid": loadgen.get("valid"),
            "note": (record.get("message") or "").strip().split("\n")[0][:200],
            "figures": {k: summary[k] for k in LATENCY_FIGURES
                        if isinstance(summary.get(k), (int, float))
                        and not isinstance(summary.get(k), bool)}}


def latency_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Performance-suite figures, and per suite the time per conformance case
    (labelled as such: a conformance case is not a benchmark)."""
    sections = {suite: certificate_section(suite) for suite in {r["suite"] for r in records}}
    performance = [_performance_row(r) for r in sorted(records, key=lambda r: r["case"])
                   if sections[r["suite"]] == "performance"]
    per_suite: dict[str, dict[str, Any]] = {}
    for suite in sorted(s for s, section in sections.items()
                        if section in ("conformance", "models")):
        times = sorted(float(r["timings"]["run_s"]) * 1000.0 for r in records
                       if r["suite"] == suite and r["status"] == "pass"
                       and isinstance((r.get("timings") or {}).get("run_s"), (int, float)))
        if times:
            per_suite[suite] = {"cases": len(times),
                                "median_ms": float(percentile_of(times, 50)),
                                "p90_ms": float(percentile_of(times, 90)), "max_ms": times[-1]}
    found = {"performance": performance, "conformance_run_time": per_suite}
    if performance:
        found["settings"] = recorded_settings(records)
    return found


@dataclass
class Issue:
    """Everything a certificate states, gathered by :mod:`harness.cert.certify`."""

    profile: Profile
    evaluation: Evaluation
    label: str
    identity: dict[str, Any]
    capabilities: Any
    environment: dict[str, Any]
    runs: list[dict[str, Any]]
    files: dict[str, list[dict[str, str]]]
    distributions: list[dict[str, Any]]
    records: list[dict[str, Any]]
    harness: dict[str, Any]
    issuer: dict[str, str]
    valid_days: int
    #: where the evidence was made (see :mod:`harness.cert.provenance`); None: the center
    provenance: dict[str, Any] | None = None


def subjects(issue: Issue, driver_digest: str) -> list[dict[str, Any]]:
    ident = issue.identity
    found = [{"name": f"driver:{ident.get('driver_distribution') or 'unknown'}/"
                      f"{ident['name']}@{ident['driver_version']}",
              "digest": {"sha256": driver_digest}}]
    runtime = next((d for d in issue.distributions if d["name"] == ident.get("runtime")
                    and d.get("record_sha256")), None)
    if runtime:
        found.append({"name": f"runtime:{runtime['name']}@{runtime['version']}",
                      "digest": {"sha256": runtime["record_sha256"]}})
    platform_id = issue.environment["platform_id"]
    found.append({"name": f"platform:{platform_id}", "digest": {"sha256": platform_id}})
    return found


def build_statement(issue: Issue, driver_digest: str, now: datetime | None = None
                    ) -> dict[str, Any]:
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    evaluation, profile = issue.evaluation, issue.profile
    level = evaluation.level
    suites = dict(evaluation.suites)
    for name, summary in suites.items():
        summary["runs"] = [r["run_id"] for r in issue.runs if name in r["suites"]]
    scope = evaluation.scope
    predicate = {
        "schema_version": PREDICATE_SCHEMA_VERSION,
        "certificate_id": new_certificate_id(now),
        "issued_at": now.isoformat(),
        "expires_at": (now + timedelta(days=issue.valid_days)).isoformat(),
        "issuer": issue.issuer,
        "level": {"id": level, "zh": LEVELS[level][0], "en": LEVELS[level][1]},
        "evaluator_version": evaluation.evaluator_version,
        "profile": {"name": profile.name, "version": profile.version, "kind": profile.kind,
                    "title_zh": profile.title_zh, "title_en": profile.title_en,
                    "sha256": profile.sha256, "definition": profile.definition,
                    "origin": profile.origin},
        "scope": {"name": scope.name, "title_zh": scope.title_zh, "title_en": scope.title_en,
                  "complete": scope.complete, "max_level": scope.max_level,
                  "markexpr": scope.markexpr},
        "target": {"label": issue.label, "identity": issue.identity,
                   "capabilities": issue.capabilities},
        "platform": issue.environment,
        "criteria": [r.to_dict() for r in evaluation.criteria],
        "blockers": evaluation.blockers,
        "suites": suites,
        "runs": issue.runs,
        "files": issue.files,
        "distributions": issue.distributions,
        "models": model_rows(issue.records),
        "latency": latency_summary(issue.records),
        "harness": issue.harness,
    }
    if issue.provenance is not None:
        predicate["provenance"] = issue.provenance
    return {"_type": STATEMENT_TYPE, "subject": subjects(issue, driver_digest),
            "predicateType": PREDICATE_TYPE, "predicate": predicate}


def encode(statement: dict[str, Any]) -> bytes:
    return json.dumps(statement, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def decode(body: bytes) -> dict[str, Any]:
    """The statement in a verified payload; raise :class:`StatementError` if it is not ours."""
    try:
        statement = loads(body, "the payload")
    except SchemaError as exc:
        raise StatementError(str(exc)) from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise StatementError(f"the payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise StatementError(f"predicateType is {statement.get('predicateType')!r}, "
                             f"not {PREDICATE_TYPE}")
    predicate = statement.get("predicate")
    needed = ("certificate_id", "issued_at", "expires_at", "level", "profile", "scope")
    if not isinstance(predicate, dict) or any(k not in predicate for k in needed):
        raise StatementError("the predicate lacks certificate fields")
    return statement
