"""The Android path end to end against a fake ``adb`` put first on PATH, and every adb fault."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
import textwrap
import time
from importlib import resources
from pathlib import Path

import pytest
from conftest import BM_CLASSES, bm_images

from edge_derm.benchmarks import BenchmarkConfig, EvalSet, run_benchmark
from edge_derm.benchmarks.android import Adb, AndroidBenchmark, AndroidOptions, elf_abis
from edge_derm.cli import main
from edge_derm.errors import DeviceError

FIXTURES = resources.files("edge_derm.benchmarks").joinpath("fixtures")

# A stand-in for adb: a device whose /data/local/tmp lives in $FAKE_ADB_ROOT; every call is
# logged to $FAKE_ADB_LOG; $FAKE_ADB_FAULT injects one fault.
FAKE_ADB = textwrap.dedent('''
    import json, os, shlex, shutil, sys, time
    from pathlib import Path

    env = os.environ
    argv = sys.argv[1:]
    with open(env["FAKE_ADB_LOG"], "a") as fh:
        fh.write(json.dumps(argv) + "\\n")
    fault = env.get("FAKE_ADB_FAULT", "")
    devices = [d.split(":") for d in env.get("FAKE_ADB_DEVICES", "FAKE123:device").split(",") if d]
    root = Path(env["FAKE_ADB_ROOT"])

    def die(msg, code=1):
        sys.stderr.write(msg + "\\n")
        sys.exit(code)

    def local(remote):
        return root / remote.lstrip("/")

    def bump(name):
        counter = root / name
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        return n

    if argv[:1] == ["devices"]:
        if fault == "devices_hang":
            time.sleep(30)
        print("List of devices attached")
        for serial, state in devices:
            print(f"{serial}\\t{state} usb:1-1 product:fake model:Pixel_Fake device:fake transport_id:1")
        print()
        sys.exit(0)
    serial = None
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    states = dict(devices)
    if serial not in states:
        die(f"adb: device '{serial}' not found")
    if states[serial] != "device":
        die(f"adb: device {states[serial]}")
    if fault == "offline":  # listed as ready, then drops off the bus
        die("adb: device offline")
    if fault == "gone" or (root / "unplugged").exists():
        die(f"error: device '{serial}' not found")
    cmd = argv[0]
    if cmd == "get-state":  # reached only while the phone is there (the checks above fail otherwise)
        print("device")
        sys.exit(0)
    if cmd == "push":
        if fault == "push":
            die(f"adb: error: failed to copy '{argv[1]}' to '{argv[2]}': remote No space left on device")
        dst = local(argv[2])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(argv[1], dst)
        print(f"{argv[1]}: 1 file pushed, 0 skipped.")
        sys.exit(0)
    if cmd != "shell":
        die(f"fake adb: unsupported command {cmd}")
    words = shlex.split(" ".join(argv[1:]))  # what the phone's sh would do with the joined string
    if words[0] == "getprop":
        abi = env.get("FAKE_ADB_ABI", "arm64-v8a")
        props = {"ro.product.model": "Pixel Fake", "ro.product.manufacturer": "Google",
                 "ro.soc.manufacturer": "Google", "ro.soc.model": "Tensor G3",
                 "ro.build.version.release": "14", "ro.build.version.sdk": "34",
                 "ro.product.cpu.abi": abi.split(",")[0], "ro.product.cpu.abilist": abi}
        for k, v in props.items():
            print(f"[{k}]: [{v}]")
        sys.exit(0)
    if words[:2] == ["dumpsys", "thermalservice"]:
        levels = env.get("FAKE_ADB_THERMAL", "0,2").split(",")
        n = bump("thermal_calls")
        print("IsStatusOverride: false")
        if levels != [""]:
            print(f"Thermal Status: {levels[min(n, len(levels) - 1)]}")
        sys.exit(0)
    cpu_values = {"cpu_capacity": env.get("FAKE_ADB_CAPACITY", ""),
                  "cpufreq/cpuinfo_max_freq": env.get("FAKE_ADB_MAXFREQ", "")}
    if words == ["cat", "/sys/devices/system/cpu/possible"]:
        n = max(len([v for v in vals.split(",") if v]) for vals in cpu_values.values()) or 8
        print(f"0-{n - 1}")
        sys.exit(0)
    if words[:3] == ["grep", "-H", "."]:
        found = False
        for path in words[3:]:
            cpu_dir, _, name = path.partition("/cpu/cpu")[2].partition("/")
            cpu = int(cpu_dir)
            vals = [v for v in cpu_values[name].split(",") if v]
            if cpu < len(vals):
                print(f"{path}:{vals[cpu]}")
                found = True
            else:
                sys.stderr.write(f"grep: {path}: No such file or directory\\n")
        sys.exit(0 if found else 2)
    if words[0] in ("mkdir", "chmod", "rm", "pkill"):
        sys.exit(0)
    if words[0] == "test":
        sys.exit(1 if fault == "noexec" else 0)
    if words[0] == "env":
        words = [w for w in words[1:] if "=" not in w or w.startswith("-")]
    if words[0] == "taskset":
        words = words[2:]
    if words[0].endswith("/benchmark_model"):
        if not local(words[0]).exists():
            die(f"/system/bin/sh: {words[0]}: inaccessible or not found", 127)
        if fault == "exec_format":
            die(f"/system/bin/sh: {words[0]}: not executable: 64-bit ELF file", 126)
        tool = env.get("FAKE_ADB_TOOL", "tflite")
        if words[1:] == ["--help"]:
            if tool in ("tflite", "litert"):
                print(open(env[f"FAKE_ADB_HELP_{tool.upper()}"]).read())
            else:
                print("usage: something else")
            sys.exit(1 if tool == "tflite" else 0)
        if fault == "timeout":
            time.sleep(30)
        if fault == "timeout_gone":  # the phone drops off the bus while the run hangs
            (root / "unplugged").touch()
            time.sleep(30)
        if fault == "closed_once":  # adb's transport hiccups, the phone stays connected
            die("error: closed", 255)
        n = bump("benchmark_runs")
        after = env.get("FAKE_ADB_DISCONNECT_AFTER")
        if after is not None and n >= int(after):
            (root / "unplugged").touch()
            die("error: closed", 255)
        known = {"graph", "num_threads", "warmup_runs", "num_runs", "warmup_min_secs", "min_secs",
                 "require_full_delegation", "use_gpu"}
        known |= {"use_xnnpack", "use_nnapi"} if tool == "tflite" else {"use_cpu", "use_npu"}
        unknown = [w for w in words[1:] if w.lstrip("-").split("=")[0] not in known]
        if unknown:
            print("WARN: Unconsumed cmdline flags: " + " ".join(unknown))
        graph = next(w.split("=", 1)[1] for w in words if w.startswith("--graph="))
        if not local(graph).exists() or fault == "bench_fail":
            for line in open(env["FAKE_ADB_FAILED"]).read().splitlines():
                (sys.stderr if line.startswith("ERROR: ") else sys.stdout).write(line + "\\n")
            sys.exit(1)
        output = env["FAKE_ADB_OUTPUT"]
        for pair in env.get("FAKE_ADB_OUTPUT_FOR", "").split(";"):
            key, _, path = pair.partition("=")
            if key and key in graph:
                output = path
        if "--require_full_delegation=true" in words and env.get("FAKE_ADB_STRICT_OUTPUT"):
            output = env["FAKE_ADB_STRICT_OUTPUT"]
        text = open(output).read()
        for line in text.splitlines():  # tflite/tools/logging.h: ERROR (and FATAL) lines go to stderr
            stream = sys.stderr if line.startswith(("ERROR: ", "FATAL: ")) else sys.stdout
            stream.write(line + "\\n")
        sys.exit(1 if "Benchmarking failed." in text else 0)
    die(f"/system/bin/sh: {words[0]}: inaccessible or not found", 127)
''')


def elf_binary(path: Path, machine: int = 0xB7) -> Path:
    """A file with a 64-bit little-endian ELF header for ``machine`` (0xB7 = aarch64)."""
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")
    path.write_bytes(header + b"\x00" * 44)
    return path


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """Put the fake adb first on PATH; returns a helper to read its log and set its behaviour."""
    bindir = tmp_path / "fake bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(f"#!{sys.executable}\n{FAKE_ADB}")
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    root = tmp_path / "device root"
    root.mkdir()
    log = tmp_path / "adb log.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(FIXTURES.joinpath("benchmark_tflite.txt")))
    monkeypatch.setenv("FAKE_ADB_FAILED", str(FIXTURES.joinpath("benchmark_failed.txt")))
    monkeypatch.setenv("FAKE_ADB_HELP_TFLITE", str(FIXTURES.joinpath("help_tflite.txt")))
    monkeypatch.setenv("FAKE_ADB_HELP_LITERT", str(FIXTURES.joinpath("help_litert.txt")))
    for name in ("FAULT", "DEVICES", "TOOL", "THERMAL", "CAPACITY", "MAXFREQ", "ABI", "OUTPUT_FOR", "STRICT_OUTPUT",
                 "DISCONNECT_AFTER"):
        monkeypatch.delenv(f"FAKE_ADB_{name}", raising=False)

    class Fake:
        binary = elf_binary(tmp_path / "benchmark model")
        device_root = root

        def calls(self) -> list[list[str]]:
            return [json.loads(line) for line in log.read_text().splitlines()]

        def shell_words(self) -> list[list[str]]:
            return [shlex.split(" ".join(c[c.index("shell") + 1:])) for c in self.calls() if "shell" in c]

        def runs(self) -> list[list[str]]:
            """The benchmark runs (not the --help probe), each as the phone's argument list."""
            return [w for w in self.shell_words() if any(x.startswith("--graph=") for x in w)]

        def set(self, **env):
            for k, v in env.items():
                monkeypatch.setenv(f"FAKE_ADB_{k.upper()}", v)

    return Fake()


