"""Statistics, machine conditions, LoadGen log parsing and the regression check,
each against figures computed independently here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.perf import compare, loadgen_log, machine
from harness.perf import samples as samples_io
from harness.perf.stats import percentile, summarize


def test_percentile_follows_loadgen_rule_on_a_hand_example():
    values = np.sort(np.array([50, 10, 40, 20, 30], dtype=np.int64))
    # LoadGen: element floor(n * p) of the sorted samples
    assert percentile(values, 50) == 30  # floor(2.5) = 2
    assert percentile(values, 90) == 50  # floor(4.5) = 4
    assert percentile(values, 99) == 50
    assert percentile(values, 0) == 10
    with pytest.raises(ValueError):
        percentile(np.array([], dtype=np.int64), 50)


def test_one_percentile_for_rows_and_unsorted_samples():
    """``percentile_of`` is LoadGen's rule too, on unsorted samples and on many rows at
    once; ``np.median`` is another statistic (the mean of the middle two of an even count)."""
    from harness.perf.stats import percentile_of

    ten = np.array([9, 1, 8, 2, 7, 3, 6, 4, 5, 10], dtype=np.int64)
    assert percentile_of(ten, 50) == 6 == percentile(np.sort(ten), 50)  # element 5 of 10
    assert np.median(ten) == 5.5
    rows = np.array([[3, 1, 2, 4], [40, 10, 30, 20]])
    assert percentile_of(rows, 50, axis=1).tolist() == [3, 30]
    assert percentile_of(rows, 99, axis=1).tolist() == [4, 40]
    with pytest.raises(ValueError):
        percentile_of(np.array([], dtype=np.int64), 50)


def test_summary_matches_independent_computation():
    rng = np.random.default_rng(7)
    samples = (rng.lognormal(mean=13.0, sigma=0.4, size=4001)).astype(np.int64)  # ~0.5 ms
    wall_s = 3.2
    got = summarize(samples, samples_per_query=4, wall_s=wall_s)
    ordered = sorted(int(v) for v in samples)
    n = len(ordered)
    mean = sum(ordered) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in ordered) / (n - 1))
    assert got["count"] == n
    assert got["p50_ms"] == ordered[int(n * 0.50)] / 1e6
    assert got["p90_ms"] == ordered[int(n * 0.90)] / 1e6
    assert got["p99_ms"] == ordered[int(n * 0.99)] / 1e6
    assert got["max_ms"] == ordered[-1] / 1e6
    assert got["min_ms"] == ordered[0] / 1e6
    assert got["mean_ms"] == pytest.approx(mean / 1e6, rel=1e-12)
    assert got["std_ms"] == pytest.approx(std / 1e6, rel=1e-9)
    assert got["queries_per_s"] == pytest.approx(n / wall_s)
    assert got["samples_per_s"] == pytest.approx(4 * n / wall_s)
    assert got["samples"] == 4 * n
    short = summarize(samples, samples_per_query=4, wall_s=wall_s, sample_count=4 * n - 3)
    assert short["samples_per_s"] == pytest.approx((4 * n - 3) / wall_s)


def test_summary_without_wall_time_uses_busy_time():
    got = summarize(np.array([1_000_000, 3_000_000], dtype=np.int64))
    assert got["queries_per_s"] == pytest.approx(2 / 0.004)
    assert got["std_ms"] == pytest.approx(math.sqrt(2.0))


def test_loadgen_detail_parsing():
    lines = [
        ':::MLLOG {"key": "loadgen_version", "value": "6.0.17 @ abc"}',
        ':::MLLOG {"key": "result_validity", "value": "INVALID"}',
        ':::MLLOG {"key": "result_min_duration_met", "value": false}',
        ':::MLLOG {"key": "result_min_queries_met", "value": true}',
        ':::MLLOG {"key": "result_50.00_percentile_latency_ns", "value": 1234}',
        ':::MLLOG {"key": "num_errors", "value": 0}',
        "not a log line",
        ':::MLLOG {"key": "torn',
    ]
    result = loadgen_log.results(loadgen_log.parse_detail("\n".join(lines)))
    assert result["valid"] is False
    assert result["50.00_percentile_latency_ns"] == 1234
    assert result["version"] == "6.0.17 @ abc"
    assert loadgen_log.unmet(result) == ["minimum duration not reached"]


def test_cpu_frequency_and_governor_from_sysfs(tmp_path: Path):
    for cpu, (governor, khz) in {"cpu0": ("performance", "3000000"),
                                 "cpu1": ("powersave", "1200000")}.items():
        folder = tmp_path / cpu / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_governor").write_text(governor + "\n")
        (folder / "scaling_cur_freq").write_text(khz + "\n")
    info = machine.cpu_frequency(tmp_path, tmp_path / "no-cpuinfo")
    assert info["governor"] == ["performance", "powersave"]
    assert info["frequency_mhz"] == {"cpu0": 3000.0, "cpu1": 1200.0}
    assert info["frequency_source"] == "cpufreq"


def test_cpu_frequency_falls_back_to_cpuinfo_and_says_so(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 2596.1\nprocessor\t: 1\ncpu MHz\t\t: 2400\n")
    info = machine.cpu_frequency(tmp_path / "nothing", cpuinfo)
    assert info["governor"] is None and info["governor_readable"] is False
    assert info["frequency_mhz"] == {"cpu0": 2596.1, "cpu1": 2400.0}
    assert info["frequency_source"] == "/proc/cpuinfo"


def test_foreign_cpu_share(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    tick = machine.os.sysconf("SC_CLK_TCK")
    before = machine.Snapshot(0.0, (0.1, 0.1, 0.1), (0, 0))
    # 10 s of two CPUs = 20 s capacity; 6 s busy in all; the worker used 5 s
    after = machine.Snapshot(10.0, (1.0, 0.5, 0.2), (6 * tick, 20 * tick))
    info = machine.conditions(before, after, own_cpu_s=5.0)
    assert info["foreign_cpu_share"] == pytest.approx(1 / 20)
    assert info["alone"] is False  # 5 % is not under the 5 % threshold
    assert machine.conditions(before, after, own_cpu_s=5.5)["alone"] is True
    assert machine.conditions(before, machine.Snapshot(1, None, None), 1.0)["alone"] is None


# -- regression check on synthetic runs --------------------------------------------------

def _write_run(root: Path, run_id: str, cases: dict[str, np.ndarray],
               target: str = "onnxruntime-cpu", status: str = "pass") -> Path:
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    lines = []
    for case, latency in cases.items():
        stem = samples_io.file_stem(target, case)
        relative, _ = samples_io.save(run_dir, stem, samples_io.Samples(
            latency, np.cumsum(latency) - latency[0], 1))
        lines.append(json.dumps({
            "run_id": run_id, "target": target, "suite": "performance", "case": case,
            "status": status,
            "metrics": {"perf_schema_version": "1.0", "scenario": "single_stream",
                        "samples_file": relative}}))
    (run_dir / "records.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id}))
    return run_dir


def _noisy(rng: np.random.Generator, median_ns: float, n: int = 3000) -> np.ndarray:
    """Latencies with a heavy right tail and slow drift, like a busy machine."""
    drift = 1.0 + 0.03 * np.sin(np.linspace(0, 6 * np.pi, n))
    base = rng.lognormal(np.log(median_ns), 0.08, n) * drift
    spikes = rng.random(n) < 0.02
    base[spikes] *= rng.uniform(3, 20, spikes.sum())
    return base.astype(np.int64)


@pytest.mark.parametrize(("factor", "expected"), [
    (1.00, {"no change", "slower", "faster"}),
    (1.03, {"no change", "slower"}),
    (1.20, {"regression"}),
    (0.80, {"improvement"}),
])
def test_compare_verdicts(tmp_path: Path, factor: float, expected: set[str]):
    rng = np.random.default_rng(11)
    base = _write_run(tmp_path, "base", {"test_a": _noisy(rng, 1e6)})
    new = _write_run(tmp_path, "new", {"test_a": _noisy(rng, 1e6 * factor)})
    result = compare.compare_runs(base, new, threshold=0.10, resamples=300)
    (case,) = result.cases
    assert case.verdict in expected
    assert case.ci_low <= case.change <= case.ci_high
    assert case.change == pytest.approx(factor - 1, abs=0.03)
    assert bool(result.regressions) == ("regression" in expected)


def test_compare_reports_the_p50_the_records_hold(tmp_path: Path):
    """The regression check's p50 of one run is the recorded p50 (LoadGen's rule), so
    ``shipei compare`` and the run's own summary print the same figure."""
    from harness.perf.stats import summarize

    latency = np.array([1_000_000 + 1000 * i for i in range(100)], dtype=np.int64)
    base = _write_run(tmp_path, "base", {"test_a": latency})
    new = _write_run(tmp_path, "new", {"test_a": latency * 2})
    (case,) = compare.compare_runs(base, new, resamples=50).cases
    assert case.baseline_median_ms == summarize(latency)["p50_ms"] == 1.05
    assert case.new_median_ms == summarize(latency * 2)["p50_ms"]


