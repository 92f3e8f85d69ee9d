"""The benchmark_model output parsers on every format variant."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from edge_derm.benchmarks.parsers import clean_lines, output_format, parse_benchmark_output, parse_delegation
from edge_derm.errors import DeviceError


def fixture_text(name: str) -> str:
    # read through the package, as installed users would (pyproject ships fixtures/*.txt)
    return resources.files("edge_derm.benchmarks").joinpath("fixtures", name).read_text()


def test_tflite_fixture():
    t = parse_benchmark_output(fixture_text("benchmark_tflite.txt"))
    assert t.format == "tflite"
    assert t.warmup_runs == 9 and t.runs == 50
    assert t.first_ms == pytest.approx(87.112)
    assert t.warmup_avg_ms == pytest.approx(58.1474)
    assert t.avg_ms == pytest.approx(63.7432)
    assert (t.min_ms, t.max_ms, t.std_ms) == pytest.approx((60.055, 70.312, 2.011))
    assert (t.p5_ms, t.median_ms, t.p95_ms) == pytest.approx((60.112, 63.001, 69.870))
    assert t.init_ms == pytest.approx(119.515)
    assert (t.memory_init_mb, t.memory_overall_mb) == pytest.approx((55.4961, 61.2539))
    assert t.peak_memory_mb == pytest.approx(61.2539)  # no periodic monitor: the overall footprint


def test_tflite_periodic_peak_wins_over_the_delta():
    text = fixture_text("benchmark_tflite.txt") + \
        "INFO: Overall peak memory footprint (MB) via periodic monitoring: 70.5\n"
    assert parse_benchmark_output(text).peak_memory_mb == pytest.approx(70.5)


def test_tflite_old_build_no_prefix_scientific_no_percentiles():
    t = parse_benchmark_output(fixture_text("benchmark_tflite_old.txt"))
    assert t.format == "tflite"
    assert t.avg_ms == pytest.approx(2950.34)
    assert t.min_ms == pytest.approx(2890.12) and t.max_ms == pytest.approx(3105.11)
    assert t.median_ms is None and t.p95_ms is None
    assert t.runs == 50 and t.warmup_runs == 1  # "count=1 curr=3301245": one warm-up run
    assert t.init_ms == pytest.approx(120.415)
    assert t.warmup_avg_ms == pytest.approx(3301.24)
    assert (t.memory_init_mb, t.memory_overall_mb, t.peak_memory_mb) == pytest.approx((12.5, 40.25, 40.25))


def test_litert_fixture_with_file_line_prefixes():
    """Every line of the CompiledModel tool's block carries "INFO: [benchmark_litert_model.h:94] "."""
    text = fixture_text("benchmark_litert.txt")
    assert output_format(text) == "litert"
    t = parse_benchmark_output(text)
    assert t.format == "litert"
    assert t.init_ms == pytest.approx(121.73)  # from the block (the count= lines have no init)
    assert (t.avg_ms, t.runs) == (pytest.approx(63.7432), 50)  # the count= line's microseconds win
    assert (t.p5_ms, t.median_ms, t.p95_ms) == pytest.approx((60.112, 63.001, 69.870))
    assert (t.warmup_avg_ms, t.warmup_runs) == (pytest.approx(58.1474), 9)
    assert (t.memory_init_mb, t.memory_overall_mb) == pytest.approx((55.5, 58.12))
    assert t.peak_memory_mb == pytest.approx(58.12)  # "Peak memory usage not available": the overall footprint


def test_litert_block_alone_units_and_peak():
    """The block without count= lines (e.g. a log that kept only stderr): its ms figures are used."""
    text = "\n".join([
        "INFO: [benchmark_litert_model.h:89] ", "========== BENCHMARK RESULTS ==========",
        "INFO: [benchmark_litert_model.h:94] Model initialization: 1500 us",
        "INFO: [benchmark_litert_model.h:99] Inference (avg):      0.25 s (10 runs)",
        "INFO: [benchmark_litert_model.h:103] Inference (min):      240.00 ms",
        "INFO: [benchmark_litert_model.h:107] Inference (std):      2.01",
        "INFO: [benchmark_litert_model.h:125] Init footprint:       2048 KB",
        "INFO: [benchmark_litert_model.h:132] Peak memory:          61.25 MB",
        "INFO: [benchmark_litert_model.h:138] ======================================",
        "INFO: [benchmark_litert_model.h:192] Inference (avg): 1.0 ms"])  # after the block: a profile summary
    t = parse_benchmark_output(text)
    assert t.init_ms == pytest.approx(1.5)
    assert (t.avg_ms, t.runs) == (pytest.approx(250.0), 10)
    assert t.min_ms == pytest.approx(240.0) and t.std_ms == pytest.approx(2.01)
    assert t.memory_init_mb == pytest.approx(2.0) and t.peak_memory_mb == pytest.approx(61.25)
    assert t.median_ms is None


def test_litert_with_no_runs_is_no_timings():
    text = ("========== BENCHMARK RESULTS ==========\nInference (avg):      nan ms (0 runs)\n"
            "No inference runs were performed.\n")
    with pytest.raises(DeviceError, match="no inference timings"):
        parse_benchmark_output(text)