@pytest.fixture(scope="module")
def evalset() -> EvalSet:
    imgs, labels = bm_images(n_per_class=3)
    keys = [str(i) for i in range(len(imgs))]
    return EvalSet(keys, labels, list(BM_CLASSES), lambda p, s, m: imgs[int(p)])


def android_config(bm_models, fake_adb, **kw) -> BenchmarkConfig:
    args = {"models": [bm_models["fp32"], bm_models["int8"]], "device": "android", "threads": [1, 4],
            "warmup": 2, "runs": 7, "benchmark_binary": fake_adb.binary, **kw}
    return BenchmarkConfig(**args)


def test_android_end_to_end(bm_models, fake_adb, evalset):
    res = run_benchmark(android_config(bm_models, fake_adb, cpu_mask="f0"), data=evalset)
    assert len(res.rows) == 4
    for r in res.rows:
        assert r["status"] == "ok", r["reason"]
        assert r["device"] == "android:FAKE123"
        assert r["latency_median_ms"] == pytest.approx(63.001)  # from the tflite fixture
        assert r["latency_mean_ms"] == pytest.approx(63.7432)
        assert r["peak_memory_mb"] == pytest.approx(61.2539)
        assert r["accuracy_source"] == "host" and r["metrics"]["accuracy"] == 1.0
        assert (r["device_model"], r["soc"], r["android"]) == ("Pixel Fake", "Google Tensor G3", "14")
        assert r["benchmark_tool"] == "tflite" and r["cpu_mask_source"] == "user"
        assert r["thermal_after"] == "moderate"
    # read before every row, not once per device: the fake phone says none, then moderate
    assert [r["thermal_before"] for r in res.rows] == ["none", "moderate", "moderate", "moderate"]
    dev = res.devices[0]
    assert dev["abi"] == "arm64-v8a" and dev["sdk"] == "34"
    assert dev["benchmark_tool"] == "tflite" and dev["tool_detected_by"] == "--help"
    # the binary and both models were pushed, byte for byte
    pushed = sorted(p.name for p in (fake_adb.device_root / "data/local/tmp/edge_derm").iterdir())
    assert pushed == ["benchmark_model", "m0_model.fp32.tflite", "m1_model.int8.tflite"]
    assert (fake_adb.device_root / "data/local/tmp/edge_derm/m1_model.int8.tflite").read_bytes() == \
        Path(bm_models["int8"]).read_bytes()
    runs = [w for w in fake_adb.shell_words() if w[0] == "taskset"]
    assert len(runs) == 4
    assert runs[0][:3] == ["taskset", "f0", "/data/local/tmp/edge_derm/benchmark_model"]
    assert "--num_threads=4" in runs[1] and "--num_runs=7" in runs[1] and "--warmup_runs=2" in runs[1]
    assert "--use_xnnpack=true" in runs[0]
    # every adb call named the device
    assert all(c[:2] == ["-s", "FAKE123"] for c in fake_adb.calls() if c[0] != "devices")


