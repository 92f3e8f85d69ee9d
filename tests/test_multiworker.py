"""Multi-worker training with real worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy over gRPC).

Every worker is a subprocess (a TensorFlow runtime joins one cluster per process) in its own session.
The workers dial each other at 127.0.0.1, so their traffic stays on the loopback interface, but each
worker's gRPC server listens on all interfaces (TensorFlow binds ``0.0.0.0:port``; it has no bind-address
option) for the few seconds a test runs. Every process group a test starts is killed in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
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


def _popen(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    """A process in its own session, so :func:`_kill` can stop it and everything it started."""
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()


def _result(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


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
            _popen([sys.executable, "-c", WORKER, data, str(out), str(tmp_path / "w0"), "multiworker"],
                   _env(configs[0])),
            _popen([sys.executable, "-c", WORKER, data, str(other_out), str(tmp_path / "w1"), "multiworker"],
                   _env(configs[1], TMPDIR=str(worker1_tmp))),
            # The one-worker run of the same job, in its own process (its seeds and op determinism stay there).
            _popen([sys.executable, "-c", WORKER, data, str(single), str(tmp_path / "s"), "none"], _env(None)),
        ]
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        _kill(procs)
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    chief, worker, one = (_result(o[0]) for o in outputs)
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

def _two_step_args(data, out, *, steps_per_epoch: int) -> list[str]:
    """`train` arguments for a head step and one block of the tiny backbone under multiworker."""
    return ["--quiet", "train", "--data", str(data), "--out", str(out), "--backbone", "tiny", "--image-size", "24",
            "--weights", "none", "-e", "1", "--blocks", "1", "--steps-per-epoch", str(steps_per_epoch),
            "--batch-multiple", "2", "--bn-recalibration", "0", "--val-fraction", "0", "--no-calibrate",
            "--distribute", "multiworker"]


@contextlib.contextmanager
def _two_workers_past_step0(args: list[str], out: Path, seconds: float):
    """Two loopback workers running `args`, yielded once the chief has written step 0's checkpoint (if it exited or
    the time ran out first: fail with its stderr); every process is killed on the way out."""
    procs: list[subprocess.Popen] = []
    try:
        procs = [_popen(CLI + args, _env(c)) for c in local_tf_configs(2)]
        step0 = out / "checkpoints" / "step_0.keras"
        deadline = time.monotonic() + seconds
        while not step0.is_file() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.1)
        assert step0.is_file(), procs[0].communicate(timeout=30)[1][-3000:]
        yield procs
    finally:
        _kill(procs)


@pytest.mark.slow
def test_killed_worker_stops_the_chief_and_the_run_resumes(tr_datasets, tmp_path):
    out = tmp_path / "killed run"
    args = _two_step_args(tr_datasets["plain"], out, steps_per_epoch=80)
    with _two_workers_past_step0(args, out, 180) as procs:
        procs[1].kill()  # mid-step 1
        killed = time.monotonic()
        _, stderr = procs[0].communicate(timeout=60)
        stopped = time.monotonic() - killed
    assert procs[0].returncode == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost contact with another worker" in errors[0] and "--resume" in errors[0], stderr[-2000:]
    assert stopped < 45  # heartbeat timeout (10 s) plus shutdown, not a hang
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["completed_step"] == 0 and not state["complete"] and not (out / "model.keras").exists()

    # Resume with the local launcher (two fresh workers): the run finishes from step 1.
    proc = _popen(CLI + args[:1] + ["train"] + args[2:] + ["--resume", "--workers", "2"], _env(None))
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        _kill([proc])
    assert proc.returncode == 0, stderr[-3000:]
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["complete"] and [r["step"] for r in state["history"]] == [0, 1]
    assert (out / "model.keras").is_file() and "run: " in stdout


def test_unreachable_worker_is_a_one_line_error_not_a_hang(tr_datasets, tmp_path):
    out = tmp_path / "lonely run"
    config = local_tf_configs(2)[0]  # worker 1 never starts
    start = time.monotonic()
    proc = _popen(CLI + ["--quiet", "train", "--data", str(tr_datasets["plain"]), "--out", str(out),
                         "--backbone", "tiny", "--image-size", "24", "--weights", "none",
                         "--distribute", "multiworker", "--worker-timeout", "3"], _env(config))
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        _kill([proc])
    assert proc.returncode == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    port = json.loads(config)["cluster"]["worker"][1]
    assert len(errors) == 1 and f"worker 1 at {port} did not answer" in errors[0], stderr[-2000:]
    assert stderr.count("did not answer") == 1  # reported once (no logged ERROR besides the error line)
    assert time.monotonic() - start < 45
    assert not out.exists()  # the folder is created only once the cluster has formed


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


def test_chief_stopped_mid_run_stops_the_other_worker_and_keeps_a_consistent_folder(tr_datasets, tmp_path):
    """SIGTERM to the chief mid-step 1 (TensorFlow's SIGTERM handler must not swallow it): the chief cleans up
    (exit 130), the other worker notices within the heartbeat time-out with one error line, and the run
    folder holds step 0, ready for --resume."""
    out = tmp_path / "chief stopped"
    args = _two_step_args(tr_datasets["plain"], out, steps_per_epoch=200)
    with _two_workers_past_step0(args, out, 120) as procs:
        time.sleep(1.0)
        procs[0].send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, chief_err = procs[0].communicate(timeout=30)
        chief_s = time.monotonic() - stopped
        _, worker_err = procs[1].communicate(timeout=45)
        worker_s = time.monotonic() - stopped
    assert procs[0].returncode == 130 and chief_s < 20, chief_err[-2000:]
    chief_errors = [line for line in chief_err.splitlines() if line.startswith("error:")]
    assert len(chief_errors) == 1 and "interrupted" in chief_errors[0] and "--resume" in chief_errors[0], chief_err
    assert procs[1].returncode == 1, worker_err[-2000:]
    errors = [line for line in worker_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost contact with another worker" in errors[0], worker_err[-2000:]
    assert worker_s < 40  # heartbeat time-out (10 s) plus shutdown, not a hang
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["completed_step"] == 0 and not state["complete"] and not (out / "model.keras").exists()
    assert json.loads((out / "config.json").read_text())["config_hash"]


# -- the local launcher, with stand-in workers (no TensorFlow) -----------------------------------------

FAKE = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    i = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    role = json.loads(os.environ["FAKE_ROLES"])[i]
    mark = os.environ["FAKE_DIR"] + f"/w{i}"
    if role == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if role == "fail":
        time.sleep(0.5)
        sys.stderr.write(f"error: worker {i} broke\\n")
        sys.exit(1)
    if role == "child":  # leaves a grandchild in its process group
        c = subprocess.Popen(["sleep", "300"])
        open(mark + ".child", "w").write(str(c.pid))
    if role == "cleanup":  # counts SIGINTs and takes 1 s to clean up
        got = []
        def on_int(*_):
            got.append(1)
            open(mark + ".sigint", "a").write("x")
        signal.signal(signal.SIGINT, on_int)
        open(mark + ".ready", "w").write("")
        while not got:
            time.sleep(0.05)
        time.sleep(1.0)
        open(mark + ".clean", "w").write("")
        sys.exit(0)
    time.sleep(300)
""")


