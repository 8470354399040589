"""Speech recognition: espeak-ng speech from known text, log-mel features, CTC decoding,
CER/WER through jiwer.

Speech is synthesised with Debian's ``espeak-ng`` (Mandarin ``cmn``, English
``en-us``) with every voice parameter given on the command line (speed, pitch,
amplitude, word gap), so the same text gives the same samples (checked by sha256
in the tests). Features are 40 log-mel bands (25 ms Hann window, 10 ms hop at
espeak's 22,050 Hz) normalised per utterance, in numpy. The recogniser's output
is per-frame token posteriors ``[1, frames, tokens]`` with the CTC blank first.

The task speaks word by word: each token (a Mandarin character, an English word)
is synthesised alone, trimmed to its voiced frames and strung with 200 ms pauses
(isolated-word recognition, as voice commands are spoken). Decoding splits the
frames at blanks (the argmax), closes gaps of up to :data:`GAP_CLOSE` frames inside
a word, drops segments shorter than :data:`MIN_RUN` frames and names each segment
by the summed posteriors of the utterance language's tokens (the language is
given, as a recogniser's language setting is). Error rates come from ``jiwer``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 22050
N_FFT, WINDOW, HOP, N_MELS = 1024, 551, 220, 40
MIN_RUN, GAP_CLOSE = 3, 12
PAUSE_S = 0.2
ESPEAK = "espeak-ng"
ESPEAK_HINT = "apt-get install espeak-ng"
VOICES = {"zh": "cmn", "en": "en-us"}

#: the recogniser's tokens after the blank: Mandarin characters, then English words
ZH_TOKENS = tuple("适配测试中心人工智能语音识别场景认证")
EN_TOKENS = ("speech", "recognition", "test", "for", "the", "adaptation", "center",
             "artificial", "intelligence", "scenario", "certification", "on", "chip")
TOKENS = ("<blank>", *ZH_TOKENS, *EN_TOKENS)

#: the task's utterances (known text) per language
UTTERANCES = {
    "zh": ("语音识别测试", "人工智能适配中心", "场景适配认证", "测试中心认证"),
    "en": ("speech recognition test", "the adaptation center",
           "artificial intelligence on chip", "scenario certification for the chip"),
}
#: how the task speaks them: a speed and pitch the recogniser was not fitted on
TASK_VOICE = {"speed": 165, "pitch": 55}

Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]]


class SpeechUnavailable(Exception):
    """Speech cannot be synthesised here (espeak-ng missing or failing)."""


@dataclass(frozen=True)
class Utterance:
    language: str
    text: str
    samples: np.ndarray  # float32 in [-1, 1] at SAMPLE_RATE

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.samples.tobytes()).hexdigest()


# -- synthesis ------------------------------------------------------------------------
def espeak_path() -> str:
    found = shutil.which(ESPEAK)
    if found is None:
        raise SpeechUnavailable(f"{ESPEAK} is not installed; {ESPEAK_HINT}")
    return found


def espeak_version() -> str:
    done = subprocess.run([espeak_path(), "--version"], capture_output=True, text=True,
                          timeout=30, check=False)
    return done.stdout.split("Data at")[0].strip()


def synthesize(text: str, language: str, speed: int = 150, pitch: int = 50) -> np.ndarray:
    """``text`` spoken by espeak-ng with fixed voice parameters, as float32 samples."""
    argv = [espeak_path(), "-v", VOICES[language], "-s", str(speed), "-p", str(pitch),
            "-a", "100", "-g", "0"]
    with tempfile.TemporaryDirectory(prefix="shipei-speech-") as folder:
        path = Path(folder) / "speech.wav"
        try:
            done = subprocess.run([*argv, "-w", str(path), text], capture_output=True,
                                  text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SpeechUnavailable(f"{ESPEAK} could not run: {exc}") from None
        if done.returncode != 0 or not path.is_file():
            raise SpeechUnavailable(f"{ESPEAK} exited {done.returncode}: "
                                    f"{done.stderr.strip()[:200]}")
        with wave.open(str(path), "rb") as audio:
            if audio.getsampwidth() != 2 or audio.getframerate() != SAMPLE_RATE:
                raise SpeechUnavailable(f"{ESPEAK} wrote {audio.getsampwidth() * 8}-bit "
                                        f"{audio.getframerate()} Hz audio, not 16-bit "
                                        f"{SAMPLE_RATE} Hz")
            frames = audio.readframes(audio.getnframes())
    return (np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0)


def split(text: str, language: str) -> list[str]:
    """A text's tokens: characters for Chinese, words for English."""
    return list(text.replace(" ", "")) if language == "zh" else text.split()