def test_android_old_tool_output(bm_models, fake_adb):
    """An old build (no prefixes, no percentiles): the row falls back to the mean."""
    fake_adb.set(output=str(FIXTURES.joinpath("benchmark_tflite_old.txt")))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[2], cpu_mask="none"))
    r = res.rows[0]
    assert r["status"] == "ok"
    assert r["latency_median_ms"] is None and r["latency_mean_ms"] == pytest.approx(2950.34)
    assert r["images_per_s"] == pytest.approx(1000 / 2950.34)
    assert r["cpu_mask"] is None and r["cpu_mask_source"] == "none"
    assert not any(w[0] == "taskset" for w in fake_adb.shell_words())


def test_several_serials_run_one_after_another(bm_models, fake_adb):
    fake_adb.set(devices="A1:device,B2:device")
    res = run_benchmark(android_config(bm_models, fake_adb, serials=["B2", "A1"], threads=[1]))
    assert [r["device"] for r in res.rows] == ["android:B2", "android:B2", "android:A1", "android:A1"]
    serials = [c[1] for c in fake_adb.calls() if c[0] == "-s"]
    last_b2 = max(i for i, s in enumerate(serials) if s == "B2")
    first_a1 = min(i for i, s in enumerate(serials) if s == "A1")
    assert last_b2 < first_a1