def test_fixture_header_comments_are_skipped_and_cite_their_source():
    for name in ("benchmark_tflite.txt", "benchmark_litert.txt", "benchmark_tflite_gpu_partial.txt",
                 "benchmark_litert_gpu_refused.txt", "benchmark_failed.txt", "help_litert.txt"):
        text = fixture_text(name)
        header = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
        assert re.search(r"@ [0-9a-f]{40}", header) and re.search(r"\.(cc|h):\d+", header)  # commit, file:line
        assert not any("Derived from" in line or line.startswith("# ") for line in clean_lines(text))
    assert clean_lines("# a\n# b\nINFO: #threads used for CPU inference: [4]") == ["#threads used for CPU inference: [4]"]


@pytest.mark.parametrize("prefix", ["", "INFO: ", "WARN: ", "VERBOSE: ", "INFO: [benchmark_model.cc:274] ",
                                    "I0000 00:00:1795626493.177844    6591 benchmark_model.cc:123] "])
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


def test_v1_lone_count_line_with_results_is_the_timed_runs():
    """An old build run with warm-up disabled prints one count= line, then its results."""
    t = parse_benchmark_output("INFO: count=5 first=2000 curr=2100 min=1900 max=2100 avg=2000 std=80\n"
                               "INFO: Inference timings in us: Init: 5000, First inference: 2000\n")
    assert t.runs == 5 and t.avg_ms == pytest.approx(2.0)
    assert t.warmup_runs is None and t.init_ms == pytest.approx(5.0)


def test_v1_lone_count_line_without_results_is_the_warmup_of_a_failed_run():
    """The tool failed after its warm-up: the warm-up's count= line is not the timed runs."""
    text = ("INFO: STARTING!\nINFO: count=5 first=2000 curr=2100 min=1900 max=2100 avg=2000 std=80\n"
            "ERROR: Benchmarking failed.\n")
    with pytest.raises(DeviceError, match="no inference timings"):
        parse_benchmark_output(text)


@pytest.mark.parametrize("text", [fixture_text("benchmark_failed.txt"), "", "Segmentation fault\n"])
def test_no_timings_is_one_line_device_error(text):
    with pytest.raises(DeviceError) as exc:
        parse_benchmark_output(text)
    assert "no inference timings" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_failure_names_the_first_error():
    with pytest.raises(DeviceError) as exc:
        parse_benchmark_output(fixture_text("benchmark_failed.txt"))
    assert "error 'Failed to load model /data/local/tmp/edge_derm/m1_model.int8.tflite'" in str(exc.value)
    assert "Benchmarking failed." in str(exc.value)


def test_all_same_runs_and_empty_warmup():
    """``count=N curr=X(all same)`` has no avg; a warm-up of 0 runs prints ``count=0``."""
    t = parse_benchmark_output("INFO: count=0\n\nINFO: count=4 curr=2500(all same) p5=2500 median=2500 p95=2500\n")
    assert t.warmup_runs is None and t.runs == 4
    assert (t.avg_ms, t.min_ms, t.max_ms, t.median_ms, t.std_ms) == pytest.approx((2.5, 2.5, 2.5, 2.5, 0.0))


def test_delegation_lines_of_both_tools():
    d = parse_delegation(fixture_text("benchmark_tflite_gpu_partial.txt"))
    assert d.applied == [("GPU", "partial", 2)]
    assert d.replaced == [("TfLiteGpuDelegateV2", 61, 66, 3)]
    assert d.refused is None
    d = parse_delegation(fixture_text("benchmark_tflite.txt"))
    assert d.applied == [("XNNPACK", "full", None)]
    d = parse_delegation(fixture_text("benchmark_tflite_gpu_refused.txt"))
    assert d.refused == "Disallowed CPU fallback detected."
    d = parse_delegation(fixture_text("benchmark_litert_gpu_fallback.txt"))
    assert d.replaced == [("LITERT_CL", 61, 66, 3), ("TfLiteXNNPackDelegate", 5, 7, 3)] and not d.applied
    assert parse_delegation(fixture_text("benchmark_litert_gpu_missing.txt")).accelerator_missing
    none = parse_delegation("INFO: Though GPU delegate is explicitly applied, the model graph will not be executed "
                            "by the delegate.")
    assert none.applied == [("GPU", "none", 0)]


@pytest.mark.parametrize("stats, what", [
    ("min=1900 max=2100 avg=-2000 std=80", "avg latency (-2.0 ms)"),
    ("min=0 max=0 avg=0 std=0", "avg latency (0.0 ms)"),
    ("min=0 max=2100 avg=2000 std=80", "min latency (0.0 ms)"),
    ("min=1900 max=2100 avg=nan std=80", "avg latency (nan ms)"),
    ("min=1900 max=1e400 avg=2000 std=80", "max latency (inf ms)"),  # 1e400 parses as infinity
    ("min=-3 max=2100 avg=2000 std=80", "min latency (-0.003 ms)"),
])
def test_impossible_latencies_are_a_device_error(stats, what):
    """Negative, zero or infinite latencies used to be reported as ok (and Infinity is not JSON)."""
    with pytest.raises(DeviceError) as exc:
        parse_benchmark_output(f"INFO: count=5 first=2000 curr=2100 {stats}\n"
                               "INFO: Inference timings in us: Init: 5000, First inference: 2000\n")
    assert f"impossible {what}" in str(exc.value) and "\n" not in str(exc.value)
