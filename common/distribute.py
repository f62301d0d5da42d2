"""One function from a strategy name to a `tf.distribute` strategy.

Batch sizes in this repository are global: a strategy with N replicas gives each
replica `global_batch_size / N` examples per step.
"""

from __future__ import annotations

import json
import os

import common  # noqa: F401  (Keras 2 before TensorFlow)

import tensorflow as tf

# TensorFlow allows one MirroredStrategy per process in practice (a second one fails with
# "Collective instance ... expected type"), so a repeated request returns the first.
_STRATEGIES: dict[tuple, tf.distribute.Strategy] = {}


class StrategyError(ValueError):
    """The requested strategy cannot be built on this machine."""


def split_cpu(num_devices: int) -> None:
    """Splits the physical CPU into `num_devices` logical devices.

    Must run before TensorFlow initialises its devices. Asking again for the count
    already in place is fine; asking for another count afterwards fails clearly.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == num_devices:
        return
    if num_devices == 1 and current is None:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as error:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == num_devices:
            return
        raise StrategyError(
            f"--num_cpu_devices={num_devices}: TensorFlow already started with {have} CPU "
            "device(s) in this process; logical devices must be set before any op runs."
        ) from error


def get_strategy(name: str, num_cpu_devices: int = 1) -> tf.distribute.Strategy:
    """Returns the strategy called `name`.

    auto: every GPU with MirroredStrategy if there are several, one GPU, else the CPU
      (split into `num_cpu_devices` mirrored replicas when that is > 1).
    cpu / gpu: one device (TensorFlow's default strategy). gpu fails when there is none.
    mirrored: all GPUs, else `num_cpu_devices` logical CPUs; fails rather than silently
      giving one replica when more were asked for.
    multi_worker: MultiWorkerMirroredStrategy from the TF_CONFIG environment variable.
    tpu: TPUStrategy on the TPU the cluster resolver finds.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto" and (len(gpus) > 1 or (not gpus and num_cpu_devices > 1)):
        name = "mirrored"  # the same strategy, so it must be the same object
    key = (name, num_cpu_devices)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _build(name, num_cpu_devices)
    return _STRATEGIES[key]


def _build(name: str, num_cpu_devices: int) -> tf.distribute.Strategy:
    if name == "multi_worker":
        return _multi_worker()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_physical_devices("GPU")
    if num_cpu_devices > 1 and not gpus:
        split_cpu(num_cpu_devices)
    # One device is TensorFlow's default strategy (which places ops on GPU 0 when there
    # is one): BackupAndRestore refuses OneDeviceStrategy.
    if name == "gpu":
        if not gpus:
            raise StrategyError("--strategy=gpu: TensorFlow sees no GPU on this machine.")
        return tf.distribute.get_strategy()
    if name == "cpu":
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        return tf.distribute.get_strategy()
    if name == "auto" and (len(gpus) == 1 or (not gpus and num_cpu_devices == 1)):
        return tf.distribute.get_strategy()
    devices = (
        [f"/gpu:{i}" for i in range(len(gpus))]
        if gpus
        else [f"/cpu:{i}" for i in range(num_cpu_devices)]
    )
    if name == "mirrored" and not gpus and num_cpu_devices == 1:
        raise StrategyError(
            "--strategy=mirrored found no GPU and --num_cpu_devices=1: that would be one "
            "replica. Pass --num_cpu_devices=2 (or more) to mirror over logical CPUs."
        )
    strategy = tf.distribute.MirroredStrategy(devices)
    if strategy.num_replicas_in_sync != len(devices):
        raise StrategyError(
            f"asked for {len(devices)} replicas, got {strategy.num_replicas_in_sync}"
        )
    return strategy


def _multi_worker() -> tf.distribute.Strategy:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(raw)
        cluster = tf.train.ClusterSpec(config["cluster"])
        task_type, task_index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise StrategyError(f"TF_CONFIG is not a valid cluster spec: {error!r}") from error
    if task_type not in cluster.jobs:
        raise StrategyError(f"TF_CONFIG: task type {task_type!r} is not a job of the cluster "
                            f"({', '.join(cluster.jobs)})")
    if not 0 <= task_index < cluster.num_tasks(task_type):
        raise StrategyError(f"TF_CONFIG: task index {task_index} is outside the "
                            f"{cluster.num_tasks(task_type)} {task_type} task(s)")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, TypeError) as error:
        raise StrategyError(f"TF_CONFIG: {error}") from error


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes shared outputs (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker"
        and task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )
