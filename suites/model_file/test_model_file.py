"""Check user-supplied ONNX files (``shipei run --model PATH``) on every target.

Inputs are generated from the model's declared inputs with a fixed seed (dynamic
dimensions become 1, a declared 0 stays 0); the reference is onnxruntime on the
CPU with graph optimizations disabled, run in its own worker process under the
case timeout (see :mod:`harness.cases.model_file`). Each model is one case named
``test_<file stem>``. A model the reference cannot compute is still tried on the
target; the record carries the reference's failure as the ``reference_error`` tag.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cases.case import Case, DataSet, LoadedCase, Outcome
from harness.cases.model_file import (
    ModelFileError,
    ModelFileReference,
    ReferenceFailed,
    case_name,
    check_model_file,
    random_feeds,
    run_unjudged,
)

SUITE = "model_file"
RTOL, ATOL = 1e-3, 1e-5


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_path" in metafunc.fixturenames:
        paths = metafunc.config.getoption("shipei_models")
        metafunc.parametrize("model_path", paths, ids=[Path(p).name for p in paths])


@pytest.fixture(scope="module")
def model_reference() -> Iterator[ModelFileReference]:
    with ModelFileReference() as reference:
        yield reference


def test_model(target: Any, model_path: Path, model_reference: ModelFileReference) -> None:
    path = Path(model_path)
    name = case_name(path)
    key = f"{SUITE}::{name}"
    tags = {"source": str(path), "op_type": "model", "reference": model_reference.request}
    try:
        model = check_model_file(path)
        feeds = random_feeds(model)
    except ModelFileError as exc:  # the user's file cannot be used: recorded, the run goes on
        target.conclude(SUITE, name, Outcome("error", f"unusable model file: {exc}",
                                             blame="input"), tags)
        return
    try:
        expected = model_reference.outputs(key, model, feeds, target.timeout())
    except ReferenceFailed as exc:
        outcome = run_unjudged(target.host, target.capabilities, SUITE, name, model, feeds,
                               target.timeout(), str(exc))
        target.conclude(SUITE, name, outcome, tags | {"reference_error": str(exc)})
        return
    loaded = LoadedCase(model, [DataSet(feeds, expected)])
    target.check(Case(suite=SUITE, name=name, load=lambda: loaded, rtol=RTOL, atol=ATOL,
                      tags=tags))
