"""Keep native libraries' log lines (TensorFlow, XLA, absl, LiteRT) off the console unless ``--verbose``.

TensorFlow's C++ code logs a dozen lines on import (cuInit, cuDNN/cuBLAS factories, "computation
placer already registered", absl's pre-init warning) and LiteRT one per interpreter; none is
actionable, and they bury the one ``error:`` line a user needs. ``TF_CPP_MIN_LOG_LEVEL`` silences only
some of them, so the console script routes file descriptor 2 (what C/C++ writes) through a thread
that drops lines of those formats and forwards everything else, while Python's own ``sys.stderr``
(errors, warnings, progress bars) writes to the real stderr directly. Only the console script does
this (``edge_derm.cli.entry``), never library calls or tests; ``EDGE_DERM_NATIVE_LOGS=1`` turns it off.
"""

from __future__ import annotations

import os
import re
import sys
import threading

#: Native log lines: absl/glog ("W0000 00:00:1795... 123 file.cc:42] ..."), TensorFlow's C++ logging
#: ("2026-11-27 12:00:00.123456: E external/..."), absl's pre-init banner and LiteRT's INFO lines.
#: Errors and fatal lines are kept, except the three CUDA start-up errors every CPU-only import prints.
#: Also the one line the TFLite converter's MLIR quantiser prints for every int8 conversion.
NOISE = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\]]+\] "
                   rb"|E\d{4} \d\d:\d\d:[\d.]+ +\d+ cuda_(?:dnn|blas|fft)\.cc:\d+\] Unable to register "
                   rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                   rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "
                   rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: E \S+cuda_(?:platform|fft|dnn|blas)\.cc:\d+\] "
                   rb"(?:failed call to cuInit|Unable to register)"
                   rb"|INFO: (?:Created TensorFlow Lite|Initialized TensorFlow Lite)"
                   rb"|fully_quantize: \d+, inference_type: \d+, input_inference_type: )")  # the MLIR quantiser's printf


def filter_native_stderr() -> bool:
    """Route fd 2 through the filter; returns whether it is active."""
    if os.environ.get("EDGE_DERM_NATIVE_LOGS") or not hasattr(os, "pipe"):
        return False
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:  # a larger pipe: native code may write a burst while holding the GIL
            import fcntl

            fcntl.fcntl(2, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (OSError, ImportError):
            pass
    except OSError:
        return False
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = open(real, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False)

    def pump() -> None:
        # Drain the pipe for the whole life of the process, whatever happens to the real stderr (a closed
        # pipe such as `| head` must not leave native code blocked on a full pipe).
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if NOISE.match(line):
                    continue
                try:
                    os.write(real, line)
                except OSError:
                    pass

    threading.Thread(target=pump, name="edge-derm-stderr", daemon=True).start()
    return True
