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
NOISE = re.compile(rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [^\]]+\] "
                   rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                   rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
                   rb"|INFO: (?:Created TensorFlow Lite|Initialized TensorFlow Lite))")


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
    except OSError:
        return False
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = open(real, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not NOISE.match(line):
                    os.write(real, line)

    threading.Thread(target=pump, name="edge-derm-stderr", daemon=True).start()
    return True
