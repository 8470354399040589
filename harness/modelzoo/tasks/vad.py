"""Voice activity detection: a synthetic speech-like signal, and speech segments.

:func:`speech_like` synthesizes alternating silence and voiced stretches: a
glottal source (40 harmonics of a wandering 130 Hz pitch) shaped by three
formants that change every 220 ms syllable, under a syllable envelope - enough
for Silero VAD to call it speech, deterministic by seed, numpy only.

:func:`segments` turns per-chunk speech probabilities into speech segments with
the rules of silero-vad's ``get_speech_timestamps`` (threshold 0.5, hysteresis
down to 0.35, 100 ms minimum silence, 250 ms minimum speech, 30 ms padding;
no maximum segment length), re-implemented because that package's code needs
torch; only its ONNX files are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: (F1, F2, F3) in Hz of five vowels
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
          (570, 840, 2410))
SYLLABLE_S = 0.22
NOISE_FLOOR = 0.002


def _voiced(samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(samples) / sample_rate
    syllables = max(1, int(np.ceil(samples / sample_rate / SYLLABLE_S)))
    which = np.minimum((t / SYLLABLE_S).astype(int), syllables - 1)
    formants = np.array(VOWELS, dtype=np.float64)[rng.integers(0, len(VOWELS), syllables)][which]
    pitch = 130.0 * (1 + 0.15 * np.sin(2 * np.pi * 1.3 * t)
                     + 0.05 * rng.standard_normal(syllables)[which])
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    signal = np.zeros(samples)
    for k in range(1, 41):
        frequency = k * pitch
        gain = sum(1.0 / (1.0 + ((frequency - formants[:, j]) / (80 + 40 * j)) ** 2)
                   for j in range(3)) / np.sqrt(k)
        signal += np.where(frequency < sample_rate / 2, gain, 0.0) * np.sin(k * phase)
    position = (t % SYLLABLE_S) / SYLLABLE_S
    signal *= np.sin(np.pi * np.clip(position / 0.85, 0, 1)) ** 0.6
    return 0.3 * signal / np.abs(signal).max()


def speech_like(durations: Sequence[float], sample_rate: int = 16000, seed: int = 0
                ) -> np.ndarray:
    """Silence, speech, silence, ... of the given durations (seconds), as float32."""
    rng = np.random.default_rng(seed)
    parts = []
    for index, seconds in enumerate(durations):
        samples = int(round(float(seconds) * sample_rate))
        noise = NOISE_FLOOR * rng.standard_normal(samples)
        parts.append(noise + (_voiced(samples, sample_rate, rng) if index % 2 else 0.0))
    return np.concatenate(parts).astype(np.float32)


def true_segments(durations: Sequence[float]) -> list[tuple[float, float]]:
    """Where :func:`speech_like` put speech, in seconds."""
    edges = np.cumsum([0.0, *map(float, durations)])
    return [(round(float(edges[i]), 3), round(float(edges[i + 1]), 3))
            for i in range(1, len(durations), 2)]


def segments(probabilities: Sequence[float], chunk: int, sample_rate: int,
             total_samples: int, threshold: float = 0.5, neg_threshold: float = 0.35,
             min_speech_ms: int = 250, min_silence_ms: int = 100, pad_ms: int = 30
             ) -> list[tuple[float, float]]:
    """Speech segments ``(start_s, end_s)`` from per-chunk speech probabilities."""
    min_speech = sample_rate * min_speech_ms / 1000
    min_silence = sample_rate * min_silence_ms / 1000
    pad = int(sample_rate * pad_ms / 1000)
    found: list[list[int]] = []
    start, temp_end, triggered = 0, 0, False
    for i, probability in enumerate(probabilities):
        sample = chunk * i
        if probability >= threshold and temp_end:
            temp_end = 0
        if probability >= threshold and not triggered:
            triggered, start = True, sample
            continue
        if probability < neg_threshold and triggered:
            temp_end = temp_end or sample
            if sample - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                found.append([start, temp_end])
            start, temp_end, triggered = 0, 0, False
    if triggered and total_samples - start > min_speech:
        found.append([start, total_samples])
    for i, segment in enumerate(found):  # pad, splitting the gap when neighbours touch
        if i == 0:
            segment[0] = max(0, segment[0] - pad)
        if i + 1 < len(found):
            gap = found[i + 1][0] - segment[1]
            if gap < 2 * pad:
                segment[1] += gap // 2
                found[i + 1][0] = max(0, found[i + 1][0] - gap // 2)
            else:
                segment[1] = min(total_samples, segment[1] + pad)
                found[i + 1][0] = max(0, found[i + 1][0] - pad)
        else:
            segment[1] = min(total_samples, segment[1] + pad)
    return [(round(s / sample_rate, 3), round(e / sample_rate, 3)) for s, e in found]


#: how far a segment boundary may move from the reference's: two 32 ms chunks
MAX_BOUNDARY_SHIFT_S = 0.064


def compare(result: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]
            ) -> tuple[bool, str, dict[str, Any]]:
    """Whether a target's segments agree with the reference's, why not, and figures."""
    metrics: dict[str, Any] = {"segments": len(result), "reference_segments": len(reference)}
    if len(result) != len(reference):
        return False, (f"{len(result)} speech segments, the reference has "
                       f"{len(reference)}"), metrics
    shifts = [abs(a - b) for seg, ref in zip(result, reference, strict=True)
              for a, b in zip(seg, ref, strict=True)]
    metrics["max_boundary_shift_s"] = round(max(shifts), 4) if shifts else 0.0
    if shifts and max(shifts) > MAX_BOUNDARY_SHIFT_S:
        return False, (f"a segment boundary moved {max(shifts):.3f} s from the reference's "
                       f"(> {MAX_BOUNDARY_SHIFT_S} s)"), metrics
    return True, "", metrics


def overlap_with_truth(found: Sequence[Sequence[float]], truth: Sequence[Sequence[float]]
                       ) -> float:
    """Fraction of the true speech time covered by the found segments (informative)."""
    covered = sum(max(0.0, min(e, te) - max(s, ts)) for s, e in found for ts, te in truth)
    total = sum(te - ts for ts, te in truth)
    return round(covered / total, 4) if total else 1.0
