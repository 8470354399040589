"""ONNX operator conformance: every node case of the installed onnx plus its model cases.

Run it with ``shipei run --suite operators --target onnxruntime-cpu``, or with
plain pytest: ``pytest suites/operators --target onnxruntime-cpu``.
"""

import pytest

from harness.cases.suite import define_tests
from suites.operators.onnx_cases import all_cases, representative

pytestmark = pytest.mark.case_timeout(60)

_CASES = all_cases()
define_tests(globals(), _CASES, representative=representative(_CASES))