def _fake_run(tmp_path, roles, **kw):
    from edge_derm.training.launch import run_local_workers

    old = {k: os.environ.get(k) for k in ("FAKE_ROLES", "FAKE_DIR", "TF_CONFIG")}
    os.environ.update(FAKE_ROLES=json.dumps(roles), FAKE_DIR=str(tmp_path))
    start = time.monotonic()
    try:
        return run_local_workers([sys.executable, "-c", FAKE], len(roles), **kw), time.monotonic() - start
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_launcher_names_a_chief_killed_by_a_signal_and_stops_the_others_at_once(tmp_path):
    run, took = _fake_run(tmp_path, ["sigkill", "sleep"], grace=30, stop_wait=2)
    assert run.code == 1 and run.codes[0] == -signal.SIGKILL
    assert run.message.startswith("worker 0 (the chief) was killed by SIGKILL"), run.message
    assert took < 10  # not the 30 s grace


def test_launcher_reports_the_first_failing_worker_and_kills_its_process_group(tmp_path):
    run, took = _fake_run(tmp_path, ["child", "fail"], grace=1, stop_wait=2)
    # worker 1 failed first; the chief (which here never notices) was stopped after the grace period
    assert run.code == 1 and "worker 1 failed (exit 1): worker 1 broke" in run.message, run.message
    grandchild = int((tmp_path / "w0.child").read_text())
    time.sleep(0.2)
    assert not _alive(grandchild)  # the chief's whole process group is gone (no orphan)


