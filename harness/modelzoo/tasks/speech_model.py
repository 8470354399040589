"""The generated speech recogniser: a small frame classifier fitted here on espeak-ng speech.

No wheel on the package registry was found to ship a Chinese and English speech
recogniser as an ONNX file (docs/scenarios.md lists the search), so this one is
*generated*, and says so wherever it is shown. It is a closed-vocabulary CTC-style
model over :data:`~harness.modelzoo.tasks.speech.TOKENS`:

    features [1, 40, frames] -> Conv1d(40->1024, k=9) -> Relu -> Conv1d(1024->tokens, k=1)
                             -> Transpose -> Softmax = posteriors [1, frames, tokens]

The first layer is seeded random projections of nine frames of context; the second is
fitted by ridge regression (numpy, closed form) to frame labels of training speech:
each token spoken alone by espeak-ng at twenty speed/pitch pairs, strung into seeded
sequences with silences, every voiced frame labelled with its token and the rest
blank. The task speaks its sentences word by word at a speed and pitch not in that
grid (:func:`~harness.modelzoo.tasks.speech.spoken`).

    python -m harness.modelzoo.tasks.speech_model [--check]   # rewrite (or compare) it
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.modelzoo.tasks import speech

ARTIFACT = Path(__file__).resolve().parents[3] / "models" / "artifacts" / "speech_ctc_zh_en.onnx"
HIDDEN, CONTEXT, SEED = 1024, 9, 29
SPEEDS, PITCHES = (120, 140, 160, 180, 200), (35, 50, 65, 80)
SEQUENCES, RIDGE, SHARPNESS = 400, 1.0, 6.0
OPSET = 13


def _pieces() -> dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]]:
    """Each token alone at every speed and pitch: (samples, per-frame voiced mask)."""
    found: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for index, token in enumerate(speech.TOKENS[1:], 1):
        language = "zh" if token in speech.ZH_TOKENS else "en"
        for speed in SPEEDS:
            for pitch in PITCHES:
                samples = speech.synthesize(token, language, speed, pitch)
                found.setdefault((language, index), []).append(
                    (samples, speech.voiced_frames(samples)))
    return found


def _training_set(rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    pieces = _pieces()
    by_language: dict[str, list[int]] = {}
    for language, index in pieces:
        by_language.setdefault(language, []).append(index)
    inputs, labels = [], []
    for n in range(SEQUENCES):
        language = "zh" if n % 2 else "en"
        samples, frame_labels = [], []
        for index in rng.sample(by_language[language], rng.randint(2, 6)):
            gap = np.zeros(int(speech.HOP * rng.randint(3, 25)), np.float32)
            piece, voiced = rng.choice(pieces[(language, index)])
            piece = piece[:voiced.size * speech.HOP]
            samples += [gap, piece]
            frame_labels += [np.zeros(gap.size // speech.HOP, np.int64),
                             np.where(voiced, index, 0)]
        samples.append(np.zeros(speech.HOP * 10, np.float32))
        frame_labels.append(np.zeros(10, np.int64))
        signal, label = np.concatenate(samples), np.concatenate(frame_labels)
        feats = speech.features(signal)[0].T  # frames x mels
        count = min(len(feats), label.size)
        inputs.append(feats[:count])
        labels.append(label[:count])
    return np.concatenate(inputs), np.concatenate(labels)


def _hidden(feats: np.ndarray, w1: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """numpy twin of the first Conv + Relu (for fitting), frames x HIDDEN."""
    pad = CONTEXT // 2
    padded = np.pad(feats, ((pad, pad), (0, 0)))
    windows = np.stack([padded[i:i + len(feats)] for i in range(CONTEXT)], 2)  # T,mels,k
    return np.maximum(0.0, np.einsum("tmk,hmk->th", windows, w1) + b1)


def build() -> onnx.ModelProto:
    """Fit the recogniser on freshly synthesised speech and return it as ONNX."""
    rng = np.random.default_rng(SEED)
    w1 = (rng.standard_normal((HIDDEN, speech.N_MELS, CONTEXT))
          / np.sqrt(speech.N_MELS * CONTEXT)).astype(np.float32)
    b1 = (0.5 * rng.standard_normal(HIDDEN)).astype(np.float32)
    feats, labels = _training_set(random.Random(SEED))
    hidden = _hidden(feats.astype(np.float64), w1.astype(np.float64), b1.astype(np.float64))
    design = np.concatenate([hidden, np.ones((len(hidden), 1))], 1)
    targets = np.eye(len(speech.TOKENS))[labels]
    solution = np.linalg.solve(design.T @ design + RIDGE * np.eye(design.shape[1]),
                               design.T @ targets) * SHARPNESS
    w2 = solution[:-1].T[:, :, None].astype(np.float32)
    b2 = solution[-1].astype(np.float32)
    return _graph(w1, b1, w2, b2)


def _graph(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["features", "w1", "b1"], ["h"], pads=[CONTEXT // 2] * 2),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2", "b2"], ["logits"]),
        helper.make_node("Transpose", ["logits"], ["framewise"], perm=[0, 2, 1]),
        helper.make_node("Softmax", ["framewise"], ["posteriors"], axis=2),
    ]
    initializers = [numpy_helper.from_array(a, n)
                    for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    graph = helper.make_graph(
        nodes, "speech_ctc_zh_en",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                       [1, speech.N_MELS, "frames"])],
        [helper.make_tensor_value_info("posteriors", TensorProto.FLOAT,
                                       [1, "frames", len(speech.TOKENS)])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="shipei speech_model (generated)")
    model.ir_version = 8
    helper.set_model_props(model, {"generated": "fitted here on espeak-ng speech; not a "
                                                "released model", "tokens": "\n".join(
                                                    speech.TOKENS)})
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the checked-in artifact instead of writing it")
    args = parser.parse_args(argv)
    data = build().SerializeToString()
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        same = ARTIFACT.is_file() and ARTIFACT.read_bytes() == data
        print(f"{ARTIFACT.name}: {'unchanged' if same else 'differs'} (sha256 {digest}, "
              f"{speech.espeak_version()})")
        return 0 if same else 1
    ARTIFACT.write_bytes(data)
    print(f"wrote {ARTIFACT.name}: sha256 {digest}, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
