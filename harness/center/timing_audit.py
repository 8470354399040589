"""Audits of a timed case's latency samples: did a real timed run make them, do they
agree with the record and with LoadGen's own account of the run, and with the
center's own re-timing of the same case?

What a bundle carries for a timed case (``metrics`` of its record): the summary,
LoadGen's figures, the machine's conditions (``machine.alone``, the foreign CPU
share) and, beside it, the samples file (per query: service time and start, in ns,
from ``perf_counter_ns`` around each call in one thread, so the queries are serial)
and LoadGen's logs. The checks here use that evidence and nothing else:

- :func:`check_samples`: the samples are plausible (neither identical, quantised nor
  implausibly narrow), fit their own timeline (serial, no overlap, no long idle
  between queries), give the recorded summary exactly (one percentile rule,
  :func:`harness.perf.stats.percentile_of`) and agree with LoadGen's figures and log
  (LoadGen times each query from issue to completion around ours: never shorter;
  same query count, same duration).
- :func:`check_fast_cluster` (MLPerf's TEST04 idea): no cluster of answers faster
  than a quarter of the p50. On a machine others were using the service times are
  bimodal (contention slows some queries several-fold), so there a fast cluster is
  no evidence of a cache: it is *inconclusive* unless the fast answers are faster
  than the harness's own bookkeeping between two queries.
- :func:`compare_timings`: the vendor's samples against the center's own re-timing
  of the same case; decides what the two checks above leave open when both ran on
  the same hardware and the center's run was alone on its machine.

Each returns a :class:`TimingVerdict`: ``consistent``, ``refused`` (evidence of samples no
real run of this case made) or ``inconclusive`` (with what would decide it).
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.perf import loadgen_log
from harness.perf import samples as samples_io
from harness.perf.settings import OFFLINE
from harness.perf.stats import percentile_of, summarize

#: a samples file that expands beyond this is refused before it is read (16M queries)
MAX_SAMPLES_BYTES = 128 << 20
CONSISTENT, REFUSED, INCONCLUSIVE = "consistent", "refused", "inconclusive"
QUIET_MACHINE = "re-run on a quiet machine"
CENTER_RETIME = "center re-time needed"

#: a query faster than this share of the p50 belongs to the fast cluster (TEST04)
FAST_FRACTION_OF_P50 = 0.25
#: how many such queries are tolerated (timer noise, a preempted neighbour)
MAX_FAST_SHARE = 0.01
#: fast answers this far below the harness's own time between queries are no inference
#: (a driver's call is a Python call with array handling, as LoadGen's bookkeeping is)
BOOKKEEPING_FRACTION = 0.1
#: the p-th percentile of the idle times between queries used as the bookkeeping time
#: (a low one: contention inflates the rest)
BOOKKEEPING_PERCENTILE = 10.0
#: fewer samples than this are too few to judge their spread or resolution
MIN_SAMPLES_FOR_SHAPE = 20
#: max - min below this many ns over MIN_SAMPLES_FOR_SHAPE driver calls: no real timing
#: (cache misses, interrupts and the timer read itself spread even the tiniest call wider)
MIN_SPREAD_NS = 200
#: (max - min) / p50 below this: narrower than real machines usually time (inconclusive:
#: a very deterministic accelerator on a quiet machine might)
MIN_RELATIVE_SPREAD = 1e-3
#: every sample a multiple of this many ns: not from perf_counter_ns (ns resolution)
MAX_TIMER_QUANTUM_NS = 1000
#: the median idle time between queries may reach this (ns) or twice the p50 ...
IDLE_ALLOWANCE_NS = 50_000
#: the summary's figures recomputed from the samples agree this closely (float noise)
SUMMARY_RELATIVE_TOLERANCE = 1e-9
#: the queries' span and LoadGen's duration of the run agree within this share ...
DURATION_RELATIVE_TOLERANCE = 0.2
#: ... and this much (ns: LoadGen's start-up before the first query, its last response)
DURATION_ABSOLUTE_TOLERANCE_NS = 50_000_000
#: the vendor's timing may be this much faster than the center's own on the same hardware
MAX_SPEEDUP = 2.0
#: the quantiles compared with the center's re-timing: the fast end and the p50
COMPARED_PERCENTILES = (1.0, 50.0)
#: LoadGen's single-stream order statistics that bound ours from above
LOADGEN_ORDER_STATISTICS = (("min_latency_ns", 0.0), ("50.00_percentile_latency_ns", 50.0),
                            ("90.00_percentile_latency_ns", 90.0),
                            ("max_latency_ns", 100.0))


@dataclass(frozen=True)
class TimingVerdict:
    status: str
    reason: str

    @property
    def refused(self) -> bool:
        return self.status == REFUSED

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


@dataclass
class TimedCase:
    """One timed case: its record and what was stored beside it."""

    record: dict[str, Any]
    latency_ns: np.ndarray
    start_ns: np.ndarray | None = None
    samples_per_query: int = 1
    #: LoadGen's ``mlperf_log_detail.txt`` of the run, when the bundle carries it
    loadgen_detail: str | None = None
    #: the run's environment (run.json), to tell whether two runs share hardware
    environment: dict[str, Any] | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.get("metrics") or {}

    @property
    def name(self) -> str:
        return str(self.record.get("case"))

    @property
    def machine(self) -> dict[str, Any]:
        return self.metrics.get("machine") or {}


class SamplesUnreadable(Exception):
    """The samples a record names are missing or unreadable (one line)."""


def from_files(record: dict[str, Any], files: dict[str, bytes], prefix: str,
               environment: dict[str, Any] | None = None) -> TimedCase:
    """The timed case of ``record`` from a bundle's members; ``prefix`` is its run's
    folder in the bundle (``runs/<run-id>``)."""
    metrics = record.get("metrics") or {}
    name = f"{prefix}/{metrics.get('samples_file')}"
    if name not in files:
        raise SamplesUnreadable(f"its latency samples {metrics.get('samples_file')} are not "
                                "in the bundle")
    try:
        with np.load(io.BytesIO(files[name]), allow_pickle=False) as data:
            if any(info.file_size > MAX_SAMPLES_BYTES for info in data.zip.infolist()):
                raise SamplesUnreadable(f"its latency samples expand beyond "
                                        f"{MAX_SAMPLES_BYTES >> 20} MiB")
            latency = np.asarray(data["latency_ns"], dtype=np.int64)
            start = np.asarray(data["start_ns"], dtype=np.int64) if "start_ns" in data else None
            per_query = int(data["samples_per_query"]) if "samples_per_query" in data else 1
    except (OSError, ValueError, KeyError, EOFError, AttributeError, TypeError,
            zipfile.BadZipFile):
        raise SamplesUnreadable("its latency samples cannot be read") from None
    detail = None
    for log in metrics.get("loadgen_logs") or []:
        if str(log).endswith("mlperf_log_detail.txt"):
            found = files.get(f"{prefix}/{log}")
            if found is None:
                raise SamplesUnreadable(f"its LoadGen log {log} is not in the bundle")
            detail = found.decode("utf-8", errors="replace")
    return TimedCase(record, latency, start, per_query, detail, environment)


def from_run(record: dict[str, Any], run_dir: Path,
             environment: dict[str, Any] | None = None) -> TimedCase:
    """The timed case of ``record`` from a run folder (the center's own re-timing)."""
    metrics = record.get("metrics") or {}
    try:
        stored = samples_io.load(run_dir, str(metrics.get("samples_file")))
    except samples_io.SamplesError as exc:
        raise SamplesUnreadable(str(exc)) from None
    detail = None
    for log in metrics.get("loadgen_logs") or []:
        if str(log).endswith("mlperf_log_detail.txt") and (run_dir / log).is_file():
            detail = (run_dir / log).read_text(encoding="utf-8", errors="replace")
    return TimedCase(record, stored.latency_ns, stored.start_ns, stored.samples_per_query,
                     detail, environment)


# -- the run's conditions ------------------------------------------------------------------

def busy_machine(case: TimedCase) -> str | None:
    """Why the run cannot count as quiet (others used the CPUs, or nobody could tell);
    None when the record says it ran alone."""
    machine = case.machine
    if machine.get("alone") is True:
        return None
    share = machine.get("foreign_cpu_share")
    if isinstance(share, (int, float)):
        return f"other processes used {share:.0%} of the CPU time during the run"
    return "the record cannot say whether the machine was quiet"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.4g} ms"