def _alive(pid: int) -> bool:
    """Running (a zombie that no init reaps in a container counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_launcher_chief_error_line_is_its_own(tmp_path):
    run, took = _fake_run(tmp_path, ["fail", "sleep"], grace=30, stop_wait=2)
    assert run.code == 1 and run.message is None and run.first_failure is None  # the chief printed its line
    assert took < 10


def test_launcher_ctrl_c_lets_the_workers_clean_up(tmp_path):
    script = textwrap.dedent(f"""
        import json, os, sys
        os.environ.update(FAKE_ROLES=json.dumps(["cleanup", "cleanup"]), FAKE_DIR={str(tmp_path)!r})
        from edge_derm.training.launch import run_local_workers
        try:
            run_local_workers([sys.executable, "-c", {FAKE!r}], 2, grace=20, stop_wait=2)
        except KeyboardInterrupt:
            print("INTERRUPTED")
    """)
    proc = _popen([sys.executable, "-c", script], _env(None))
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"w{i}.ready").exists() for i in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # the launcher alone, as a terminal's Ctrl-C reaches only its session
        stdout, _ = proc.communicate(timeout=30)
    finally:
        _kill([proc])
    assert "INTERRUPTED" in stdout
    for i in (0, 1):  # one SIGINT each, and time to finish their cleanup
        assert (tmp_path / f"w{i}.sigint").read_text() == "x" and (tmp_path / f"w{i}.clean").exists()


def test_plan_with_multiworker_is_refused(tmp_path, capsys):
    from edge_derm.cli import main

    for extra in ([], ["--workers", "2"]):
        code = main(["--quiet", "train", "--plan", "o", "--out", str(tmp_path / "p"), "--distribute", "multiworker",
                     *extra])
        err = capsys.readouterr().err
        assert code == 1 and err.count("error:") == 1 and "--plan cannot run with --distribute multiworker" in err
        assert not (tmp_path / "p").exists()


def test_connection_errors_are_only_lost_peers():
    import tensorflow as tf

    from edge_derm.training.distributed import _timed_out_tasks, is_connection_error

    assert is_connection_error(tf.errors.UnavailableError(None, None, "Socket closed"))
    assert is_connection_error(tf.errors.CancelledError(
        None, None, "Collective ops is aborted by: Task /job:worker/task:1 stopped sending heartbeats"))
    assert not is_connection_error(tf.errors.CancelledError(None, None, "Iterator was cancelled"))
    assert not is_connection_error(tf.errors.InvalidArgumentError(None, None, "CoordinationService: bad key"))
    assert not is_connection_error(tf.errors.AbortedError(None, None, "checkpoint write aborted"))
    assert not is_connection_error(ValueError("unhealthy"))
    msg = ("Barrier timed out. Id: [Init]Wait_for_all_tasks_to_register::0. The first task at the barrier: "
           "/job:worker/replica:0/task:0. Some timed out task names:\n/job:worker/replica:0/task:1\n")
    assert _timed_out_tasks(msg) == [("worker", 1)]


def test_benchmark_report_claims_follow_the_measurements():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scripts" / "measure_multiworker.py"
    spec = importlib.util.spec_from_file_location("measure_multiworker_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    proc = {"train_loop_s": 1.0, "loss": [1.0, 0.5]}
    doc = {"command": "x", "job": "recorded job", "machine": {"cpu": "cpu", "cores_available": 4, "flags": [],
                                                               "load_average_1_5_15": [0.1, 0.1, 0.1]},
           "runs": [{"workers": 1, "wall_s": 20.0, "processes": [proc]},
                    {"workers": 2, "wall_s": 10.0, "processes": [proc], "non_chief_out_written": False}],
           "weight_diff": [{"step": 0, "trains": "head", "workers_0_vs_1": 2e-7, "two_vs_one": 1e-6},
                           {"step": 1, "trains": "b3", "workers_0_vs_1": 0.0, "two_vs_one": 1e-6}]}
    text = bench.markdown(doc)
    assert "bit-identical" not in text and "up to 2.0e-07" in text
    assert "No speed-up" not in text and "2.00x faster" in text and "Job: recorded job." in text
    assert "26" not in text and "13" not in text
    doc["weight_diff"][0]["workers_0_vs_1"] = 0.0
    doc["runs"][1]["wall_s"] = 30.0
    doc["job_facts"] = {"classes": 5, "images_per_class": 3, "image_px": 48, "input_px": 32, "steps_per_epoch": 4,
                        "global_batch": 10, "per_worker_batch": 5, "workers": 2}
    text = bench.markdown(doc)
    assert "bit-identical" in text and "No speed-up" in text and "1.5x" in text
    assert "5 classes x 3 images" in text and "global batch 10 (5 per worker with 2 workers)" in text
