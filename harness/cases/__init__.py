"""What a run runs (the sample library's side): conformance cases, the suite API and
registry, and the model files a user hands in.

``harness.cases`` was once the module now at :mod:`harness.cases.case`; the names it
held are still found here, with a :class:`DeprecationWarning` naming the new path.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_SUBMODULES = {"case", "suite", "suite_registry", "model_file", "fuzz_models"}


def __getattr__(name: str) -> Any:
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(name)
    case = importlib.import_module("harness.cases.case")
    try:
        value = getattr(case, name)
    except AttributeError:
        raise AttributeError(f"module 'harness.cases' has no attribute {name!r}") from None
    warnings.warn(f"harness.cases.{name} moved to harness.cases.case.{name}; import it "
                  "from there (the old path will be removed in a later release)",
                  DeprecationWarning, stacklevel=2)
    return value
