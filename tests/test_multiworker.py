"""Multi-worker training with real worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy over gRPC).

Every worker is a subprocess (a TensorFlow runtime joins one cluster per process); all traffic stays on
the loopback interface (ports picked free by the OS), and every process is killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edge_derm.errors import ConfigError
from edge_derm.training.distributed import check_global_batch, cluster_from_env
from edge_derm.training.launch import local_tf_configs

#: One training run of the tiny backbone: the head step, then block b3 (whose BatchNorm trains), one epoch
#: each, with a carved-free val split, best-epoch selection, BatchNorm re-estimation and calibration.
WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import edge_derm
    from edge_derm.training.config import TrainConfig
    from edge_derm.training.trainer import train
    data, out, dump, mode = sys.argv[1:5]
    cfg = TrainConfig(data=[data], backbone="tiny", image_size=24, weights="none", epochs_per_block=1, blocks=1,
                      steps_per_epoch=3, batch_multiple=2, bn_recalibration=12, select_best=True, calibrate=True,
                      val_fraction=0.0, lr_head=1e-2, lr_backbone=1e-2, distribute=mode)
    def on_step_end(k, model):  # every worker reads the weights here (a collective under multiworker)
        np.savez(f"{dump}-step{k}.npz", *model.get_weights())
    res = train(cfg, out, evaluate=False, on_step_end=on_step_end)
    RESULT = {"replicas": res["replicas"], "loss": [r["loss"] for r in res["history"]]}
    print("RESULT " + json.dumps(RESULT))
""")

CLI = [sys.executable, "-c", "from edge_derm.cli import entry; entry()"]


