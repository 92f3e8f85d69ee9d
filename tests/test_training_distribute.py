"""tf.distribute: MirroredStrategy over two logical CPU devices (in a subprocess, because logical
devices must be configured before TensorFlow initialises)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import edge_derm
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from edge_derm.training.config import TrainConfig
    from edge_derm.training.trainer import train
    cfg = TrainConfig(data=[sys.argv[1]], backbone="tiny", image_size=24, weights="none", epochs_per_block=1,
                      steps_per_epoch=2, blocks=1, batch_multiple=2, distribute="mirrored")
    res = train(cfg, sys.argv[2])
    print("RESULT " + json.dumps({"replicas": res["replicas"], "rows": len(res["history"]),
                                  "loss": res["history"][-1]["loss"], "n": res["metrics"]["n"]}))
""")


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tr_datasets, tmp_path):
    out = tmp_path / "mirrored run"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tr_datasets["plain"]), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["replicas"] == 2
    assert result["rows"] == 2 and result["loss"] > 0 and result["n"] == 12
    assert (out / "model.keras").is_file() and (out / "checkpoints" / "step_1.keras").is_file()
