"""Test inputs, produced deterministically from a manifest's input specifications.

Every generator takes the resolved shape (``None`` when the generator decides the
length itself, as the speech-like signal does), the dtype, the manifest's params
and the data set's index (added to the seed so data sets differ), and returns an
array. The same manifest gives the same bytes on every machine with the same
numpy; :func:`inputs_digest` pins them in the golden so a drift is caught.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from onnx import helper

from harness.modelzoo.manifest import Manifest, ManifestError, ManifestInput
from harness.modelzoo.tasks.ocr import strokes_image
from harness.modelzoo.tasks.vad import speech_like

Generator = Callable[[tuple[int, ...] | None, np.dtype, Mapping[str, Any], int], np.ndarray]


def _need_shape(shape: tuple[int, ...] | None, kind: str) -> tuple[int, ...]:
    if shape is None:
        raise ValueError(f"generator {kind!r} needs every dimension resolved")
    return shape


def onnx_dummy(shape: tuple[int, ...] | None, dtype: np.dtype, params: Mapping[str, Any],
               index: int) -> np.ndarray:
    """onnx's own ``Runner.generate_dummy_data`` (what its backend runner feeds the
    "light" models, whose shipped expected outputs were computed from it)."""
    from onnx.backend.test.runner import Runner

    shape = _need_shape(shape, "onnx_dummy")
    if dtype != np.float32:
        raise ValueError("onnx_dummy makes float32 only")
    info = helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(dtype), shape)
    return Runner.generate_dummy_data(info, seed=int(params.get("seed", 0)) + index,
                                      random=bool(params.get("random", False)))


def _rng(params: Mapping[str, Any], index: int) -> np.random.Generator:
    return np.random.default_rng(int(params.get("seed", 0)) + index)


def normal(shape: tuple[int, ...] | None, dtype: np.dtype, params: Mapping[str, Any],
           index: int) -> np.ndarray:
    values = _rng(params, index).standard_normal(_need_shape(shape, "normal"))
    return (values * float(params.get("std", 1.0)) + float(params.get("mean", 0.0))
            ).astype(dtype)


def uniform(shape: tuple[int, ...] | None, dtype: np.dtype, params: Mapping[str, Any],
            index: int) -> np.ndarray:
    return _rng(params, index).uniform(float(params.get("low", 0.0)),
                                       float(params.get("high", 1.0)),
                                       _need_shape(shape, "uniform")).astype(dtype)


def integers(shape: tuple[int, ...] | None, dtype: np.dtype, params: Mapping[str, Any],
             index: int) -> np.ndarray:
    return _rng(params, index).integers(int(params.get("low", 0)), int(params["high"]),
                                        _need_shape(shape, "integers")).astype(dtype)


def constant(shape: tuple[int, ...] | None, dtype: np.dtype, params: Mapping[str, Any],
             index: int) -> np.ndarray:
    return np.full(_need_shape(shape, "constant"), params.get("value", 0), dtype=dtype)


def _strokes(shape: tuple[int, ...] | None, dtype: np.dtype, params: Mapping[str, Any],
             index: int) -> np.ndarray:
    batch, channels, height, width = _need_shape(shape, "strokes_image")
    if channels != 3:
        raise ValueError("strokes_image makes 3-channel images")
    seed = int(params.get("seed", 0)) + index
    images = [strokes_image(height, width, seed + 1000 * i) for i in range(batch)]
    return np.stack(images).astype(dtype)


def _speech(shape: tuple[int, ...] | None, dtype: np.dtype, params: Mapping[str, Any],
            index: int) -> np.ndarray:
    signal = speech_like(durations=params["durations"],
                         sample_rate=int(params.get("sample_rate", 16000)),
                         seed=int(params.get("seed", 0)) + index)
    if shape is not None and tuple(shape) != signal.shape:
        raise ValueError(f"the durations give {signal.size} samples, the shape says {shape}")
    return signal.astype(dtype)


GENERATORS: dict[str, Generator] = {
    "onnx_dummy": onnx_dummy,
    "normal": normal,
    "uniform": uniform,
    "integers": integers,
    "constant": constant,
    "strokes_image": _strokes,
    "speech_like": _speech,
}


def check_generators(manifest: Manifest) -> None:
    for spec in manifest.inputs:
        if spec.generator not in GENERATORS:
            raise ManifestError(
                f"{manifest.path.name}: input {spec.name!r}: unknown generator "
                f"{spec.generator!r} (known: {', '.join(sorted(GENERATORS))})")


def resolve_shape(spec: ManifestInput, dims: Mapping[str, int]) -> tuple[int, ...] | None:
    """The concrete shape for one data set, or None when a symbol has no size."""
    resolved: list[int] = []
    for dim in spec.shape:
        if isinstance(dim, int):
            resolved.append(dim)
        elif dim in dims:
            resolved.append(int(dims[dim]))
        else:
            return None
    return tuple(resolved)


def make_data_sets(manifest: Manifest) -> list[dict[str, np.ndarray]]:
    """Every data set's inputs, by input name, in manifest order."""
    check_generators(manifest)
    data_sets = []
    for index, dims in enumerate(manifest.data_sets):
        feeds = {}
        for spec in manifest.inputs:
            shape = resolve_shape(spec, dims)
            try:
                value = GENERATORS[spec.generator](shape, np.dtype(spec.dtype), spec.params,
                                                   index)
            except (KeyError, ValueError, TypeError) as exc:
                raise ManifestError(f"{manifest.path.name}: input {spec.name!r}, data set "
                                    f"{index}: {type(exc).__name__}: {exc}") from None
            feeds[spec.name] = np.asarray(value, order="C")
        data_sets.append(feeds)
    return data_sets


def array_digest(arrays: Sequence[tuple[str, np.ndarray]]) -> str:
    """sha256 over names, dtypes, shapes and bytes: the content, not a file's framing."""
    digest = hashlib.sha256()
    for name, array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{name}|{array.dtype.str}|{list(array.shape)}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def inputs_digest(data_sets: Sequence[Mapping[str, np.ndarray]]) -> str:
    return array_digest([(f"{i}/{name}", value) for i, feeds in enumerate(data_sets)
                         for name, value in feeds.items()])
