"""The benchmark_model output parsers on every format variant."""

from __future__ import annotations

from importlib import resources

import pytest

from edge_derm.benchmarks.parsers import parse_benchmark_output
from edge_derm.errors import DeviceError


def fixture_text(name: str) -> str:
    # read through the package, as installed users would (pyproject ships fixtures/*.txt)
    return resources.files("edge_derm.benchmarks").joinpath("fixtures", name).read_text()


def test_v1_full_with_percentiles_and_periodic_peak():
    t = parse_benchmark_output(fixture_text("benchmark_v1.txt"))
    assert t.format == "v1"
    assert t.warmup_runs == 9 and t.runs == 50
    assert t.first_ms == pytest.approx(87.112)
    assert t.warmup_avg_ms == pytest.approx(58.1474)
    assert t.avg_ms == pytest.approx(63.7432)
    assert (t.min_ms, t.max_ms, t.std_ms) == pytest.approx((60.055, 70.312, 2.011))
    assert (t.p5_ms, t.median_ms, t.p95_ms) == pytest.approx((60.112, 63.001, 69.870))
    assert t.init_ms == pytest.approx(119.515)
    assert (t.memory_init_mb, t.memory_overall_mb) == pytest.approx((55.4961, 55.4961))
    assert t.peak_memory_mb == pytest.approx(61.2539)  # periodic monitoring wins over the delta


def test_v1_old_build_no_prefix_scientific_no_percentiles():
    t = parse_benchmark_output(fixture_text("benchmark_v1_old.txt"))
    assert t.format == "v1"
    assert t.avg_ms == pytest.approx(2950.34)
    assert t.min_ms == pytest.approx(2890.12) and t.max_ms == pytest.approx(3105.11)
    assert t.median_ms is None and t.p95_ms is None
    assert t.runs == 50
    assert t.init_ms == pytest.approx(120.415)
    assert t.warmup_avg_ms == pytest.approx(3301.24)
    assert (t.memory_init_mb, t.memory_overall_mb, t.peak_memory_mb) == pytest.approx((12.5, 40.25, 40.25))


def test_v2_results_block():
    t = parse_benchmark_output(fixture_text("benchmark_v2.txt"))
    assert t.format == "v2"
    assert t.init_ms == pytest.approx(119.52)
    assert t.first_ms == pytest.approx(87.11)
    assert (t.warmup_avg_ms, t.warmup_runs) == (pytest.approx(58.15), 9)
    assert (t.avg_ms, t.runs) == (pytest.approx(63.74), 50)
    assert (t.min_ms, t.max_ms, t.std_ms) == pytest.approx((60.06, 70.31, 2.01))
    assert t.memory_init_mb == pytest.approx(55.5) and t.peak_memory_mb == pytest.approx(61.25)


def test_v2_units_us_and_seconds_and_kb():
    text = ("========== BENCHMARK RESULTS ==========\n"
            "Model initialization: 1500 us\n"
            "Inference (avg): 0.25 s (10 runs)\n"
            "Inference (min): 240000 us\n"
            "Memory (peak): 2048 KB\n")
    t = parse_benchmark_output(text)
    assert t.init_ms == pytest.approx(1.5)
    assert (t.avg_ms, t.runs) == (pytest.approx(250.0), 10)
    assert t.min_ms == pytest.approx(240.0)
    assert t.peak_memory_mb == pytest.approx(2.0)


@pytest.mark.parametrize("prefix", ["", "INFO: ", "I0000 00:00:1795626493.177844    6591 benchmark_model.cc:123] "])
def test_v1_prefixes(prefix):
    lines = ["count=3 first=1000 curr=900 min=900 max=1000 avg=950 std=50",
             "count=20 first=1.1e+03 curr=1e3 min=9.5e+02 max=1.2e3 avg=1.05e+03 std=20 p5=960 median=1.04e3 p95=1150",
             "Inference timings in us: Init: 5000, First inference: 1000, Warmup (avg): 950, Inference (avg): 1050"]
    t = parse_benchmark_output("\n".join(prefix + ln for ln in lines))
    assert t.warmup_runs == 3 and t.runs == 20
    assert t.avg_ms == pytest.approx(1.05)
    assert t.median_ms == pytest.approx(1.04)
    assert t.min_ms == pytest.approx(0.95)
    assert t.init_ms == pytest.approx(5.0)


def test_v1_timed_line_only():
    t = parse_benchmark_output("INFO: count=5 first=2000 curr=2100 min=1900 max=2100 avg=2000 std=80\n")
    assert t.runs == 5 and t.avg_ms == pytest.approx(2.0)
    assert t.warmup_runs is None and t.init_ms is None


@pytest.mark.parametrize("text", [fixture_text("benchmark_failed.txt"), "", "Segmentation fault\n"])
def test_no_timings_is_one_line_device_error(text):
    with pytest.raises(DeviceError) as exc:
        parse_benchmark_output(text)
    assert "no inference timings" in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("stats, what", [
    ("min=1900 max=2100 avg=-2000 std=80", "avg latency (-2.0 ms)"),
    ("min=0 max=0 avg=0 std=0", "avg latency (0.0 ms)"),
    ("min=1900 max=1e400 avg=2000 std=80", "max latency (inf ms)"),  # 1e400 parses as infinity
    ("min=-3 max=2100 avg=2000 std=80", "min latency (-0.003 ms)"),
])
def test_impossible_latencies_are_a_device_error(stats, what):
    """Negative, zero or infinite latencies used to be reported as ok (and Infinity is not JSON)."""
    with pytest.raises(DeviceError) as exc:
        parse_benchmark_output(f"INFO: count=5 first=2000 curr=2100 {stats}\n")
    assert f"impossible {what}" in str(exc.value) and "\n" not in str(exc.value)
