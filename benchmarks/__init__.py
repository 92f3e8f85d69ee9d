"""The benchmark harness (imported as ``edge_derm.benchmarks``): host CPU latency, Android over adb,
per-class accuracy through the shared evaluator, deltas against a reference, gates, result files.

Importing this package imports neither TensorFlow nor the interpreter; the .tflite path never
imports TensorFlow at all (only scoring a Keras reference, :func:`keras_row` or ``--keras``, does).
"""

from __future__ import annotations

from edge_derm.benchmarks.config import BenchmarkConfig, Gate
from edge_derm.benchmarks.harness import BenchmarkResult, EvalSet, keras_row, run_benchmark
from edge_derm.benchmarks.report import write_results

__all__ = ["BenchmarkConfig", "BenchmarkResult", "EvalSet", "Gate", "keras_row", "run_benchmark", "write_results"]