def test_a_failing_model_is_a_row_not_an_abort(bm_models, fake_adb):
    fake_adb.set(fault="bench_fail")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1]))
    assert [r["status"] for r in res.rows] == ["failed to run", "failed to run"]
    assert "Benchmarking failed" in res.rows[0]["reason"]


def _output_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _tflite_fixture() -> str:
    return FIXTURES.joinpath("benchmark_tflite.txt").read_text()


def test_failure_after_warmup_is_failed_not_ok(bm_models, fake_adb, tmp_path):
    """The classic tool prints the warm-up's count= line, then fails (exit 1): no timed runs exist."""
    lines = _tflite_fixture().splitlines()
    cut = next(i for i, ln in enumerate(lines) if ln.startswith("INFO: count=9"))
    text = "\n".join(lines[:cut + 1] + ["ERROR: Failed to invoke the interpreter.", "ERROR: Benchmarking failed."])
    fake_adb.set(output=_output_file(tmp_path, "warmup_fail.txt", text))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none"))
    assert [r["status"] for r in res.rows] == ["failed to run", "failed to run"]
    r = res.rows[0]
    assert "Failed to invoke the interpreter." in r["reason"] and "exit 1" in r["reason"]
    assert r["latency_mean_ms"] is None


def test_failure_during_timed_runs_is_failed_not_ok(bm_models, fake_adb, tmp_path):
    """Results printed, then exit 1: the exit status wins."""
    text = _tflite_fixture() + "\nERROR: Failed to free resources.\nERROR: Benchmarking failed.\n"
    fake_adb.set(output=_output_file(tmp_path, "timed_fail.txt", text))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none"))
    assert [r["status"] for r in res.rows] == ["failed to run", "failed to run"]
    assert "Failed to free resources." in res.rows[0]["reason"] and "\n" not in res.rows[0]["reason"]


def test_the_tools_own_error_lines_are_not_a_lost_phone(bm_models, fake_adb, tmp_path):
    """"ERROR: ... on this device - dlopen failed: ... not found" on stderr, exit 1: a failed row."""
    text = ("INFO: STARTING!\nINFO: Graph: [/data/local/tmp/edge_derm/m0_model.fp32.tflite]\n"
            "ERROR: TfLiteGpuDelegate Init: Can not open OpenCL library on this device - dlopen failed: "
            "library \"libOpenCL.so\" not found\nERROR: Benchmarking failed.\n")
    fake_adb.set(output=_output_file(tmp_path, "opencl.txt", text))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none", use_gpu=True))
    assert [r["status"] for r in res.rows] == ["failed to run", "failed to run"]
    assert "Can not open OpenCL library" in res.rows[0]["reason"]


