"""Quiet by default (issue 16): the console script's stderr during train and convert holds our own
warnings only, with no TensorFlow/absl/XNNPACK log lines and no third-party Python warnings; --verbose
brings the library details back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import make_tr_dataset

ENTRY = "from edge_derm.cli import entry; entry()"


def _stderr_lines(argv: list[str], timeout: int = 300) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", ENTRY, *argv], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ln.strip()]


@pytest.mark.slow
def test_train_and_convert_print_only_our_own_lines(tmp_path):
    ds = make_tr_dataset(tmp_path / "ds", ["MM", "Nev"], n_train=4, n_test=2)
    run = tmp_path / "run"
    code, train = _stderr_lines(["--quiet", "train", "--data", str(ds), "--backbone", "tiny", "--image-size", "24",
                                 "--weights", "none", "-e", "1", "--steps-per-epoch", "1", "--blocks", "0",
                                 "--val-fraction", "0", "--out", str(run)])
    assert code == 0, train
    code, convert = _stderr_lines(["--quiet", "convert", str(run), "--quantize", "fp32", "--quantize", "int8",
                                   "--keep-failed", "--calibration-size", "4"])
    assert code in (0, 1), convert  # a tiny model may miss int8's fidelity bar; the output is the question
    for line in train + convert:
        # ours: logging's "WARNING edge_derm...", the CLI's "warning: ..." and "error: ..." lines
        assert line.startswith(("WARNING edge_derm", "warning: ", "error: ")), line
    code, verbose = _stderr_lines(["--verbose", "convert", str(run), "--quantize", "int8", "--keep-failed",
                                   "--calibration-size", "4", "--out", str(tmp_path / "v")])
    assert any("fully_quantize" in ln or "UserWarning" in ln or "INFO" in ln for ln in verbose), verbose[-10:]


def test_an_unexpected_fault_still_shows_its_traceback():
    """The console script leaves with os._exit after a failed TensorFlow command (no hang on tf.data
    threads); a bug's traceback must be printed before that, not swallowed."""
    code = ("import sys, types; sys.modules.setdefault('tensorflow', types.ModuleType('tensorflow'))\n"
            "import edge_derm.cli as cli\n"
            "def broken(argv=None):\n    raise RuntimeError('boom from a bug')\n"
            "cli.main = broken\ncli.entry()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "RuntimeError: boom from a bug" in proc.stderr
