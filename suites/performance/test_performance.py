"""Single-stream latency and offline throughput of every suite model on every target."""

import pytest

from harness.perf.suite import define_perf_tests
from suites.performance.cases import suite_cases

pytestmark = pytest.mark.case_timeout(900)

define_perf_tests(globals(), suite_cases())
