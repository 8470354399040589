"""Audits of a bundle's records against themselves: would a vendor's numbers survive a
second look?

- :func:`check_environment`: the records are consistent with the environment they
  claim (platform fingerprint hashes to its id, package versions agree with the
  installed distributions, every record belongs to its run and target, timestamps
  lie inside the run, CPU affinity inside the machine's CPUs).
- :func:`check_accuracy_in_performance` (after MLPerf's TEST01): every timed case
  recorded the check of its outputs against the reference made on the timed
  executable, and those outputs matched; a timed figure without it is refused.
- :func:`check_caching` (after MLPerf's TEST04): the timed queries cycled through
  several distinct inputs, the stored latency samples are plausible and the ones
  summarized and LoadGen timed, and no cluster of implausibly fast queries (answers
  served from a cache) hides in them (:mod:`harness.center.timing_audit`; on a busy
  machine such a cluster is inconclusive, not an accusation).

Each returns one-line notes or raises :class:`AuditError` with the reason, or
:class:`AuditInconclusive` with what would decide it.
"""

from __future__ import annotations

from typing import Any

from harness.center import timing_audit
from harness.cert.sections import is_timed
from harness.results.fingerprint import platform_digest

MIN_DISTINCT_INPUTS = 2


class AuditError(Exception):
    """An audit that failed; the message is one line."""


class AuditInconclusive(Exception):
    """An audit that cannot decide either way (one line saying what would decide it, e.g.
    "re-run on a quiet machine"); intake records it and does not refuse the bundle."""


def check_environment(runs: dict[str, dict[str, Any]], records: dict[str, list[dict[str, Any]]],
                      claimed: dict[str, Any], platform_id: str | None) -> list[str]:
    """``runs``: run.json per run id; ``records``: every attempt per run id;
    ``claimed``: the bundle's environment.json."""
    distributions = claimed.get("distributions") or {}
    for run_id, info in sorted(runs.items()):
        env = info.get("environment") or {}
        if env.get("platform_id") != platform_digest(env):
            raise AuditError(f"run {run_id}: its environment does not hash to its platform_id")
        if env.get("platform_id") != platform_id:
            raise AuditError(f"run {run_id} was made on platform {str(env.get('platform_id'))[:12]}"
                             f", the bundle claims {str(platform_id)[:12]}")
        for name, version in sorted((env.get("runtimes") or {}).items()):
            installed = distributions.get(name.lower())
            if installed is not None and installed != version:
                raise AuditError(f"run {run_id} recorded {name} {version}, the bundle's "
                                 f"environment lists {installed}")
        for label, target in sorted((info.get("targets") or {}).items()):
            runtime, version = target.get("runtime"), target.get("runtime_version")
            recorded = (env.get("runtimes") or {}).get(runtime or "")
            if runtime and version and recorded and recorded != version:
                raise AuditError(f"run {run_id}: target {label} claims {runtime} {version}, "
                                 f"the run's environment has {recorded}")
        _check_records(run_id, info, records.get(run_id, []), env)
    return [f"{len(runs)} run(s) on platform {str(platform_id)[:12]}: fingerprints, package "
            "versions, record ownership and timestamps agree"]


def _check_records(run_id: str, info: dict[str, Any], records: list[dict[str, Any]],
                   env: dict[str, Any]) -> None:
    targets = set(info.get("targets") or {})
    start, end = str(info.get("started_at") or ""), str(info.get("finished_at") or "")
    cpus = env.get("cpu_count")
    for record in records:
        where = f"run {run_id}: record {record.get('suite')}::{record.get('case')}"
        if record.get("run_id") != run_id:
            raise AuditError(f"{where} belongs to run {record.get('run_id')!r}")
        if record.get("target") not in targets:
            raise AuditError(f"{where} names target {record.get('target')!r}, not in the run")
        finished = str(record.get("finished_at") or "")
        if finished and start and end and not start <= finished <= end:
            raise AuditError(f"{where} finished at {finished}, outside the run "
                             f"({start} to {end})")
        threads = ((record.get("metrics") or {}).get("threads") or {})
        affinity = threads.get("cpu_affinity") if isinstance(threads, dict) else None
        if isinstance(cpus, int) and isinstance(affinity, list) and affinity \
                and max(affinity) >= cpus:
            raise AuditError(f"{where} ran on CPU {max(affinity)}, the machine claims "
                             f"{cpus} CPUs")