def test_block_bootstrap_interval_covers_the_true_median_shift():
    rng = np.random.default_rng(3)
    base, new = _noisy(rng, 2e6, 5000), _noisy(rng, 2e6 * 1.05, 5000)
    change, low, high = compare.change_interval(base, new, resamples=400)
    assert low < 0.05 < high
    assert high - low < 0.05


def test_compare_lists_what_it_cannot_compare(tmp_path: Path):
    rng = np.random.default_rng(5)
    base = _write_run(tmp_path, "base", {"test_a": _noisy(rng, 1e6), "test_b": _noisy(rng, 1e6)})
    new = _write_run(tmp_path, "new", {"test_a": _noisy(rng, 1e6)})
    result = compare.compare_runs(base, new, resamples=200)
    assert [c.case for c in result.cases] == ["test_a"]
    assert result.not_compared == ["onnxruntime-cpu test_b: not measured in run new"]
    assert "no significant regression" in compare.format_table(result)[-1]


def test_compare_pairs_different_target_labels(tmp_path: Path):
    rng = np.random.default_rng(9)
    base = _write_run(tmp_path, "base", {"test_a": _noisy(rng, 1e6)}, target="x,fault=none")
    new = _write_run(tmp_path, "new", {"test_a": _noisy(rng, 2e6)}, target="x,fault=slow")
    result = compare.compare_runs(base, new, resamples=200)
    assert result.pairs == {"x,fault=none": "x,fault=slow"}
    assert result.cases[0].verdict == "regression"
    with pytest.raises(ValueError, match="confidence"):
        compare.compare_runs(base, new, confidence=1.5)