def _idle_ns(case: TimedCase) -> np.ndarray | None:
    """The time between one query's end and the next one's start (ns), when known."""
    start = case.start_ns
    if start is None or start.size != case.latency_ns.size or start.size < 2:
        return None
    return start[1:] - (start[:-1] + case.latency_ns[:-1])


# -- are these samples from a real timed run? ---------------------------------------------

def check_samples(case: TimedCase) -> TimingVerdict:
    """Plausibility, timeline, summary and LoadGen agreement of one case's samples."""
    verdicts = [check(case) for check in (_check_shape, _check_timeline, _check_summary,
                                          _check_loadgen)]
    for status in (REFUSED, INCONCLUSIVE):  # evidence of forgery outranks an open question
        found = [v for v in verdicts if v.status == status]
        if found:
            return found[0]
    return TimingVerdict(CONSISTENT, f"{case.latency_ns.size} samples agree with the summary, "
                                     "their timeline and LoadGen")


def _check_shape(case: TimedCase) -> TimingVerdict:
    latency = case.latency_ns
    n = latency.size
    if n == 0:
        return TimingVerdict(REFUSED, "no stored samples")
    if int(latency.min()) <= 0:
        return TimingVerdict(REFUSED, "a stored sample is zero or negative")
    if n >= 2 and np.unique(latency).size == 1:
        return TimingVerdict(REFUSED, f"all {n} samples are {int(latency[0])} ns: no real run "
                                      "times every query alike")
    if n < MIN_SAMPLES_FOR_SHAPE:
        return TimingVerdict(CONSISTENT, "")
    quantum = int(np.gcd.reduce(latency))
    if quantum >= MAX_TIMER_QUANTUM_NS:
        return TimingVerdict(REFUSED, f"every sample is a multiple of {quantum} ns: the harness "
                                      "times with perf_counter_ns, these came from elsewhere")
    p50 = int(percentile_of(latency, 50))
    spread_ns = int(latency.max() - latency.min())
    if spread_ns < MIN_SPREAD_NS:
        return TimingVerdict(REFUSED, f"all {n} samples lie within {spread_ns} ns of each other "
                                      f"(p50 {_ms(p50)}): no real machine times a driver call that "
                                      "evenly")
    if spread_ns < MIN_RELATIVE_SPREAD * p50:
        return TimingVerdict(INCONCLUSIVE, f"all {n} samples lie within {spread_ns / p50:.3%} of "
                                           f"the p50 ({_ms(p50)}), narrower than real machines "
                                           f"usually time; {CENTER_RETIME}")
    return TimingVerdict(CONSISTENT, "")


