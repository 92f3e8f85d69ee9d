"""The two LiteRT benchmark tools on the fake phone: detection, per-tool flags, delegation statuses,
thermal cool-down, the big-core mask, 32-bit binaries and a phone lost mid-run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_benchmark_android import FIXTURES, android_config, elf_binary, fake_adb  # noqa: F401 (fixture)

from edge_derm.benchmarks import run_benchmark
from edge_derm.benchmarks.android import runner
from edge_derm.benchmarks.android import NOT_DELEGATED, PARTIAL, THROTTLED, big_core_mask, tool_from_binary
from edge_derm.cli import main
from edge_derm.errors import DeviceError


def fx(name: str) -> str:
    return str(FIXTURES.joinpath(name))


def flag_names(words: list[str]) -> set[str]:
    return {w.split("=")[0] for w in words if w.startswith("--")}


@pytest.fixture
def fake_time(monkeypatch):
    """A clock that only moves when the code sleeps; records every sleep."""

    class Clock:
        now = 1000.0
        sleeps: list[float] = []

        def sleep(self, s: float) -> None:
            self.sleeps.append(s)
            self.now += s

        def clock(self) -> float:
            return self.now

    c = Clock()
    c.sleeps = []
    monkeypatch.setattr(runner, "SLEEP", c.sleep)  # the runner reads them when it makes a phone's benchmark
    monkeypatch.setattr(runner, "CLOCK", c.clock)
    return c


# -- which tool, which flags -----------------------------------------------------------------

def test_litert_tool_detected_from_help_gets_its_own_flags(bm_models, fake_adb):
    fake_adb.set(tool="litert", output=fx("benchmark_litert.txt"))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[4], cpu_mask="f0"))
    assert [r["status"] for r in res.rows] == ["ok", "ok"]
    r = res.rows[0]
    assert r["benchmark_tool"] == "litert" and r["device_timings"]["format"] == "litert"
    assert r["latency_median_ms"] == pytest.approx(63.001) and r["peak_memory_mb"] == pytest.approx(58.12)
    assert res.devices[0]["tool_detected_by"] == "--help"
    words = fake_adb.runs()[0]
    assert {"--use_cpu=true", "--use_gpu=false", "--use_npu=false"} <= set(words)
    assert not {"--use_xnnpack", "--use_nnapi"} & flag_names(words)


def test_tflite_tool_flags_for_gpu(bm_models, fake_adb):
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none", use_gpu=True,
                                       models=[bm_models["int8"]]))
    words = fake_adb.runs()[0]
    assert {"--use_gpu=true", "--use_xnnpack=false"} <= set(words)
    assert not {"--use_cpu", "--use_npu", "--require_full_delegation"} & flag_names(words)
    assert res.rows[0]["delegate"] == "gpu"


def test_tool_from_strings_in_the_binary_when_help_says_nothing(bm_models, fake_adb, tmp_path):
    fake_adb.set(tool="none", output=fx("benchmark_litert.txt"))
    binary = elf_binary(tmp_path / "benchmark_model")
    binary.write_bytes(binary.read_bytes() + b"\0" * 100 + b"========== BENCHMARK RESULTS ==========\0")
    assert tool_from_binary(binary) == "litert"
    res = run_benchmark(android_config(bm_models, fake_adb, benchmark_binary=binary, threads=[1], cpu_mask="none"))
    assert res.rows[0]["benchmark_tool"] == "litert"
    assert res.devices[0]["tool_detected_by"] == "strings in the binary"


def test_a_binary_of_neither_tool_is_one_line_error(bm_models, fake_adb):
    fake_adb.set(tool="none")
    with pytest.raises(DeviceError) as exc:
        run_benchmark(android_config(bm_models, fake_adb))
    assert "neither LiteRT's benchmark_model nor benchmark_litert_model" in str(exc.value)
    assert "--benchmark-tool" in str(exc.value) and "\n" not in str(exc.value)
    assert fake_adb.runs() == []


def test_wrong_override_is_caught_by_the_tools_unconsumed_flags(bm_models, fake_adb, caplog):
    """--benchmark-tool litert on a classic binary: the tool would ignore --use_cpu and run anyway; it says
    so ("Unconsumed cmdline flags"), and that stops the run instead of giving mislabelled rows."""
    with caplog.at_level(logging.WARNING), pytest.raises(DeviceError) as exc:
        run_benchmark(android_config(bm_models, fake_adb, benchmark_tool="litert", cpu_mask="none"))
    assert "ignored --use_cpu=true" in str(exc.value) and "--benchmark-tool tflite" in str(exc.value)
    assert "overrides what --help says (tflite)" in caplog.text


def test_nnapi_on_the_compiled_model_tool_is_an_error_not_a_cpu_row(bm_models, fake_adb, capsys):
    fake_adb.set(tool="litert", output=fx("benchmark_litert.txt"))
    rc = main(["-q", "benchmark", str(bm_models["int8"]), "--device", "android", "--benchmark-binary",
               str(fake_adb.binary), "--use-nnapi", "--cpu-mask", "none"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "has no NNAPI backend" in err
    assert fake_adb.runs() == []


# -- delegation ------------------------------------------------------------------------------

def test_tflite_partial_and_missing_gpu_delegation_are_row_statuses(bm_models, fake_adb):
    """fp32: the GPU takes 61 of 66 nodes; int8: no GPU line at all (the delegate was not created)."""
    fake_adb.set(output_for=f"fp32={fx('benchmark_tflite_gpu_partial.txt')}")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none"))
    fp32, int8 = res.rows
    assert fp32["status"] == PARTIAL and "61 of 66 nodes" in fp32["reason"]
    assert fp32["latency_median_ms"] == pytest.approx(20.402)  # the timings are kept, the status says what they are
    assert fp32["delegation"] == {"delegate": "TfLiteGpuDelegateV2", "nodes": 61, "total": 66, "partitions": 3}
    assert int8["status"] == NOT_DELEGATED and "the CPU ran the model" in int8["reason"]


def test_cli_partial_delegation_fails_the_command_naming_the_status(bm_models, fake_adb, tmp_path, capsys):
    fake_adb.set(output_for=f"fp32={fx('benchmark_tflite_gpu_partial.txt')}")
    out = tmp_path / "bench out"
    rc = main(["-q", "benchmark", str(bm_models["fp32"]), "--device", "android", "--benchmark-binary",
               str(fake_adb.binary), "--use-gpu", "--cpu-mask", "none", "--threads", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "1 of 1 model(s) did not run as asked: model.fp32.tflite (partially delegated)" in err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["status"] for r in rows] == [PARTIAL]  # the row and its timings are still written


def test_tflite_require_full_delegation_refusal(bm_models, fake_adb):
    fake_adb.set(strict_output=fx("benchmark_tflite_gpu_refused.txt"))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none",
                                       require_full_delegation=True, models=[bm_models["fp32"]]))
    r = res.rows[0]
    assert r["status"] == PARTIAL and "Disallowed CPU fallback detected." in r["reason"]
    assert r["latency_median_ms"] is None
    assert all("--require_full_delegation=true" in w for w in fake_adb.runs()) and len(fake_adb.runs()) == 1


def test_litert_gpu_refusal_is_rerun_with_the_cpu_fallback(bm_models, fake_adb):
    fake_adb.set(tool="litert", strict_output=fx("benchmark_litert_gpu_refused.txt"),
                 output=fx("benchmark_litert_gpu_fallback.txt"))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none",
                                       models=[bm_models["fp32"]]))
    r = res.rows[0]
    assert r["status"] == PARTIAL and "61 of 66 nodes" in r["reason"]
    assert r["latency_median_ms"] == pytest.approx(19.455)
    strict, fallback = fake_adb.runs()
    assert {"--use_gpu=true", "--use_cpu=false", "--require_full_delegation=true"} <= set(strict)
    assert "--use_cpu=true" in fallback and "--require_full_delegation" not in flag_names(fallback)


def test_litert_gpu_full_delegation_is_ok_in_one_run(bm_models, fake_adb):
    fake_adb.set(tool="litert", output=fx("benchmark_litert.txt"))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none",
                                       models=[bm_models["fp32"]]))
    assert res.rows[0]["status"] == "ok"
    assert len(fake_adb.runs()) == 1 and "--require_full_delegation=true" in fake_adb.runs()[0]


def test_litert_without_its_gpu_library_is_not_delegated(bm_models, fake_adb, tmp_path):
    fake_adb.set(tool="litert", strict_output=fx("benchmark_litert_gpu_missing.txt"))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none",
                                       models=[bm_models["fp32"]]))
    r = res.rows[0]
    assert r["status"] == NOT_DELEGATED and "--benchmark-lib" in r["reason"]
    assert len(fake_adb.runs()) == 1  # no pointless CPU rerun


def test_benchmark_lib_is_pushed_and_on_the_library_path(bm_models, fake_adb, tmp_path):
    lib = tmp_path / "libLiteRtClGlAccelerator.so"
    lib.write_bytes(b"\x7fELF fake")
    fake_adb.set(tool="litert", output=fx("benchmark_litert.txt"))
    run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="f0",
                                 benchmark_libs=[lib], models=[bm_models["fp32"]]))
    assert (fake_adb.device_root / "data/local/tmp/edge_derm/libLiteRtClGlAccelerator.so").read_bytes() == b"\x7fELF fake"
    words = fake_adb.runs()[0]
    assert words[:4] == ["env", "LD_LIBRARY_PATH=/data/local/tmp/edge_derm", "taskset", "f0"]


# -- thermal ---------------------------------------------------------------------------------

def test_cool_down_waits_for_the_thermal_status_before_each_row(bm_models, fake_adb, fake_time):
    """The phone heats up between rows (severe after row 1); --max-thermal light waits it out."""
    # readings: row 1 before, row 1 after, row 2 before (and while waiting) ...
    fake_adb.set(thermal="0,3,3,2,1,1")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none", max_thermal="light"))
    first, second = res.rows
    assert (first["thermal_before"], first["thermal_after"], first["cool_down_s"]) == ("none", "severe", 0)
    assert second["thermal_before"] == "light" and second["status"] == "ok"
    assert second["cool_down_s"] == pytest.approx(20.0) and fake_time.sleeps == [10.0, 10.0]


def test_a_phone_that_stays_hot_gives_throttled_rows(bm_models, fake_adb, fake_time):
    fake_adb.set(thermal="3")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none", max_thermal="moderate",
                                       cool_down_timeout=25.0, models=[bm_models["int8"]]))
    r = res.rows[0]
    assert r["status"] == THROTTLED and "still severe after 25 s" in r["reason"]
    assert r["latency_median_ms"] == pytest.approx(63.001)
    assert fake_time.sleeps == [10.0, 10.0, 5.0]


def test_fixed_pause_before_each_row(bm_models, fake_adb, fake_time):
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1, 2], cpu_mask="none", cool_down=7.5))
    assert fake_time.sleeps == [7.5] * 4
    assert all(r["cool_down_s"] == pytest.approx(7.5) and r["status"] == "ok" for r in res.rows)


# -- CPU mask --------------------------------------------------------------------------------

@pytest.mark.parametrize("values, mask", [
    ({0: 160, 1: 160, 2: 160, 3: 160, 4: 700, 5: 700, 6: 700, 7: 1024}, "f0"),  # little + mid + prime
    ({0: 1800000, 1: 1800000, 2: 2400000, 3: 2400000}, "c"),
    ({0: 1024, 1: 1024}, None),  # all alike: no mask
    ({0: 300, 1: 300, 2: 300, 3: 300, 4: 300, 5: 300, 6: 1024, 7: 1024, 8: 1024, 9: 1024}, "3c0"),
])
def test_big_core_mask(values, mask):
    assert big_core_mask(values) == mask


def test_big_core_mask_read_from_the_phone(bm_models, fake_adb):
    fake_adb.set(capacity="160,160,160,160,700,700,700,1024")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1, 8], models=[bm_models["int8"]]))
    assert {(r["cpu_mask"], r["cpu_mask_source"]) for r in res.rows} == {("f0", "cpu_capacity")}
    assert all(w[:2] == ["taskset", "f0"] for w in fake_adb.runs())
    assert any("8 threads on FAKE123 exceed the 4 CPUs of mask f0" in w for w in res.devices[0]["warnings"])


def test_big_core_mask_from_max_freq_when_no_capacity(bm_models, fake_adb):
    fake_adb.set(maxfreq="1800000,1800000,1800000,1800000,2850000,2850000")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], models=[bm_models["int8"]]))
    r = res.rows[0]
    assert (r["cpu_mask"], r["cpu_mask_source"]) == ("30", "cpufreq/cpuinfo_max_freq")
    assert fake_adb.runs()[0][:2] == ["taskset", "30"]


def test_user_mask_wins(bm_models, fake_adb):
    fake_adb.set(capacity="160,160,1024,1024")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="1", models=[bm_models["int8"]]))
    assert (res.rows[0]["cpu_mask"], res.rows[0]["cpu_mask_source"]) == ("1", "user")
    assert not any(w[:2] == ["grep", "-H"] for w in fake_adb.shell_words())


# -- ABI -------------------------------------------------------------------------------------

def elf32_binary(path: Path) -> Path:
    """A 32-bit little-endian ARM ELF header."""
    header = b"\x7fELF\x01\x01\x01" + b"\x00" * 9 + (2).to_bytes(2, "little") + (0x28).to_bytes(2, "little")
    path.write_bytes(header + b"\x00" * 32)
    return path


def test_32bit_binary_on_a_64bit_phone_warns(bm_models, fake_adb, tmp_path, caplog):
    fake_adb.set(abi="arm64-v8a,armeabi-v7a,armeabi")
    binary = elf32_binary(tmp_path / "benchmark_model_arm32")
    with caplog.at_level(logging.WARNING):
        res = run_benchmark(android_config(bm_models, fake_adb, benchmark_binary=binary, threads=[1],
                                           cpu_mask="none", models=[bm_models["int8"]]))
    assert res.rows[0]["status"] == "ok"
    dev = res.devices[0]
    assert (dev["binary_abi"], dev["binary_bits"]) == ("armeabi-v7a", 32)
    assert any("32-bit armeabi-v7a build" in w and "64-bit phone" in w for w in dev["warnings"])
    assert "32-bit" in caplog.text


def test_32bit_binary_on_a_64bit_only_phone_is_an_error(bm_models, fake_adb, tmp_path):
    binary = elf32_binary(tmp_path / "benchmark_model_arm32")
    with pytest.raises(DeviceError, match="built for armeabi-v7a but FAKE123 runs arm64-v8a"):
        run_benchmark(android_config(bm_models, fake_adb, benchmark_binary=binary))


# -- a phone lost mid-run --------------------------------------------------------------------

def test_disconnect_mid_run_is_one_line_and_exit_1(bm_models, fake_adb, capsys):
    fake_adb.set(disconnect_after="1")
    with pytest.raises(DeviceError) as exc:
        run_benchmark(android_config(bm_models, fake_adb, threads=[1, 2], cpu_mask="none"))
    msg = str(exc.value)
    assert "FAKE123 is no longer connected" in msg and "lost during row 2 of 4" in msg and "\n" not in msg
    (fake_adb.device_root / "unplugged").unlink()
    (fake_adb.device_root / "benchmark_runs").unlink()
    rc = main(["-q", "benchmark", str(bm_models["int8"]), "--device", "android", "--benchmark-binary",
               str(fake_adb.binary), "--threads", "1,2", "--cpu-mask", "none"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: device FAKE123 is no longer connected") and err.count("\n") == 1


@pytest.mark.parametrize("kw, match", [
    ({"benchmark_tool": "litert"}, "--benchmark-tool only apply to --device android"),
    ({"device": "android", "benchmark_binary": "b", "benchmark_tool": "tf2"}, "--benchmark-tool 'tf2' is unknown"),
    ({"device": "android", "benchmark_binary": "b", "max_thermal": "hot"}, "--max-thermal 'hot' is unknown"),
    ({"device": "android", "benchmark_binary": "b", "cool_down": float("nan")}, "--cool-down nan"),
    ({"max_thermal": "light", "cool_down": 5.0}, "--cool-down, --max-thermal only apply"),
    ({"cool_down_timeout": 10.0}, "--cool-down-timeout only apply to --device android"),
    ({"cool_down_timeout": float("nan")}, "--cool-down-timeout nan must be"),
    ({"cool_down_timeout": -1.0}, "--cool-down-timeout -1.0 must be"),
])
def test_android_option_validation(bm_models, kw, match):
    from edge_derm.benchmarks import BenchmarkConfig
    from edge_derm.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        BenchmarkConfig(models=[bm_models["int8"]], **kw)


def litert_gpu_output(tmp_path: Path, replacing: str | None) -> str:
    """benchmark_litert.txt with its XNNPACK "Replacing" line swapped for ``replacing`` (None: dropped)."""
    lines = []
    for line in Path(fx("benchmark_litert.txt")).read_text().splitlines():
        if "Replacing" in line:
            if replacing is None:
                continue
            line = replacing
        lines.append(line)
    path = tmp_path / f"litert_gpu_{len(list(tmp_path.glob('litert_gpu_*')))}.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


FULL_GPU = ("VERBOSE: Replacing 66 out of 66 node(s) with delegate (LITERT_CL) node, yielding 1 partitions for "
            "subgraph 0 (main).")


@pytest.mark.parametrize("replacing, status", [
    (FULL_GPU, "ok"),
    (None, NOT_DELEGATED),  # no Replacing line at all: the GPU took nothing
    ("keep", NOT_DELEGATED),  # only XNNPACK's Replacing line: the CPU ran the model
])
def test_litert_gpu_allowing_partial_delegation_needs_a_gpu_replacing_line(bm_models, fake_adb, tmp_path,
                                                                           replacing, status):
    output = fx("benchmark_litert.txt") if replacing == "keep" else litert_gpu_output(tmp_path, replacing)
    fake_adb.set(tool="litert", output=output)
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none",
                                       require_full_delegation=False, models=[bm_models["fp32"]]))
    r = res.rows[0]
    assert r["status"] == status, r["reason"]
    if status == NOT_DELEGATED:
        assert "GPU" in r["reason"] and "CPU ran the model" in r["reason"]
    else:
        assert r["delegation"] == {"delegate": "LITERT_CL", "nodes": 66, "total": 66, "partitions": 1}


@pytest.mark.parametrize("fallback, status", [
    ("full", "ok"), ("cpu only", NOT_DELEGATED), ("partial", PARTIAL)])
def test_litert_rerun_after_a_refusal_is_judged_on_its_own_output(bm_models, fake_adb, tmp_path, fallback, status):
    output = {"full": litert_gpu_output(tmp_path, FULL_GPU), "cpu only": fx("benchmark_litert.txt"),
              "partial": fx("benchmark_litert_gpu_fallback.txt")}[fallback]
    fake_adb.set(tool="litert", strict_output=fx("benchmark_litert_gpu_refused.txt"), output=output)
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none",
                                       models=[bm_models["fp32"]]))
    r = res.rows[0]
    assert r["status"] == status, r["reason"]
    assert len(fake_adb.runs()) == 2 and r["latency_mean_ms"] is not None


def test_litert_rerun_that_fails_is_a_failed_row(bm_models, fake_adb):
    fake_adb.set(tool="litert", strict_output=fx("benchmark_litert_gpu_refused.txt"),
                 output=fx("benchmark_litert_gpu_refused.txt"))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], use_gpu=True, cpu_mask="none",
                                       models=[bm_models["fp32"]]))
    assert res.rows[0]["status"] == "failed to run"


def test_litert_without_num_threads_in_help_warns_once(bm_models, fake_adb, tmp_path, caplog):
    fake_adb.set(tool="litert", output=fx("benchmark_litert.txt"))
    with caplog.at_level(logging.WARNING):
        res = run_benchmark(android_config(bm_models, fake_adb, threads=[1, 4], cpu_mask="none"))
    warned = [w for w in res.devices[0]["warnings"] if "--num_threads" in w]
    assert len(warned) == 1 and "ignore" in warned[0] and caplog.text.count("--num_threads") == 1
    help_text = Path(fx("help_litert.txt")).read_text() + "\n\t--num_threads=-1\tint32\toptional\tthreads\n"
    (tmp_path / "help.txt").write_text(help_text)
    fake_adb.set(help_litert=str(tmp_path / "help.txt"))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none"))
    assert not any("--num_threads" in w for w in res.devices[0]["warnings"])


def test_thermal_status_vanishing_while_cooling_stops_the_wait(bm_models, fake_adb, fake_time, caplog):
    """dumpsys says severe, then prints no status: no TypeError, the row runs with thermal_before None."""
    fake_adb.set(thermal="3,")
    with caplog.at_level(logging.WARNING):
        res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none", max_thermal="light",
                                           models=[bm_models["int8"]]))
    r = res.rows[0]
    assert r["status"] == "ok" and r["thermal_before"] is None
    assert fake_time.sleeps == [10.0]
    assert "no thermal status" in caplog.text


def test_cli_android_options_reach_the_phone(bm_models, fake_adb, tmp_path, capsys, fake_time):
    import json

    fake_adb.set(tool="litert", output=litert_gpu_output(tmp_path, FULL_GPU), thermal="2,1")
    out = tmp_path / "out"
    rc = main(["-q", "benchmark", str(bm_models["int8"]), "--device", "android", "--benchmark-binary",
               str(fake_adb.binary), "--benchmark-tool", "litert", "--use-gpu", "--allow-partial-delegation",
               "--cpu-mask", "3", "--max-thermal", "light", "--cool-down", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert (row["benchmark_tool"], row["cpu_mask"], row["thermal_before"]) == ("litert", "3", "light")
    assert row["cool_down_s"] == pytest.approx(11.0)  # 1 s pause + one 10 s poll
    words = fake_adb.runs()[0]
    assert words[:2] == ["taskset", "3"] and "--use_cpu=true" in words
    assert "--require_full_delegation" not in flag_names(words)
    assert row["status"] == "ok" and row["delegation"]["delegate"] == "LITERT_CL"
