"""Multi-worker training: TF_CONFIG, MultiWorkerMirroredStrategy with bounded waits, sharded batches.

Everything here uses TensorFlow's own machinery (``TF_CONFIG``, ``MultiWorkerMirroredStrategy`` over
gRPC, its coordination service); the only additions are checks that turn TensorFlow's silent waits
into one-line errors:

- ``TF_CONFIG`` is parsed and checked before TensorFlow starts (:func:`cluster_from_env`), so a
  malformed one is a :class:`~edge_derm.errors.ConfigError`, and the chief is known before any file
  is written.
- Joining the cluster blocks inside TensorFlow's C++ code (holding the GIL, so no Python thread can
  run meanwhile) until every task has registered with the coordination service. The service is
  configured with a registration barrier of ``join_timeout`` seconds
  (``cluster_register_timeout_in_ms`` with ``cluster_register_with_barrier``), so TensorFlow itself
  ends the wait with an error; :func:`make_multiworker_strategy` turns it into one
  :class:`ClusterJoinError` naming the workers that did not register (or whose port does not answer).
- TensorFlow's coordination agent installs its own SIGTERM handler (a preemption notifier) while the
  cluster forms; the handler in place before is restored afterwards, so SIGTERM still stops a worker
  the way it stops any other command.
- Once joined, a worker that dies stops sending heartbeats to the coordination service; after
  ``heartbeat_timeout`` seconds every collective on the other workers fails, and a collective that
  waits longer than ``collective_timeout`` fails too (``CommunicationOptions(timeout_seconds=...)``).
  The trainer turns either into :class:`WorkerLostError`.

Batches: every worker runs the same seeded, class-balanced input pipeline and keeps its own slice of
each global batch (:func:`shard_batches`), so the global batch is what the configuration says, each
worker sees different images, and the all-reduced gradient is the one-worker gradient of that batch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from edge_derm.errors import ConfigError, ModelError

_log = logging.getLogger(__name__)

#: Seconds a worker waits for every other worker to start (``--worker-timeout``).
JOIN_TIMEOUT = 300.0
#: Seconds without a heartbeat after which the coordination service declares a worker dead.
HEARTBEAT_TIMEOUT = 10.0
#: Seconds one collective (an all-reduce of gradients) may wait for the other workers.
COLLECTIVE_TIMEOUT = 600.0
#: Seconds a finished worker waits at exit for the others (the chief evaluates alone, after the others).
SHUTDOWN_TIMEOUT = 3600.0

_TF_CONFIG_HELP = ('e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                   '"task": {"type": "worker", "index": 0}}')


class WorkerLostError(ModelError):
    """A worker stopped answering during training; the completed steps are kept."""


class ClusterJoinError(ConfigError):
    """The cluster did not form: a worker never registered within ``--worker-timeout`` (nothing was written)."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster that ``TF_CONFIG`` describes."""

    #: ``{"chief": [...], "worker": [...]}``: ``host:port`` of every task (chief optional).
    jobs: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        """The task that writes the run folder: ``chief`` 0, else ``worker`` 0 (TensorFlow's rule)."""
        if "chief" in self.jobs:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def num_workers(self) -> int:
        return sum(len(v) for k, v in self.jobs.items() if k in ("chief", "worker"))

    @property
    def address(self) -> str:
        return self.jobs[self.task_type][self.task_index]

    def peers(self) -> list[tuple[str, str]]:
        """``(name, host:port)`` of every other task that trains."""
        return [(f"{job} {i}", addr) for job in ("chief", "worker") for i, addr in enumerate(self.jobs.get(job, []))
                if (job, i) != (self.task_type, self.task_index)]

    def describe(self) -> str:
        return f"{self.task_type} {self.task_index} of {self.num_workers} ({self.address})"