def _check_timeline(case: TimedCase) -> TimingVerdict:
    start, latency = case.start_ns, case.latency_ns
    if start is None:
        return TimingVerdict(CONSISTENT, "")
    if start.size != latency.size:
        return TimingVerdict(REFUSED, f"{latency.size} service times but {start.size} start times")
    if start[0] != 0 or bool(np.any(np.diff(start) < 0)):
        return TimingVerdict(REFUSED, "the start times do not run forward from 0")
    idle = _idle_ns(case)
    if idle is None:
        return TimingVerdict(CONSISTENT, "")
    if bool(np.any(idle < 0)):
        first = int(np.argmax(idle < 0))
        return TimingVerdict(REFUSED, f"query {first + 1} starts before query {first} ends: the "
                                      "harness runs queries one after another")
    p50 = int(percentile_of(latency, 50))
    allowed = max(IDLE_ALLOWANCE_NS, 2 * p50)
    median_idle = int(percentile_of(idle, 50))
    if median_idle <= allowed:
        return TimingVerdict(CONSISTENT, "")
    text = (f"between queries the worker sat idle {_ms(median_idle)} (median), longer than "
            f"the queries themselves (p50 {_ms(p50)}): the stored service times are shorter "
            "than the time each query took")
    busy = busy_machine(case)
    if busy is None:
        return TimingVerdict(REFUSED, text)
    # contention delays some of the bookkeeping between queries, not nearly all of it
    low_idle = int(percentile_of(idle, BOOKKEEPING_PERCENTILE))
    if low_idle > allowed:
        return TimingVerdict(REFUSED, f"{text}; even {100 - BOOKKEEPING_PERCENTILE:g}% of the idle "
                                      f"times exceed {_ms(low_idle)}, more than a busy machine "
                                      "adds")
    return TimingVerdict(INCONCLUSIVE, f"{text}, or {busy}; {QUIET_MACHINE}")