def test_repeated_runs_put_run_to_run_drift_in_the_interval(tmp_path: Path):
    rng = np.random.default_rng(21)
    first = _write_run(tmp_path, "b1", {"test_a": _noisy(rng, 1.00e6)})
    second = _write_run(tmp_path, "b2", {"test_a": _noisy(rng, 1.30e6)})  # same build, drifted
    new = _write_run(tmp_path, "n1", {"test_a": _noisy(rng, 1.15e6)})
    alone = compare.compare_runs(first, new, threshold=0.10, resamples=300)
    assert alone.cases[0].verdict == "regression"  # one run cannot see the drift
    repeated = compare.compare_runs([first, second], new, threshold=0.10, resamples=300)
    (case,) = repeated.cases
    assert case.baseline_runs == 2 and repeated.baseline_run == "b1+b2"
    assert case.baseline_median_ms == pytest.approx(1.15, rel=0.02)  # mean of the medians
    assert case.verdict != "regression" and case.ci_low < 0 < case.ci_high


def test_compare_command_takes_repeats(tmp_path: Path, shipei_cli):
    rng = np.random.default_rng(4)
    for name, median in (("b1", 1.0e6), ("b2", 1.3e6), ("n1", 1.15e6)):
        _write_run(tmp_path, name, {"test_a": _noisy(rng, median)})
    where = ("--results-dir", str(tmp_path), "--resamples", "200")
    assert shipei_cli("compare", "b1", "n1", *where).returncode == 1
    both = shipei_cli("compare", "b1", "n1", "--baseline-repeat", "b2", *where, "--json")
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["cases"][0]["baseline_runs"] == 2