def test_adb_transport_error_with_the_phone_still_there_is_a_failed_row(bm_models, fake_adb):
    """"error: closed" but 'adb get-state' says device: the row failed, the phone is not lost."""
    fake_adb.set(fault="closed_once")
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none", models=[bm_models["int8"]]))
    assert [r["status"] for r in res.rows] == ["failed to run"]
    assert ["-s", "FAKE123", "get-state"] in fake_adb.calls()


def test_driver_words_in_a_good_run_are_not_a_wrong_binary(bm_models, fake_adb, tmp_path):
    """"permission denied" in a driver line of a run that worked (exit 0) used to abort as "wrong ABI"."""
    help_text = FIXTURES.joinpath("help_tflite.txt").read_text() + "\nINFO: perf counters: permission denied\n"
    fake_adb.set(help_tflite=_output_file(tmp_path, "help.txt", help_text))
    lines = _tflite_fixture().splitlines()
    lines.insert(10, "INFO: Adreno driver: cannot execute perf query, permission denied for /dev/kgsl-3d0")
    fake_adb.set(output=_output_file(tmp_path, "driver.txt", "\n".join(lines)))
    res = run_benchmark(android_config(bm_models, fake_adb, threads=[1], cpu_mask="none"))
    assert [r["status"] for r in res.rows] == ["ok", "ok"]


def test_unreadable_binary_is_one_line_device_error(tmp_path):
    from edge_derm.benchmarks.android import elf_info, tool_from_binary

    folder = tmp_path / "benchmark_model"
    folder.mkdir()
    for fn in (elf_info, tool_from_binary):
        with pytest.raises(DeviceError, match="cannot read the benchmark binary") as exc:
            fn(folder)
        assert "\n" not in str(exc.value)


def test_user_text_never_reaches_the_remote_shell_unquoted(bm_models, fake_adb, tmp_path):
    weird = tmp_path / "x; touch pwned $(id).tflite"
    shutil.copyfile(bm_models["fp32"], weird)
    res = run_benchmark(android_config(bm_models, fake_adb, models=[weird], threads=[1]))
    assert res.rows[0]["status"] == "ok"
    remote = fake_adb.runs()[0]
    graph = next(w for w in remote if w.startswith("--graph="))
    assert graph == "--graph=/data/local/tmp/edge_derm/m0_x__touch_pwned___id_.tflite"
    assert not (fake_adb.device_root / "pwned").exists()


@pytest.mark.parametrize("devices, serials, match", [
    ("", [], "no Android device connected"),
    ("A1:device,B2:device", [], r"several devices connected \(A1, B2\); choose with --serial"),
    ("A1:unauthorized", [], "A1 is unauthorized"),
    ("A1:offline", [], "A1 is offline"),
    ("A1:device", ["Z9"], "device Z9 not found"),
])
def test_device_selection_faults(bm_models, fake_adb, devices, serials, match):
    fake_adb.set(devices=devices)
    with pytest.raises(DeviceError, match=match):
        run_benchmark(android_config(bm_models, fake_adb, serials=serials))


@pytest.mark.parametrize("fault, match", [
    ("push", "adb push .* failed: adb: error: failed to copy"),
    ("noexec", "not executable on FAKE123"),
    ("exec_format", "benchmark model cannot run on FAKE123: .*not executable: 64-bit ELF file"),
    ("offline", "device FAKE123 is offline"),
    ("gone", "device FAKE123 is no longer connected"),
])
def test_device_faults(bm_models, fake_adb, fault, match):
    fake_adb.set(fault=fault)
    with pytest.raises(DeviceError, match=match) as exc:
        run_benchmark(android_config(bm_models, fake_adb))
    assert "\n" not in str(exc.value)