def _span_s(case: TimedCase) -> float | None:
    if case.start_ns is None or case.start_ns.size != case.latency_ns.size:
        return None
    return float(case.start_ns[-1] + case.latency_ns[-1]) / 1e9


def _check_summary(case: TimedCase) -> TimingVerdict:
    """The record's summary is what :func:`summarize` gives for the stored samples."""
    claimed = case.metrics.get("summary") or {}
    if claimed.get("count") != case.latency_ns.size:
        return TimingVerdict(REFUSED, f"{case.latency_ns.size} stored samples, the summary counts "
                                      f"{claimed.get('count')}")
    span = _span_s(case)
    served = claimed.get("samples")
    found = summarize(case.latency_ns, case.samples_per_query, span,
                      served if isinstance(served, int) else None)
    keys = [k for k in found if span is not None or k not in ("queries_per_s", "samples_per_s")]
    for key in keys:
        theirs = claimed.get(key)
        ours = found[key]
        if not isinstance(theirs, (int, float)) or isinstance(theirs, bool) or not math.isclose(
                float(theirs), float(ours), rel_tol=SUMMARY_RELATIVE_TOLERANCE, abs_tol=1e-12):
            name = key.removesuffix("_ms")
            return TimingVerdict(REFUSED, f"the stored samples give {name} {ours:.6g}, the record "
                                          f"claims {name} {theirs}")
    return TimingVerdict(CONSISTENT, "")


def _check_loadgen(case: TimedCase) -> TimingVerdict:
    """The record's LoadGen figures are its log's, and LoadGen's account of the run (it
    times each query from issue to completion, around our timing) fits the samples."""
    recorded = case.metrics.get("loadgen") or {}
    if case.loadgen_detail is not None:
        logged = loadgen_log.results(loadgen_log.parse_detail(case.loadgen_detail))
        for key in sorted(set(recorded) | set(logged)):
            if key != "version" and recorded.get(key) != logged.get(key):
                return TimingVerdict(REFUSED, f"the record's LoadGen {key} is "
                                              f"{recorded.get(key)!r}, LoadGen's log says "
                                              f"{logged.get(key)!r}")
    if not recorded:
        return TimingVerdict(CONSISTENT, "")
    if case.metrics.get("scenario") == OFFLINE:
        return _check_loadgen_offline(case, recorded)
    return _check_loadgen_single_stream(case, recorded)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _duration_disagrees(ours_ns: float, loadgen_ns: float) -> bool:
    allowed = DURATION_RELATIVE_TOLERANCE * loadgen_ns + DURATION_ABSOLUTE_TOLERANCE_NS
    return abs(ours_ns - loadgen_ns) > allowed