def cluster_from_env(env: dict[str, str] | None = None) -> Cluster:
    """Parse and check ``TF_CONFIG`` (no TensorFlow import).

    Raises:
        ConfigError: ``TF_CONFIG`` missing, not JSON, or not a cluster with this task in it.
    """
    env = os.environ if env is None else env
    raw = env.get("TF_CONFIG")
    if not raw or not raw.strip():
        raise ConfigError("--distribute multiworker needs TF_CONFIG (the cluster and this worker's place in it), "
                          f"{_TF_CONFIG_HELP}; on one machine use --workers N")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}); {_TF_CONFIG_HELP}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cluster"), dict) or not isinstance(doc.get("task"), dict):
        raise ConfigError(f"TF_CONFIG needs a \"cluster\" object and a \"task\" object; {_TF_CONFIG_HELP}")
    jobs: dict[str, list[str]] = {}
    for job, addrs in doc["cluster"].items():
        if job not in ("chief", "worker", "evaluator", "ps"):
            raise ConfigError(f"TF_CONFIG cluster has an unknown job {job!r}; use chief and worker")
        if job in ("ps", "evaluator"):
            raise ConfigError(f"TF_CONFIG cluster has a {job!r} job; MultiWorkerMirroredStrategy uses only "
                              "chief and worker")
        if not isinstance(addrs, list) or not addrs or not all(isinstance(a, str) for a in addrs):
            raise ConfigError(f"TF_CONFIG cluster.{job} must be a non-empty list of \"host:port\" strings, "
                              f"got {addrs!r}")
        for addr in addrs:
            host, sep, port = addr.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"TF_CONFIG cluster.{job} has {addr!r}; each address is host:port, "
                                  "e.g. 10.0.0.2:2222")
        jobs[job] = list(addrs)
    if "worker" not in jobs and "chief" not in jobs:
        raise ConfigError(f"TF_CONFIG cluster has no worker; {_TF_CONFIG_HELP}")
    if len(jobs.get("chief", [])) > 1:
        raise ConfigError("TF_CONFIG cluster.chief must list exactly one address")
    every = [a for addrs in jobs.values() for a in addrs]
    dupes = sorted({a for a in every if every.count(a) > 1})
    if dupes:
        raise ConfigError(f"TF_CONFIG lists {', '.join(dupes)} more than once; give every worker its own host:port")
    task = doc["task"]
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in jobs:
        raise ConfigError(f"TF_CONFIG task.type is {task_type!r}, not one of the cluster's jobs "
                          f"({', '.join(jobs)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(jobs[task_type]):
        raise ConfigError(f"TF_CONFIG task.index is {index!r}; the cluster has {len(jobs[task_type])} "
                          f"{task_type} task(s), indexed from 0")
    return Cluster(jobs, task_type, index)


def _reachable(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _timed_out_tasks(text: str) -> list[tuple[str, int]]:
    """``(job, index)`` of the tasks a coordination-service barrier error names as timed out."""
    _, sep, tail = text.partition("timed out task names:")
    return sorted({(job, int(i)) for job, i in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", tail)}) if sep else []


def _join_error(cluster: Cluster, exc: BaseException, join_timeout: float) -> ClusterJoinError:
    named = [(job, i) for job, i in _timed_out_tasks(str(exc)) if (job, i) != (cluster.task_type, cluster.task_index)
             and i < len(cluster.jobs.get(job, []))]
    if named:
        who = f"{', '.join(f'{job} {i} at {cluster.jobs[job][i]}' for job, i in named)} did not answer"
    else:
        silent = [f"{name} at {addr}" for name, addr in cluster.peers() if not _reachable(addr)]
        who = (f"{', '.join(silent)} did not answer" if silent
               else f"the other workers answered but the cluster did not form ({first_line(exc, 120)}); check that "
                    "every worker has the same TF_CONFIG cluster and a different task")
    return ClusterJoinError(f"{cluster.describe()}: the cluster did not form within {join_timeout:g} s: {who}; start "
                            "every worker listed in TF_CONFIG (or raise --worker-timeout), and check addresses and "
                            "firewalls")


def make_multiworker_strategy(cluster: Cluster, *, join_timeout: float = JOIN_TIMEOUT,
                              heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
                              collective_timeout: float = COLLECTIVE_TIMEOUT,
                              shutdown_timeout: float = SHUTDOWN_TIMEOUT):
    """A MultiWorkerMirroredStrategy for ``cluster`` (from ``TF_CONFIG``); call before any other TF op.

    Raises:
        ClusterJoinError: the other workers had not all registered within ``join_timeout`` seconds
            (TensorFlow's registration barrier ends the wait); the message names those that did not.
    """
    import tensorflow as tf
    from tensorflow.python.eager import context

    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2 as coordination
    except ImportError:  # pragma: no cover - older/newer layouts: keep TensorFlow's own defaults
        coordination = None
    ctx = context.context()
    if coordination is not None and ctx.coordination_service is None:
        # What MultiWorkerMirroredStrategy configures itself, plus a bounded join, heartbeat and exit wait.
        leader = ("/job:chief/replica:0/task:0" if "chief" in cluster.jobs else "/job:worker/replica:0/task:0")
        ctx.configure_coordination_service(
            service_type="standalone", service_leader=leader,
            cluster_register_timeout_in_ms=max(1, int(join_timeout * 1000)),
            heartbeat_timeout_in_ms=int(heartbeat_timeout * 1000),
            shutdown_barrier_timeout_in_ms=int(shutdown_timeout * 1000),
            coordinated_jobs=[coordination.CoordinatedJob(name=job, num_tasks=len(cluster.jobs[job]))
                              for job in ("chief", "worker") if job in cluster.jobs])
        config = ctx.coordination_service
        if "cluster_register_with_barrier" in {f.name for f in config.DESCRIPTOR.fields}:
            # Without the barrier only a worker that cannot reach the leader times out; the leader itself
            # waits for the missing workers without bound (in C++ code that holds the GIL).
            config.cluster_register_with_barrier = True
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    _log.info("joining the cluster as %s (waiting up to %g s for %d peer(s))", cluster.describe(), join_timeout,
              len(cluster.peers()))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    except tf.errors.OpError as exc:
        raise _join_error(cluster, exc, join_timeout) from None
    finally:
        if sigterm is not None:
            # TensorFlow's preemption notifier replaced the SIGTERM handler (C-level); put back the one before.
            signal.signal(signal.SIGTERM, sigterm)
    _log.info("joined: %d replica(s) in sync", strategy.num_replicas_in_sync)
    return strategy


#: Phrases of TensorFlow errors that mean a peer is gone: the coordination service's heartbeat and
#: health reports, an aborted collective, an unreachable gRPC peer.
_LOST_PHRASES = ("stopped sending heartbeats", "heartbeat timeout", "collective ops is aborted", "unhealthy",
                 "socket closed", "connection reset by peer", "failed to connect", "connection refused")


def is_connection_error(exc: BaseException) -> bool:
    """A TensorFlow error that means another worker is gone (dead, unreachable or too slow).

    Counted: an unavailable peer or a collective past its deadline (``UnavailableError``,
    ``DeadlineExceededError``), and any other TensorFlow error whose message says that a heartbeat
    stopped, a task became unhealthy, a collective was aborted or a connection failed. Not counted: a
    plain cancellation (an input pipeline stopped) or an error that merely mentions the coordination
    service.
    """
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    if not isinstance(exc, tf.errors.OpError):
        return False
    text = str(exc)
    if isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)):
        return True
    return any(s in text.lower() for s in _LOST_PHRASES)


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first meaningful line of a TensorFlow error (its messages run to dozens of lines)."""
    text = str(exc)
    for marker in ("Collective ops is aborted by: ", "Error reported from "):
        if marker in text:
            text = text[text.index(marker) + len(marker):]
            break
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("Detected at", "  File"))]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


# -- batches -------------------------------------------------------------------------------------

def check_global_batch(batch: int, replicas: int) -> int:
    """The per-replica batch; ConfigError when the global batch does not split evenly."""
    if batch % replicas:
        up = -(-batch // replicas) * replicas
        raise ConfigError(f"the global batch of {batch} images does not split evenly over {replicas} replicas; "
                          f"pass --batch-size {up} (or a --batch-multiple that makes a multiple of {replicas})")
    return batch // replicas


def shard_batches(ds, *, batch: int, replicas: int, worker: int, workers: int):
    """This worker's share of a dataset of global batches: per replica, a ``batch / replicas`` slice.

    Replica ``r`` of worker ``w`` (global replica ``w * local + r``, as MultiWorkerMirroredStrategy
    numbers them) gets images ``[(w * local + r) * b, (w * local + r + 1) * b)`` of every global
    batch, so the union over replicas is exactly the one-worker batch. The elements come out in
    replica order, as ``distribute_datasets_from_function`` hands them to the local replicas.
    """
    import tensorflow as tf

    per_replica = check_global_batch(batch, replicas)
    local = replicas // workers
    lo = worker * local * per_replica

    def take(x, y):
        x, y = x[lo: lo + local * per_replica], y[lo: lo + local * per_replica]
        if local == 1:
            return tf.data.Dataset.from_tensors((x, y))
        return tf.data.Dataset.from_tensor_slices((tf.reshape(x, [local, per_replica, *x.shape[1:]]),
                                                   tf.reshape(y, [local, per_replica, *y.shape[1:]])))

    out = ds.flat_map(take)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return out.with_options(options)


def distribute_sharded(strategy, make_ds: Callable[[], Any], batch: int):
    """``strategy.distribute_datasets_from_function`` over :func:`shard_batches` of ``make_ds()``."""
    import tensorflow as tf

    replicas = int(strategy.num_replicas_in_sync)
    check_global_batch(batch, replicas)

    def fn(ctx: tf.distribute.InputContext):
        return shard_batches(make_ds(), batch=batch, replicas=replicas, worker=ctx.input_pipeline_id,
                             workers=ctx.num_input_pipelines)

    return strategy.distribute_datasets_from_function(fn)


# -- BatchNorm ---------------------------------------------------------------------------------

def sync_batchnorm(model, on: bool) -> list:
    """Make the trainable BatchNormalization layers use the statistics of the global batch (``on``)
    or of their own replica's slice (``off``, Keras' default), as SyncBatchNormalization does.

    Frozen BatchNorm layers run in inference mode and are not touched. Returns the layers changed.
    """
    from edge_derm.models._tf import keras

    changed = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            if on:
                layer._edge_derm_fused = layer.fused
                layer.fused = False  # the fused kernel computes its own per-replica moments
                layer.synchronized = True
            else:
                layer.synchronized = False
                layer.fused = getattr(layer, "_edge_derm_fused", layer.fused)
            changed.append(layer)
    return changed


def local_copy(model):
    """A plain (non-distributed) clone of ``model`` with the same architecture and trainable flags.

    Under MultiWorkerMirroredStrategy, reading a variable in cross-replica context (predict, save,
    BatchNorm moving averages) is a collective: every worker must do it at the same time. Workers
    copy the weights into their local clone together (:func:`sync_into`), then each uses its clone
    alone: validation, BatchNorm re-estimation, and (the chief) checkpoints and evaluation.
    """
    from edge_derm.models._tf import keras

    clone = keras.models.clone_model(model)
    for src, dst in zip(model.layers, clone.layers):
        dst.trainable = src.trainable
    return clone


def sync_into(clone, model) -> None:
    """Copy ``model``'s weights into its local clone (a collective: every worker at the same point)."""
    start = time.perf_counter()
    clone.set_weights(model.get_weights())
    _log.debug("weights synchronised into the local copy in %.2f s", time.perf_counter() - start)
