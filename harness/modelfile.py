"""Checking a model file a user hands to ``shipei run --model`` before any target sees it."""

from __future__ import annotations

from pathlib import Path

import onnx


class ModelFileError(Exception):
    pass


def check_model_file(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; raise :class:`ModelFileError` with a one-line reason."""
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"model path {path} is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise ModelFileError(f"model file {path} is not a valid ONNX model "
                             f"({type(exc).__name__}: {detail})") from None
    if not model.graph.node:
        raise ModelFileError(f"model file {path} has an empty graph (corrupt or not ONNX)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"model file {path} fails the ONNX checker: {first}") from None
    return model