def _check_loadgen_single_stream(case: TimedCase, lg: dict[str, Any]) -> TimingVerdict:
    latency = case.latency_ns
    count = _number(lg.get("query_count"))
    if count is not None and int(count) != latency.size:
        return TimingVerdict(REFUSED, f"LoadGen counted {int(count)} queries, {latency.size} "
                                      "samples are stored")
    for key, pct in LOADGEN_ORDER_STATISTICS:
        theirs = _number(lg.get(key))
        ours = float(latency.max()) if pct == 100.0 else float(percentile_of(latency, pct))
        if theirs is not None and theirs < ours:
            return TimingVerdict(REFUSED, f"LoadGen timed {key.removesuffix('_ns')} {_ms(theirs)} "
                                          f"around a query whose stored time is {_ms(ours)}")
    qps = _number(lg.get("qps_with_loadgen_overhead"))
    span = _span_s(case)
    if qps and count and span is not None and _duration_disagrees(span * 1e9, count / qps * 1e9):
        return TimingVerdict(REFUSED, f"the stored queries span {span:.4g} s, LoadGen ran them in "
                                      f"{count / qps:.4g} s")
    return TimingVerdict(CONSISTENT, "")


def _check_loadgen_offline(case: TimedCase, lg: dict[str, Any]) -> TimingVerdict:
    served = (case.metrics.get("summary") or {}).get("samples")
    issued = _number(lg.get("effective_samples_per_query"))
    if issued is not None and served != int(issued):
        return TimingVerdict(REFUSED, f"LoadGen issued {int(issued)} samples, the record served "
                                      f"{served}")
    first, last = _number(lg.get("min_latency_ns")), _number(lg.get("max_latency_ns"))
    span = _span_s(case)
    if first is None or last is None or span is None:
        return TimingVerdict(CONSISTENT, "")
    # LoadGen's first sample completes with our first batch, its last with our last
    ours = span * 1e9 - float(case.latency_ns[0])
    if last < span * 1e9 or _duration_disagrees(ours, last - first):
        return TimingVerdict(REFUSED, f"the stored batches span {span:.4g} s, LoadGen saw its "
                                      f"samples complete over {(last - first) / 1e9:.4g} s")
    return TimingVerdict(CONSISTENT, "")


# -- TEST04: answers from a cache ----------------------------------------------------------

def fast_share(latency_ns: np.ndarray) -> float:
    """The share of queries faster than a quarter of the p50."""
    return float(np.mean(latency_ns < FAST_FRACTION_OF_P50 * percentile_of(latency_ns, 50)))


def check_fast_cluster(case: TimedCase) -> TimingVerdict:
    """No cluster of implausibly fast answers; inconclusive where load explains one."""
    latency = case.latency_ns
    p50 = int(percentile_of(latency, 50))
    fast = latency[latency < FAST_FRACTION_OF_P50 * p50]
    share = fast_share(latency)
    if share <= MAX_FAST_SHARE:
        return TimingVerdict(CONSISTENT, f"{share:.2%} of the queries faster than a quarter of the "
                                         "p50")
    text = f"{share:.1%} of the queries took less than a quarter of the p50 ({_ms(p50)})"
    idle = _idle_ns(case)
    fast_p50 = int(percentile_of(fast, 50))
    if idle is not None and idle.size:
        bookkeeping = float(percentile_of(idle, BOOKKEEPING_PERCENTILE))
        if fast_p50 < BOOKKEEPING_FRACTION * bookkeeping:
            return TimingVerdict(REFUSED, f"{text}, at {_ms(fast_p50)}, a tenth of the harness's "
                                          f"own time between two queries ({_ms(bookkeeping)}): "
                                          "answers look cached")
    busy = busy_machine(case)
    if busy is None:
        return TimingVerdict(REFUSED, f"{text} on a quiet machine: answers look cached")
    return TimingVerdict(INCONCLUSIVE, f"{text}, but {busy}: contention makes service times "
                                       "bimodal, so this is no evidence of a cache; "
                                       f"{QUIET_MACHINE} or {CENTER_RETIME}")


# -- the center's own re-timing --------------------------------------------------------------