def voiced_frames(samples: np.ndarray) -> np.ndarray:
    """Per HOP-sample frame: whether its energy is above 2% of the loudest frame's."""
    frames = samples.size // HOP
    energy = np.square(samples[:frames * HOP].reshape(frames, HOP)).mean(1)
    return energy > 0.02 * energy.max() if frames else np.zeros(0, bool)


def spoken(text: str, language: str, speed: int, pitch: int) -> np.ndarray:
    """``text`` spoken word by word: each token's voiced stretch, between pauses."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    parts = [pause]
    for token in split(text, language):
        samples = synthesize(token, language, speed, pitch)
        voiced = np.nonzero(voiced_frames(samples))[0]
        if voiced.size:
            parts += [samples[voiced[0] * HOP:(voiced[-1] + 1) * HOP], pause]
    return np.concatenate(parts)


def utterances(language: str) -> list[Utterance]:
    """The task's utterances in one language, spoken with :data:`TASK_VOICE`."""
    return [Utterance(language, text, spoken(text, language, **TASK_VOICE))
            for text in UTTERANCES[language]]


# -- features -------------------------------------------------------------------------
def _mel_filters() -> np.ndarray:
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges = 700.0 * (10 ** (np.linspace(mel(np.array(60.0)), mel(np.array(8000.0)),
                                        N_MELS + 2) / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    filters = np.zeros((N_MELS, bins.size))
    for i in range(N_MELS):
        low, centre, high = edges[i:i + 3]
        filters[i] = np.clip(np.minimum((bins - low) / (centre - low),
                                        (high - bins) / (high - centre)), 0.0, None)
    return filters


def features(samples: np.ndarray) -> np.ndarray:
    """Normalised log-mel features ``[1, N_MELS, frames]`` (float32)."""
    padded = np.concatenate([np.zeros(WINDOW // 2, np.float32), samples,
                             np.zeros(WINDOW, np.float32)])
    count = 1 + (padded.size - WINDOW) // HOP
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(count)[:, None]
    spectrum = np.abs(np.fft.rfft(padded[index] * np.hanning(WINDOW), N_FFT)) ** 2
    logmel = np.log(spectrum @ _mel_filters().T + 1e-6)
    normalised = (logmel - logmel.mean(0)) / (logmel.std(0) + 1e-5)
    return normalised.T[None].astype(np.float32)


# -- decoding and metrics -------------------------------------------------------------
def language_mask(language: str) -> np.ndarray:
    """The tokens a language's decoding may emit (the blank and that language's)."""
    own = ZH_TOKENS if language == "zh" else EN_TOKENS
    return np.array([i == 0 or token in own for i, token in enumerate(TOKENS)])


def segments(best: np.ndarray) -> list[tuple[int, int]]:
    """Non-blank stretches ``(start, stop)`` of an argmax path, gaps of up to GAP_CLOSE
    frames closed, stretches shorter than MIN_RUN frames dropped."""
    voiced = best != 0
    where = np.nonzero(voiced)[0]
    for a, b in zip(where[:-1], where[1:], strict=True):
        if 1 < b - a <= GAP_CLOSE:
            voiced[a:b] = True
    found, start = [], None
    for i, flag in enumerate([*voiced.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            if i - start >= MIN_RUN:
                found.append((start, i))
            start = None
    return found


def decode(posteriors: np.ndarray, language: str) -> list[str]:
    """The tokens of ``[1, frames, tokens]`` posteriors: one per segment, by vote."""
    scores = np.asarray(posteriors, dtype=np.float64)
    if scores.ndim != 3 or scores.shape[0] != 1 or scores.shape[2] != len(TOKENS):
        raise ValueError(f"posteriors of shape {list(scores.shape)}, expected "
                         f"[1, frames, {len(TOKENS)}]")
    allowed = np.where(language_mask(language), scores[0], 0.0)
    votes = [allowed[a:b, 1:].sum(0) for a, b in segments(allowed.argmax(axis=1))]
    return [TOKENS[int(v.argmax()) + 1] for v in votes]


def transcript(words: Sequence[str], language: str) -> str:
    """Tokens as text: characters joined for Chinese, words spaced for English."""
    return ("" if language == "zh" else " ").join(words)


def recognize(run: Runner, utterance: Utterance) -> str:
    outputs = run({"features": features(utterance.samples)})
    if len(outputs) != 1:
        raise ValueError(f"expected one output, got {sorted(outputs)}")
    posteriors = np.asarray(next(iter(outputs.values())))
    return transcript(decode(posteriors, utterance.language), utterance.language)


def error_rate(language: str, truths: Sequence[str], hypotheses: Sequence[str]) -> float:
    """CER for Chinese, WER for English, over all utterances (jiwer)."""
    import jiwer

    hypotheses = [h if h else " " for h in hypotheses]  # jiwer refuses empty strings
    measure = jiwer.cer if language == "zh" else jiwer.wer
    return round(float(measure(list(truths), list(hypotheses))), 4)