def _performance(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if is_timed(str(r.get("suite"))) and r["status"] == "pass"]


def check_accuracy_in_performance(records: list[dict[str, Any]]) -> list[str]:
    """TEST01-style: each timed figure rests on outputs checked on the timed executable."""
    timed = _performance(records)
    if not timed:
        return ["no timed cases in the bundle: nothing to check"]
    for record in timed:
        metrics = record.get("metrics") or {}
        check = metrics.get("output_check")
        where = f"{record['case']}"
        if not isinstance(check, dict) or "mismatched_elements" not in check:
            raise AuditError(f"{where}: the timed case recorded no output check, so its "
                             "figures may come from a run that computed nothing")
        if check.get("mismatched_elements") != 0 or not check.get("compared_elements"):
            raise AuditError(f"{where}: the outputs of the timed executable differ from the "
                             f"reference ({check.get('mismatched_elements')} of "
                             f"{check.get('compared_elements')} elements) yet it was timed")
        if metrics.get("timed_call") not in ("run", "run_prepared"):
            raise AuditError(f"{where}: the timed call is not recorded")
    return [f"{len(timed)} timed case(s): outputs of the timed executable checked against "
            "the reference before timing (run_prepared checked against run); outputs during "
            "the timed queries are not sampled by the performance suite"]


def check_caching(records: list[dict[str, Any]], files: dict[str, bytes], run_of: dict[int, str]
                  ) -> list[str]:
    """TEST04-style, and are these samples from a real timed run at all: distinct
    inputs; the stored samples plausible, consistent with their timeline, the summary
    and LoadGen (:func:`timing_audit.check_samples`); no cluster of cached answers
    (:func:`timing_audit.check_fast_cluster`, inconclusive where the record says
    others were using the machine). Refused on evidence of any one case; else
    :class:`AuditInconclusive` when a case cannot be decided.

    ``run_of`` maps ``id(record)`` to its run id (sample files are run-relative)."""
    timed = _performance(records)
    if not timed:
        return ["no timed cases in the bundle: nothing to check"]
    undecided: list[str] = []
    fast_shares = []
    for record in timed:
        metrics = record.get("metrics") or {}
        where = record["case"]
        distinct = (metrics.get("settings") or {}).get("distinct_inputs")
        if not isinstance(distinct, int) or distinct < MIN_DISTINCT_INPUTS:
            raise AuditError(f"{where}: timed with {distinct} distinct input(s); repeated "
                             "identical queries can be answered from a cache")
        run_id = run_of[id(record)]
        try:
            case = timing_audit.from_files(record, files, f"runs/{run_id}")
        except timing_audit.SamplesUnreadable as exc:
            raise AuditError(f"{where}: {exc}") from None
        if case.latency_ns.size == 0:
            raise AuditError(f"{where}: no stored samples")
        # the cache check first: it names what a doctored sample set was doctored for
        for verdict in (timing_audit.check_fast_cluster(case), timing_audit.check_samples(case)):
            if verdict.refused:
                raise AuditError(f"{where}: {verdict.reason}")
            if verdict.status == timing_audit.INCONCLUSIVE:
                undecided.append(f"{where}: {verdict.reason}")
        fast_shares.append(timing_audit.fast_share(case.latency_ns))
    if undecided:
        more = f" (and {len(undecided) - 1} more case(s))" if len(undecided) > 1 else ""
        raise AuditInconclusive(undecided[0] + more)
    return [f"{len(timed)} timed case(s): distinct inputs, stored samples plausible and "
            "consistent with their timeline, the summaries and LoadGen's logs, at most "
            f"{max(fast_shares):.2%} implausibly fast queries"]
