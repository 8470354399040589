"""The sensor suite's criteria, as pure functions of a capture.

A capture (:class:`harness.driver.sensor.Capture`) is the ordered list of what the
host saw while a sensor streamed: samples with host arrival times, damaged
frames, stray bytes, link drops, stream starts and stops. Each check turns it
into one :class:`~harness.cases.case.Outcome`; they share :func:`account`, which
attributes every missing sequence number to exactly one cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.cases.case import Outcome

SUITE = "sensors"
MIN_RATE_WINDOW_S = 0.8
MIN_RATE_SAMPLES = 20
MAX_FLAGGED_FRACTION = 0.05


def verdict(problems: list[str], metrics: dict[str, Any], passed: str) -> Outcome:
    if problems:
        return Outcome("fail", "; ".join(problems), metrics=metrics)
    return Outcome("pass", passed, metrics=metrics)


# -- sequence accounting --------------------------------------------------------------

@dataclass
class Accounting:
    """Where every sequence number of the capture went."""

    received: int = 0
    damaged: dict[str, int] = field(default_factory=dict)  # by receiver verdict
    damaged_headers: int = 0  # frames whose header was hit: seen only as stray bytes
    dropped: int = 0  # missing with no trace on the line
    lost_in_outages: int = 0  # missing across a link drop
    garbage_bytes: int = 0  # stray bytes that are no frame
    damaged_other: int = 0  # damaged frames that were not samples (replies)
    seq_first: int | None = None  # first sequence number the stream announced
    seq_last: int | None = None  # last one the device reported sending

    @property
    def damaged_frames(self) -> int:
        return sum(self.damaged.values()) + self.damaged_headers

    def metrics(self) -> dict[str, Any]:
        return {"frames_received": self.received, "damaged_frames": self.damaged_frames,
                "damaged_by_kind": dict(self.damaged, header=self.damaged_headers),
                "garbage_bytes": self.garbage_bytes, "dropped_frames": self.dropped,
                "lost_in_outages": self.lost_in_outages,
                "damaged_replies": self.damaged_other,
                "seq_first": self.seq_first, "seq_last": self.seq_last}


def account(capture: Any) -> Accounting:
    """Attribute each gap in the sample sequence: damaged in transit (a damaged
    frame with an intact header names its sequence number; a run of stray bytes
    holds ``ceil(bytes / frame size)`` frames at most), lost in a link outage,
    or dropped (nothing arrived)."""
    acc = Accounting()
    prev: int | None = None
    known: list[int] = []
    stray = 0
    outage = False

    def close_gap(upto: int) -> None:
        nonlocal known, stray
        missing = max(upto - prev - 1, 0) if prev is not None else 0
        named = [s for s in known if prev is None or prev < s < upto]
        unknown = max(missing - len(named), 0)
        from_stray = min(unknown, math.ceil(stray / capture.frame_bytes)) if stray else 0
        acc.damaged_headers += from_stray
        acc.garbage_bytes += max(stray - from_stray * capture.frame_bytes, 0)
        if outage:
            acc.lost_in_outages += unknown - from_stray
        else:
            acc.dropped += unknown - from_stray
        known, stray = [], 0

    for event in capture.events:
        if event.kind == "damage":
            if event.is_sample:
                acc.damaged[event.damage] = acc.damaged.get(event.damage, 0) + 1
                known.append(event.frame_seq)
            else:
                acc.damaged_other += 1
        elif event.kind == "stray":
            stray += event.nbytes
        elif event.kind == "link_drop":
            outage = True
        elif event.kind == "start":
            if acc.seq_first is None:
                acc.seq_first = event.next_seq
            if prev is None:
                prev = event.next_seq - 1
            elif outage:
                close_gap(event.next_seq)
                prev = max(prev, event.next_seq - 1)
            outage = False
        elif event.kind == "sample":
            acc.received += 1
            if prev is not None and event.seq <= prev:
                continue  # a repeat or a restart: the monotonicity check reports it
            close_gap(event.seq)
            prev = event.seq
        elif event.kind == "stop" and event.last_seq is not None:
            acc.seq_last = event.last_seq
            if prev is None or event.last_seq > prev:
                close_gap(event.last_seq + 1)
                prev = event.last_seq
    if stray or known:
        acc.garbage_bytes += stray
    return acc


def frame_integrity(capture: Any, info: Any) -> Outcome:
    acc = account(capture)
    problems = []
    if acc.damaged_frames:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(acc.metrics()["damaged_by_kind"]
                                                           .items()) if v)
        problems.append(f"{acc.damaged_frames} of {acc.received + acc.damaged_frames} frames "
                        f"arrived damaged and were rejected by their CRC ({kinds})")
    if acc.garbage_bytes:
        problems.append(f"{acc.garbage_bytes} stray bytes on the line outside any frame")
    if acc.damaged_other:
        problems.append(f"{acc.damaged_other} damaged reply frames")
    if not acc.received:
        problems.append("no intact frame arrived")
    return verdict(problems, acc.metrics(),
                   f"{acc.received} frames, every one intact (CRC-16 header, CRC-32 frame)")


def dropped_frames(capture: Any, info: Any) -> Outcome:
    acc = account(capture)
    problems = []
    if acc.dropped:
        problems.append(f"{acc.dropped} frames missing from the sequence with no trace "
                        f"on the line (dropped by the device)")
    if not acc.received:
        problems.append("no frame arrived")
    note = f"; {acc.lost_in_outages} lost across link drops" if acc.lost_in_outages else ""
    return verdict(problems, acc.metrics(),
                   f"sequence {acc.seq_first}..{acc.seq_last}: nothing dropped{note}")


# -- timing -------------------------------------------------------------------------

def segments(capture: Any) -> list[list[Any]]:
    """Valid-order sample runs between link drops."""
    runs: list[list[Any]] = [[]]
    for event in capture.events:
        if event.kind == "link_drop" and runs[-1]:
            runs.append([])
        elif event.kind == "sample":
            runs[-1].append(event)
    return [r for r in runs if r]


def _lower_hull(x: np.ndarray, y: np.ndarray) -> list[int]:
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a]) > 0:
                break
            hull.pop()
        hull.append(i)
    return hull


def _lower_envelope_period(seqs: np.ndarray, times: np.ndarray, period: float
                           ) -> tuple[float, int, int]:
    """Sample period from the lower envelope of arrival times (Moon et al., 1999).

    Delays only ever add to an arrival time, so the line under every point
    ``(seq, arrival - seq * period)`` that hugs them closest follows the
    sender's clock: it is the lower convex hull's edge over the mean sequence
    number. Stalls, bursts and host scheduling lift points off it but do not
    tilt it. Returns the period and the two samples the edge joins.
    """
    x = seqs - seqs[0]
    offsets = times - x * period
    hull = _lower_hull(x, offsets)
    centre = float(x.mean())
    for a, b in zip(hull, hull[1:], strict=False):
        if x[a] <= centre <= x[b]:
            break
    return period + (offsets[b] - offsets[a]) / (x[b] - x[a]), a, b


def sample_rate(capture: Any, info: Any) -> Outcome:
    runs = [r for r in segments(capture) if len(r) >= MIN_RATE_SAMPLES]
    if not runs:
        return Outcome("error", f"too few samples to measure the rate "
                                f"({len(capture.samples)} received)")
    run = max(runs, key=lambda r: r[-1].host_t - r[0].host_t)
    seqs = np.array([s.seq for s in run], dtype=np.float64)
    times = np.array([s.host_t for s in run])
    stamps = np.array([s.timestamp_us for s in run], dtype=np.float64) / 1e6
    window = times[-1] - times[0]
    if window < MIN_RATE_WINDOW_S:
        return Outcome("error", f"the longest unbroken run lasted {window:.2f} s; the rate "
                                f"needs {MIN_RATE_WINDOW_S:g} s")
    host_period, a, b = _lower_envelope_period(seqs, times, 1.0 / info.rate_hz)
    measured = 1.0 / host_period
    device_period = (stamps[b] - stamps[a]) / (seqs[b] - seqs[a])
    deviation = measured / info.rate_hz - 1.0
    metrics = {"declared_rate_hz": info.rate_hz, "measured_rate_hz": measured,
               "deviation": deviation, "tolerance": info.rate_tolerance,
               "device_clock_rate_hz": 1.0 / device_period if device_period > 0 else None,
               "clock_drift": (device_period / host_period - 1.0) if device_period > 0
               else None, "window_s": window, "samples": len(run)}
    problems = []
    if abs(deviation) > info.rate_tolerance:
        problems.append(f"measured {measured:.3f} Hz against the declared {info.rate_hz:g} Hz "
                        f"({deviation:+.2%}, tolerance ±{info.rate_tolerance:.2%})")
    return verdict(problems, metrics, f"{measured:.3f} Hz ({deviation:+.3%} of the declared "
                                      f"{info.rate_hz:g} Hz)")


def _backstep_indices(run: list[Any]) -> set[int]:
    return {i for i in range(1, len(run)) if run[i].timestamp_us <= run[i - 1].timestamp_us
            and run[i].seq > run[i - 1].seq}


def timing_jitter(capture: Any, info: Any) -> Outcome:
    intervals = []
    for run in segments(capture):
        bad = _backstep_indices(run)
        for i in range(1, len(run)):
            if run[i].seq == run[i - 1].seq + 1 and i not in bad and i - 1 not in bad \
                    and i + 1 not in bad:
                intervals.append(run[i].timestamp_us - run[i - 1].timestamp_us)
    if len(intervals) < MIN_RATE_SAMPLES:
        return Outcome("error", f"only {len(intervals)} consecutive sample pairs; the "
                                f"jitter needs {MIN_RATE_SAMPLES}")
    deltas = np.array(intervals, dtype=np.float64)
    mean = float(deltas.mean())
    rms = float(deltas.std() / mean)
    worst = float(np.abs(deltas - mean).max() / mean)
    metrics = {"intervals": len(deltas), "mean_interval_us": mean, "jitter_rms": rms,
               "jitter_max_seen": worst, "limit": info.jitter_max}
    problems = []
    if rms > info.jitter_max:
        problems.append(f"sample interval jitter {rms:.2%} of the period (rms; worst "
                        f"{worst:.1%}) exceeds {info.jitter_max:.2%}")
    return verdict(problems, metrics, f"interval jitter {rms:.3%} of the period (rms)")


def stalls(capture: Any, info: Any) -> Outcome:
    gaps = []
    for run in segments(capture):
        times = np.array([s.host_t for s in run])
        gaps.extend(np.diff(times).tolist())
    if not gaps:
        return Outcome("error", "too few samples to judge stalls")
    long_gaps = [g for g in gaps if g > info.max_gap_s]
    metrics = {"stalls": len(long_gaps), "max_gap_s": max(gaps),
               "limit_s": info.max_gap_s, "stall_gaps_s": long_gaps[:20]}
    problems = []
    if long_gaps:
        problems.append(f"{len(long_gaps)} stall(s): no sample for up to {max(gaps):.3f} s "
                        f"(limit {info.max_gap_s:.3f} s)")
    return verdict(problems, metrics, f"longest gap between samples {max(gaps) * 1000:.1f} ms")


def timestamps_monotonic(capture: Any, info: Any) -> Outcome:
    samples = capture.samples
    backsteps = repeats = resets = 0
    for before, after in zip(samples, samples[1:], strict=False):
        if after.seq == before.seq:
            repeats += 1
        elif after.seq < before.seq:
            resets += 1
        elif after.timestamp_us <= before.timestamp_us:
            backsteps += 1
    metrics = {"samples": len(samples), "timestamp_backsteps": backsteps,
               "repeated_seq": repeats, "seq_resets": resets}
    problems = []
    if backsteps:
        problems.append(f"{backsteps} timestamp(s) not after the previous sample's")
    if repeats:
        problems.append(f"{repeats} repeated sequence number(s)")
    if resets:
        problems.append(f"the sequence number went backwards {resets} time(s)")
    if len(samples) < 2:
        problems.append("fewer than two samples")
    return verdict(problems, metrics, f"{len(samples)} samples, sequence numbers and "
                                      f"timestamps strictly increasing")


# -- accuracy -----------------------------------------------------------------------

def truth_times(capture: Any) -> np.ndarray:
    """The device times (s) accuracy judges: those of the valid samples."""
    return np.array([s.timestamp_us for s in capture.samples if s.valid],
                    dtype=np.float64) / 1e6


def accuracy(capture: Any, info: Any, truth: Any) -> Outcome:
    if truth is None:
        return Outcome("skip", "no ground truth: pass truth=FILE (a reference recording) or "
                               "use a device that declares its truth model")
    if not info.accuracy:
        return Outcome("skip", "the sensor declares no accuracy; pass e.g. accel_rms=, "
                               "gyro_rms= or distance_rms_mm=")
    samples = capture.samples
    valid = [s for s in samples if s.valid]
    flagged = len(samples) - len(valid)
    if not valid:
        return Outcome("error", f"no valid sample to judge ({flagged} flagged)")
    expected = truth.at(truth_times(capture))
    inside = np.ones(len(valid), dtype=bool)
    for column in expected.values():
        inside &= ~np.isnan(column)
    metrics: dict[str, Any] = {"truth": truth.description, "samples": int(inside.sum()),
                               "outside_truth_span": int((~inside).sum()),
                               "flagged_samples": flagged}
    if not inside.any():
        return Outcome("error", "no sample falls within the ground truth's time span",
                       metrics=metrics)
    problems = []
    for limit_name, (channels, limit) in sorted(info.accuracy.items()):
        errors = np.stack([np.array([s.values[c] for s in valid])[inside]
                           - expected[c][inside] for c in channels])
        rms = float(np.sqrt(np.mean(errors ** 2)))
        metrics[f"{limit_name}_measured"] = rms
        metrics[f"{limit_name}_limit"] = limit
        metrics[f"{limit_name}_bias"] = [float(b) for b in errors.mean(axis=1)]
        if rms > limit:
            problems.append(f"{'/'.join(channels)} rms error {rms:.4g} exceeds {limit:.4g}")
    if flagged > MAX_FLAGGED_FRACTION * len(samples):
        problems.append(f"{flagged} of {len(samples)} samples flagged invalid by the sensor")
    summary = ", ".join(f"{k} {metrics[k + '_measured']:.4g} (limit {metrics[k + '_limit']:.4g})"
                        for k in sorted(info.accuracy))
    return verdict(problems, metrics, f"against {truth.description.split(' ')[0]}: {summary}")


def link_stability(capture: Any, info: Any) -> Outcome:
    drops = [e for e in capture.events if e.kind == "link_drop"]
    acc = account(capture)
    metrics = {"link_drops": len(drops), "lost_in_outages": acc.lost_in_outages,
               "reconnects": capture.link_stats.get("reconnects", 0),
               "aborted": capture.aborted}
    if capture.aborted:
        return Outcome("infra_error", f"the capture ended early: {capture.aborted}",
                       metrics=metrics)
    if drops:
        return Outcome("infra_error",
                       f"the serial link dropped {len(drops)} time(s) during the capture "
                       f"(recovered each time; {acc.lost_in_outages} frames lost in the "
                       f"outages); a link failure is the bench's, so retest on a known-good "
                       f"cable and port before blaming the sensor: {drops[0].reason}",
                       metrics=metrics)
    return Outcome("pass", f"link up for the whole {capture.duration_s:g} s capture",
                   metrics=metrics)
