"""``BenchmarkConfig``: what one ``edge-derm benchmark`` run measures, validated up front."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_derm.errors import ConfigError

DEVICES = ("cpu", "android")
SPLITS = ("train", "val", "test")
GLOBAL_METRICS = ("accuracy", "macro_f1", "weighted_f1")  # those compare_metrics gives deltas for
CLASS_METRICS = ("sensitivity", "precision", "f1")
CPU_MASK = re.compile(r"^(0x)?[0-9a-fA-F]{1,16}$")
BENCHMARK_TOOLS = ("auto", "tflite", "litert")  # android: which LiteRT benchmark binary (auto = told on the phone)
THERMAL_LEVELS = ("none", "light", "moderate", "severe", "critical", "emergency")  # PowerManager THERMAL_STATUS_*


@dataclass(frozen=True)
class Gate:
    """Largest allowed drop of one metric against the reference, in percentage points.

    Attributes:
        metric: ``accuracy``, ``macro_f1``, ``weighted_f1``, or a per-class
            ``sensitivity``, ``precision``, ``f1``.
        cls: the class of a per-class metric (``*`` = every class); None for the others.
        max_drop: allowed drop in points (1.0 = one percentage point).
    """

    metric: str
    cls: str | None
    max_drop: float

    @property
    def key(self) -> str:
        return self.metric if self.cls is None else f"{self.metric}:{self.cls}"

    @classmethod
    def parse(cls, spec: str) -> "Gate":
        """Parse ``macro_f1=1.0`` or ``sensitivity:MM=2.0``; ConfigError says what to type instead."""
        hint = "use e.g. --max-drop macro_f1=1.0 or --max-drop sensitivity:MM=2.0 (points)"
        name, sep, value = spec.partition("=")
        name = name.strip()
        try:
            drop = float(value)
        except ValueError:
            drop = float("nan")
        if not sep or not name or not drop >= 0:  # also rejects NaN
            raise ConfigError(f"--max-drop {spec!r} is not METRIC=POINTS with POINTS >= 0; {hint}")
        metric, colon, klass = name.partition(":")
        if colon:
            if metric not in CLASS_METRICS or not klass:
                raise ConfigError(f"--max-drop {spec!r}: per-class metrics are {', '.join(CLASS_METRICS)} "
                                  f"followed by :CLASS; {hint}")
            return cls(metric, klass, drop)
        if metric not in GLOBAL_METRICS:
            raise ConfigError(f"--max-drop {spec!r}: unknown metric {metric!r}; choose from "
                              f"{', '.join(GLOBAL_METRICS)} or {'/'.join(CLASS_METRICS)}:CLASS; {hint}")
        return cls(metric, None, drop)


@dataclass
class BenchmarkConfig:
    """One benchmark run.

    Attributes:
        models: .tflite files, or convert / run folders holding them.
        data: dataset folder (``manifest.csv`` + ``dataset.json``) for accuracy; None = latency only.
        split: the dataset split to score.
        device: ``cpu`` (this machine, in-process) or ``android`` (phones over adb).
        threads: thread counts; one row per (model, device, threads).
        warmup: untimed runs before timing.
        runs: timed runs.
        reference: the model deltas are taken against; default the fp32 model of the set.
        gates: largest allowed drops against the reference.
        serials: adb serials (android); empty = the only connected device.
        benchmark_binary: LiteRT's ``benchmark_model`` (TFLite) or ``benchmark_litert_model`` (CompiledModel)
            built for the phone (android).
        benchmark_tool: which of the two the binary is: ``auto`` (told from ``--help`` on the phone, then
            from strings in the binary), ``tflite`` or ``litert`` (android).
        benchmark_libs: shared libraries pushed next to the binary, e.g. LiteRT's GPU accelerator
            ``libLiteRtClGlAccelerator.so`` (android).
        use_gpu: run with the GPU delegate / accelerator (android).
        use_nnapi: run with the NNAPI delegate; the classic tool only (android).
        require_full_delegation: None = automatic (the CompiledModel tool is asked to refuse a CPU fallback
            and, if it does, rerun with one so the row says "partially delegated"; the classic tool's
            delegation lines are read); True = always ask the tool to refuse (such rows get no timings);
            False = never ask (android).
        cpu_mask: ``taskset`` hex mask, e.g. ``f0``; None = the big cores, from the phone's
            ``cpu_capacity`` (or ``cpuinfo_max_freq``); ``none`` = no mask (android).
        cool_down: seconds to pause before each row (android).
        max_thermal: before each row, wait until the phone's thermal status is at most this (``none``,
            ``light``, ``moderate``, ...); None = do not wait (android).
        cool_down_timeout: longest wait for ``max_thermal`` per row; a row still hotter runs with status
            ``throttled`` (android).
        timeout: seconds allowed for one benchmark run (android).
        adb: the adb executable.
        eval_threads: interpreter threads for host-side accuracy (None: the largest of ``threads``).
        domains: more dataset folders scored like ``data`` (same split), shown side by side with it: another
            acquisition domain, whose classes may be a subset of the model's.
        keras: run folders (``config.json`` + ``model.keras``) whose Keras model is scored as a row
            (quantization ``keras``, accuracy only, on the host); ``reference`` may name one of them.
    """

    models: list[Path]
    data: Path | None = None
    split: str = "test"
    device: str = "cpu"
    threads: list[int] = field(default_factory=lambda: [1])
    warmup: int = 5
    runs: int = 30
    reference: Path | None = None
    gates: list[Gate] = field(default_factory=list)
    serials: list[str] = field(default_factory=list)
    benchmark_binary: Path | None = None
    benchmark_tool: str = "auto"
    benchmark_libs: list[Path] = field(default_factory=list)
    use_gpu: bool = False
    use_nnapi: bool = False
    require_full_delegation: bool | None = None
    cpu_mask: str | None = None
    cool_down: float = 0.0
    max_thermal: str | None = None
    cool_down_timeout: float = 300.0
    timeout: float = 600.0
    adb: str = "adb"
    eval_threads: int | None = None
    domains: list[Path] = field(default_factory=list)
    keras: list[Path] = field(default_factory=list)

    def inputs(self) -> list[Path]:
        """What the benchmark reads (``--out`` may not be, hold or lie inside any of it): the models and
        their folders, the dataset folder and its images, the reference, the benchmark binary."""
        from edge_derm.data.manifest import Manifest

        inputs = [*self.models, *self.keras, self.reference, self.benchmark_binary, *self.benchmark_libs]
        for data in [self.data, *self.domains] if self.data is not None else []:
            try:
                inputs += Manifest.load(data).inputs()
            except Exception:  # noqa: BLE001 - a bad dataset is reported where it is read
                inputs.append(data)
        return [p for p in inputs if p is not None]

    def __post_init__(self) -> None:
        self._coerce()
        self._check_common()
        if self.device == "android":
            self._check_android()
        else:
            self._check_cpu_only()

    def _coerce(self) -> None:
        """Paths as Path, gate specs as Gate, thread counts as int (the CLI and the library pass strings)."""
        self.models = [Path(m) for m in self.models]
        self.keras = [Path(k) for k in self.keras]
        if not self.models and not self.keras:
            raise ConfigError("no models given; pass .tflite files or a convert folder")
        self.data = Path(self.data) if self.data is not None else None
        self.domains = [Path(d) for d in self.domains]
        if self.domains and self.data is None:
            raise ConfigError("domains need a first dataset (data) to compare with")
        self.reference = Path(self.reference) if self.reference is not None else None
        self.benchmark_binary = Path(self.benchmark_binary) if self.benchmark_binary is not None else None
        self.benchmark_libs = [Path(p) for p in self.benchmark_libs]
        self.gates = [Gate.parse(g) if isinstance(g, str) else g for g in self.gates]
        self.threads = [int(t) for t in self.threads]

    def _check_common(self) -> None:
        """The settings of every device: split, device, threads, runs, timeouts; and Keras run folders."""
        if self.split not in SPLITS:
            raise ConfigError(f"--split {self.split!r} is unknown; use one of {', '.join(SPLITS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device {self.device!r} is unknown; use one of {', '.join(DEVICES)}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ConfigError(f"--threads {self.threads} must be positive integers, e.g. --threads 1,2,4")
        self.threads = list(dict.fromkeys(self.threads))
        if self.device == "cpu":
            from edge_derm.runtime import check_threads

            for t in self.threads:
                check_threads(t)
        elif any(t > 64 for t in self.threads):
            raise ConfigError(f"--threads {max(self.threads)} is out of range for a phone; use 1 to 64")
        if self.warmup < 0:
            raise ConfigError(f"--warmup {self.warmup} must be 0 or more")
        if self.runs < 1:
            raise ConfigError(f"--runs {self.runs} must be 1 or more")
        if not (self.timeout > 0 and self.timeout < 86400 * 7):  # also rejects nan and inf
            raise ConfigError(f"--timeout {self.timeout} must be a positive number of seconds below a week")
        for name, value in (("--cool-down", self.cool_down), ("--cool-down-timeout", self.cool_down_timeout)):
            if not (value >= 0 and value < 86400):  # also rejects nan and inf
                raise ConfigError(f"{name} {value} must be 0 or more seconds, below a day")
        for run in self.keras:
            if not ((run / "config.json").is_file() and (run / "model.keras").is_file()):
                raise ConfigError(f"--keras {run} is not a run folder (needs config.json and model.keras); "
                                  "train one with `edge-derm train`")

    def _check_android(self) -> None:
        """The phone settings (binary, delegates, CPU mask, tool, thermal level)."""
        if self.benchmark_binary is None:
            raise ConfigError("--device android needs --benchmark-binary PATH (LiteRT's benchmark_model "
                              "for android_arm64)")
        if self.use_gpu and self.use_nnapi:
            raise ConfigError("choose one of --use-gpu and --use-nnapi")
        if self.cpu_mask is not None and self.cpu_mask.lower() != "none" and not CPU_MASK.match(self.cpu_mask):
            raise ConfigError(f"--cpu-mask {self.cpu_mask!r} is not a hex CPU mask; use e.g. f0 for CPUs 4-7, "
                              "or none for no mask")
        if self.benchmark_tool not in BENCHMARK_TOOLS:
            raise ConfigError(f"--benchmark-tool {self.benchmark_tool!r} is unknown; use one of "
                              f"{', '.join(BENCHMARK_TOOLS)}")
        if self.max_thermal is not None and self.max_thermal not in THERMAL_LEVELS:
            raise ConfigError(f"--max-thermal {self.max_thermal!r} is unknown; use one of {', '.join(THERMAL_LEVELS)}")

    def _check_cpu_only(self) -> None:
        """ConfigError naming the phone-only options set on a CPU run."""
        default_timeout = type(self).__dataclass_fields__["cool_down_timeout"].default
        android_only = [name for name, on in (("--serial", bool(self.serials)),
                                              ("--benchmark-binary", self.benchmark_binary is not None),
                                              ("--benchmark-tool", self.benchmark_tool != "auto"),
                                              ("--benchmark-lib", bool(self.benchmark_libs)),
                                              ("--use-gpu", self.use_gpu), ("--use-nnapi", self.use_nnapi),
                                              ("--require-full-delegation", self.require_full_delegation is not None),
                                              ("--cpu-mask", self.cpu_mask is not None),
                                              ("--cool-down", self.cool_down != 0),
                                              ("--max-thermal", self.max_thermal is not None),
                                              ("--cool-down-timeout", self.cool_down_timeout != default_timeout))
                        if on]
        if android_only:
            raise ConfigError(f"{', '.join(android_only)} only apply to --device android")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (saved into results.json)."""
        d = asdict(self)
        d["gates"] = {g.key: g.max_drop for g in self.gates}
        return {k: (str(v) if isinstance(v, Path) else [str(x) for x in v] if k in ("models", "domains", "benchmark_libs", "keras")
                    else v)
                for k, v in d.items()}