HARDWARE_KEYS = ("machine", "cpu_model", "cpu_count")


def same_hardware(vendor: TimedCase, center: TimedCase) -> str | None:
    """None when both runs name the same hardware, else how they differ."""
    theirs, ours = vendor.environment or {}, center.environment or {}
    for key in HARDWARE_KEYS:
        if theirs.get(key) is None or theirs.get(key) != ours.get(key):
            return f"{key} {theirs.get(key)!r} (vendor) vs {ours.get(key)!r} (center)"
    return None


def _comparable(vendor: TimedCase, center: TimedCase) -> str | None:
    if vendor.name != center.name or vendor.record.get("suite") != center.record.get("suite"):
        return f"case {vendor.name} (vendor) vs {center.name} (center)"
    for key in ("scenario", "batch_size", "model"):
        if vendor.metrics.get(key) != center.metrics.get(key):
            return f"{key} {vendor.metrics.get(key)!r} (vendor) vs " \
                   f"{center.metrics.get(key)!r} (center)"
    declared = [(c.metrics.get("threads") or {}).get("declared") for c in (vendor, center)]
    if declared[0] != declared[1]:
        return f"thread settings {declared[0]!r} (vendor) vs {declared[1]!r} (center)"
    return None


def compare_timings(vendor: TimedCase, center: TimedCase) -> TimingVerdict:
    """The vendor's samples of a case against the center's own re-timing of it.

    The vendor may be slower (a busy machine, slower hardware); it may not be more than
    :data:`MAX_SPEEDUP` times faster at the fast end or the p50 than the center's
    quiet run on the same hardware with the same settings: that is refused. Faster on
    other hardware, or against a center run that was not alone, is inconclusive.
    """
    differs = _comparable(vendor, center)
    if differs:
        return TimingVerdict(INCONCLUSIVE, f"not the same measurement ({differs}); "
                                           "center re-time with the vendor's settings needed")
    if center.latency_ns.size == 0 or vendor.latency_ns.size == 0:
        return TimingVerdict(INCONCLUSIVE, f"no samples to compare; {CENTER_RETIME}")
    figures = []
    speedup = 0.0
    for pct in COMPARED_PERCENTILES:
        theirs = float(percentile_of(vendor.latency_ns, pct))
        ours = float(percentile_of(center.latency_ns, pct))
        figures.append(f"p{pct:g} {_ms(theirs)} (vendor) vs {_ms(ours)} (center)")
        speedup = max(speedup, ours / theirs)
    said = "; ".join(figures)
    if speedup <= MAX_SPEEDUP:
        return TimingVerdict(CONSISTENT, f"{said}: within the center's own timing")
    text = f"{said}: the vendor's queries ran {speedup:.1f}x faster than the center's"
    hardware = same_hardware(vendor, center)
    if hardware:
        return TimingVerdict(INCONCLUSIVE, f"{text}, on other hardware ({hardware}); center "
                                           "re-time on the vendor's hardware needed")
    busy = busy_machine(center)
    if busy:
        return TimingVerdict(INCONCLUSIVE, f"{text}, but in the center's run {busy}; "
                                           f"{QUIET_MACHINE}")
    return TimingVerdict(REFUSED, f"{text} on the same hardware, alone: no real run of this case "
                                  "made the vendor's samples (cached or forged)")


def perf_run_arguments(record: dict[str, Any]) -> list[str]:
    """``shipei run`` arguments after ``--`` that time ``record``'s case again with its
    settings (for the center's re-timing)."""
    metrics = record.get("metrics") or {}
    settings = metrics.get("settings") or {}
    args = ["--perf-model", str(metrics.get("model"))]
    for option, key in (("--perf-min-duration", "min_duration_s"),
                        ("--perf-min-queries", "min_queries"), ("--perf-warmup", "warmup_s")):
        if key in settings:
            args += [option, str(settings[key])]
    if metrics.get("scenario") == OFFLINE and "batch_size" in settings:
        args += ["--perf-batch", str(settings["batch_size"])]
    return args