def test_wrong_abi_is_caught_before_pushing(bm_models, fake_adb, tmp_path):
    x86 = elf_binary(tmp_path / "benchmark_model_x86", machine=0x3E)
    with pytest.raises(DeviceError, match="built for x86_64 but FAKE123 runs arm64-v8a"):
        run_benchmark(android_config(bm_models, fake_adb, benchmark_binary=x86))
    assert not any(c[2] == "push" for c in fake_adb.calls() if len(c) > 2)
    not_elf = tmp_path / "script"
    not_elf.write_text("#!/bin/sh\n")
    with pytest.raises(DeviceError, match="no ELF header"):
        elf_abis(not_elf)


def test_run_timeout_on_a_healthy_phone_is_a_failed_row(bm_models, fake_adb):
    """A model that hangs is a 'failed to run' row; the rows measured before and after it are kept."""
    fake_adb.set(fault="timeout")
    res = run_benchmark(android_config(bm_models, fake_adb, timeout=1.0, threads=[1], cpu_mask="none"))
    assert [r["status"] for r in res.rows] == ["failed to run", "failed to run"]
    assert all("timed out after 1 s" in r["reason"] and "\n" not in r["reason"] for r in res.rows)
    assert ["pkill", "-f", "/data/local/tmp/edge_derm/benchmark_model"] in fake_adb.shell_words()
    assert ["-s", "FAKE123", "get-state"] in fake_adb.calls()


def test_run_timeout_with_the_phone_gone_is_one_line_error(bm_models, fake_adb):
    fake_adb.set(fault="timeout_gone")
    with pytest.raises(DeviceError, match=r"timed out after 1 s") as exc:
        run_benchmark(android_config(bm_models, fake_adb, timeout=1.0, threads=[1], cpu_mask="none"))
    assert "no longer answers 'adb get-state'" in str(exc.value) and "lost during row 1 of 2" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_adb_devices_honours_timeout(bm_models, fake_adb):
    """`adb devices` used to wait its own 60 s whatever --timeout said."""
    fake_adb.set(fault="devices_hang")
    t0 = time.perf_counter()
    with pytest.raises(DeviceError, match=r"timed out after 1 s"):
        run_benchmark(android_config(bm_models, fake_adb, timeout=1.0))
    assert time.perf_counter() - t0 < 15


def test_adb_not_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceError, match="'adb' not found on PATH"):
        Adb()


def test_missing_binary(bm_models, fake_adb, tmp_path):
    with pytest.raises(DeviceError, match="benchmark binary .* not found"):
        run_benchmark(android_config(bm_models, fake_adb, benchmark_binary=tmp_path / "nope"))


def test_command_is_an_argument_list(fake_adb):
    bench = AndroidBenchmark(Adb(), "FAKE123", AndroidOptions(binary=fake_adb.binary, use_nnapi=True))
    argv = bench.command("/data/local/tmp/edge_derm/m0_a.tflite", 3, 1, 5)
    assert argv[0] == "/data/local/tmp/edge_derm/benchmark_model"
    assert "--use_nnapi=true" in argv and "--num_threads=3" in argv


def test_cli_android(bm_models, fake_adb, tmp_path, capsys):
    out = tmp_path / "android out"
    rc = main(["-q", "benchmark", str(bm_models["int8"]), "--device", "android", "--benchmark-binary",
               str(fake_adb.binary), "--threads", "1,2", "--runs", "3", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads((out / "results.json").read_text())
    assert [r["threads"] for r in doc["rows"]] == [1, 2]
    assert doc["devices"][0]["model"] == "Pixel Fake"
    fake_adb.set(devices="")
    rc = main(["-q", "benchmark", str(bm_models["int8"]), "--device", "android", "--benchmark-binary",
               str(fake_adb.binary)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: no Android device connected") and err.count("\n") == 1


@pytest.mark.skipif(shutil.which("adb") is None, reason="the Debian adb package is not installed")
def test_real_adb_without_devices(monkeypatch):
    """With the real adb and no phone, selection fails with the one-line 'no device' error."""
    real = Adb(shutil.which("adb"), timeout=30)
    if real.devices():
        pytest.skip("a real device is connected")
    with pytest.raises(DeviceError, match="no Android device connected"):
        real.select([])