def _env(tf_config: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    env.update(extra)
    return env


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _result(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


def _run_worker_script(data: str, out: Path, dump: Path) -> dict:
    ns: dict = {}
    argv = sys.argv
    try:
        sys.argv = ["worker", data, str(out), str(dump), "none"]
        exec(WORKER, ns)
    finally:
        sys.argv = argv
    return ns["RESULT"]


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_two_workers_agree_with_one_worker_and_only_the_chief_writes(tr_datasets, tmp_path):
    data = str(tr_datasets["val"])
    configs = local_tf_configs(2)
    out = tmp_path / "run folder"
    other_out = tmp_path / "worker 1 out"  # a node without shared storage: it must stay absent
    worker1_tmp = tmp_path / "worker 1 tmp"
    worker1_tmp.mkdir()
    single = tmp_path / "single run"
    procs = []
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", WORKER, data, str(out), str(tmp_path / "w0"), "multiworker"],
                             env=_env(configs[0]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            subprocess.Popen([sys.executable, "-c", WORKER, data, str(other_out), str(tmp_path / "w1"), "multiworker"],
                             env=_env(configs[1], TMPDIR=str(worker1_tmp)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True),
        ]
        # The one-worker run of the same job, in this process while the workers run.
        one = _run_worker_script(data, single, tmp_path / "s")
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        _kill(procs)
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    chief, worker = (_result(o[0]) for o in outputs)
    assert chief["replicas"] == worker["replicas"] == 2 and one["replicas"] == 1
    np.testing.assert_allclose(chief["loss"], one["loss"], rtol=1e-5)
    assert chief["loss"] == worker["loss"]
    for k in (0, 1):
        w0, w1, s = (_weights(tmp_path / f"{n}-step{k}.npz") for n in ("w0", "w1", "s"))
        assert _max_diff(w0, w1) == 0.0  # the same all-reduced update on both workers
        # The one-worker run of the same global batch; step 1 trains BatchNorm (synchronised statistics).
        assert _max_diff(w0, s) < 1e-4, f"step {k}: {_max_diff(w0, s)}"
    # The chief wrote the run folder; the other worker wrote nothing, not even temporary checkpoints.
    assert not other_out.exists()
    assert list(worker1_tmp.iterdir()) == []
    assert {"model.keras", "config.json", "history.csv", "calibration.json"} <= {p.name for p in out.iterdir()}
    assert (out / "checkpoints" / "step_0.keras").is_file() and (out / "checkpoints" / "step_1.keras").is_file()
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["complete"] and state["completed_step"] == 1
    dist = json.loads((out / "config.json").read_text())["distributed"]
    assert dist["workers"] == 2 and dist["global_batch"] == 6 and dist["per_replica_batch"] == 3


@pytest.mark.slow
def test_killed_worker_stops_the_chief_and_the_run_resumes(tr_datasets, tmp_path):
    out = tmp_path / "killed run"
    args = ["--quiet", "train", "--data", str(tr_datasets["plain"]), "--out", str(out), "--backbone", "tiny",
            "--image-size", "24", "--weights", "none", "-e", "1", "--blocks", "1", "--steps-per-epoch", "80",
            "--batch-multiple", "2", "--bn-recalibration", "0", "--val-fraction", "0", "--no-calibrate",
            "--distribute", "multiworker"]
    configs = local_tf_configs(2)
    procs = []
    try:
        procs = [subprocess.Popen(CLI + args, env=_env(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for c in configs]
        step0 = out / "checkpoints" / "step_0.keras"
        deadline = time.monotonic() + 180
        while not step0.is_file() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.1)
        assert step0.is_file(), procs[0].communicate(timeout=30)[1][-3000:]
        procs[1].kill()  # mid-step 1
        killed = time.monotonic()
        _, stderr = procs[0].communicate(timeout=60)
        stopped = time.monotonic() - killed
    finally:
        _kill(procs)
    assert procs[0].returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost contact with another worker" in errors[0] and "--resume" in errors[0], stderr[-2000:]
    assert stopped < 45  # heartbeat timeout (10 s) plus shutdown, not a hang
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["completed_step"] == 0 and not state["complete"] and not (out / "model.keras").exists()

    # Resume with the local launcher (two fresh workers): the run finishes from step 1.
    proc = subprocess.run(CLI + args[:1] + ["train"] + args[2:] + ["--resume", "--workers", "2"],
                          env=_env(None), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["complete"] and [r["step"] for r in state["history"]] == [0, 1]
    assert (out / "model.keras").is_file() and "run: " in proc.stdout


def test_unreachable_worker_is_a_one_line_error_not_a_hang(tr_datasets, tmp_path):
    out = tmp_path / "lonely run"
    config = local_tf_configs(2)[0]  # worker 1 never starts
    start = time.monotonic()
    proc = subprocess.Popen(CLI + ["--quiet", "train", "--data", str(tr_datasets["plain"]), "--out", str(out),
                                   "--backbone", "tiny", "--image-size", "24", "--weights", "none",
                                   "--distribute", "multiworker", "--worker-timeout", "3"],
                            env=_env(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=90)
    finally:
        _kill([proc])
    assert proc.returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    port = json.loads(config)["cluster"]["worker"][1]
    assert len(errors) == 1 and f"worker 1 at {port} did not answer" in errors[0], stderr[-2000:]
    assert time.monotonic() - start < 80
    assert not out.exists()  # the chief's new folder is removed again


@pytest.mark.parametrize("tf_config, expected", [
    ("", "needs TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "\"task\" object"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
    ('{"cluster": {"worker": ["127.0.0.1:5", "127.0.0.1:6"]}, "task": {"type": "worker", "index": 2}}',
     "task.index is 2"),
    ('{"cluster": {"worker": ["a:5", "a:5"]}, "task": {"type": "worker", "index": 0}}', "more than once"),
    ('{"cluster": {"ps": ["a:5"], "worker": ["b:5"]}, "task": {"type": "worker", "index": 0}}', "'ps' job"),
])
def test_malformed_tf_config_is_a_config_error(tf_config, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        cluster_from_env({"TF_CONFIG": tf_config})


def test_malformed_tf_config_in_the_cli_writes_nothing(tr_datasets, tmp_path, monkeypatch, capsys):
    from edge_derm.cli import main

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief"}}')
    out = tmp_path / "never"
    code = main(["--quiet", "train", "--data", str(tr_datasets["plain"]), "--out", str(out), "--backbone", "tiny",
                 "--image-size", "24", "--weights", "none", "--distribute", "multiworker"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "TF_CONFIG task.type is 'chief'" in err
    assert not out.exists()


def test_cluster_roles_and_loopback_configs():
    configs = [json.loads(c) for c in local_tf_configs(3)]
    addrs = configs[0]["cluster"]["worker"]
    assert len(set(addrs)) == 3 and all(a.startswith("127.0.0.1:") for a in addrs)
    roles = [cluster_from_env({"TF_CONFIG": json.dumps(c)}) for c in configs]
    assert [r.is_chief for r in roles] == [True, False, False] and roles[2].num_workers == 3
    with_chief = {"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "worker", "index": 0}}
    assert not cluster_from_env({"TF_CONFIG": json.dumps(with_chief)}).is_chief
    assert check_global_batch(6, 2) == 3
    with pytest.raises(ConfigError, match="--batch-size 8"):
        check_global_batch(6, 4)


def test_workers_option_needs_multiworker(tr_datasets, tmp_path, capsys):
    from edge_derm.cli import main

    code = main(["--quiet", "train", "--data", str(tr_datasets["plain"]), "--out", str(tmp_path / "x"),
                 "--backbone", "tiny", "--workers", "2"])
    assert code == 1 and "--distribute multiworker" in capsys.readouterr().err
