"""Latency and throughput measurement (MLPerf-style scenarios under MLPerf LoadGen).

- :mod:`harness.perf.settings` - scenario rules (warm-up, minimum duration and queries)
- :mod:`harness.perf.loops` - the timed loops, run inside a target's worker process
- :mod:`harness.perf.measure` - check and time one case from the controller
- :mod:`harness.perf.suite` - writing performance suites as pytest modules
- :mod:`harness.perf.stats` - summary statistics (LoadGen's percentile rule)
- :mod:`harness.perf.samples` - per-inference samples beside the run's records
- :mod:`harness.perf.machine` - CPU governor, frequency, load, "alone on the machine"
- :mod:`harness.perf.compare` - regression check between two runs (``compare_runs``)
- :mod:`harness.perf.report` - ``reports/<run-id>/performance.html`` with plots
"""
