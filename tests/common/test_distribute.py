"""Strategy from a name: replica counts, failing fast, the chief.

This process has 2 logical CPUs (tests/conftest.py) and its one MirroredStrategy.
What needs a process of its own (multi_worker from TF_CONFIG, which must come before
any other op) runs in `_FRESH`, started at collection.
"""

import json
import types

from common import distribute
from common.distribute import StrategyError

import pytest
import tensorflow as tf

from tests.common import FreshProcess

# name → TF_CONFIG (None: unset). The first ones fail in common's own checks; the last
# ones are well-formed JSON that only TensorFlow's cluster resolver rejects.
_TF_CONFIGS = {
    "missing": None,
    "empty": "",
    "not_json": "{cluster: [",
    "json_list": "[]",
    "no_cluster": '{"task": {"type": "worker", "index": 0}}',
    "no_task": '{"cluster": {"worker": ["localhost:23456"]}}',
    "no_workers": '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
    "workers_not_a_list":
        '{"cluster": {"worker": "localhost:23456"}, "task": {"type": "worker", "index": 0}}',
    "index_out_of_range":
        '{"cluster": {"worker": ["localhost:23456"]}, "task": {"type": "worker", "index": 3}}',
    "task_type_not_in_cluster":
        '{"cluster": {"worker": ["localhost:23456"]}, "task": {"type": "chief", "index": 0}}',
}

_FRESH = FreshProcess(
    f"""
import json, os
import common
from common import distribute
outcome = {{}}
for case, tf_config in {_TF_CONFIGS!r}.items():
    os.environ.pop("TF_CONFIG", None)
    if tf_config is not None:
        os.environ["TF_CONFIG"] = tf_config
    try:
        strategy = distribute.get_strategy("multi_worker")
    except Exception as error:
        outcome[case] = [type(error).__name__, str(error)]
    else:
        outcome[case] = ["built", strategy.num_replicas_in_sync]
os.environ.pop("TF_CONFIG", None)
# On a GPU-less machine `auto` with 2 CPU devices is a MirroredStrategy over the same
# 2 devices as `mirrored`; one process gets one MirroredStrategy.
try:
    mirrored = distribute.get_strategy("mirrored", 2)
    auto = distribute.get_strategy("auto", 2)
    outcome["auto_is_mirrored"] = [auto is mirrored, auto.num_replicas_in_sync]
except Exception as error:
    outcome["auto_is_mirrored"] = [type(error).__name__, str(error)]
print(json.dumps(outcome))
""",
    unset=("TF_CONFIG",),
)


def _fresh_outcome() -> dict:
    completed = _FRESH.result()
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_mirrored_with_two_cpu_devices_has_two_replicas(mirrored_strategy):
    strategy = distribute.get_strategy("mirrored", 2)
    assert strategy is mirrored_strategy
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    # Really two replicas: each contributes 1 to a cross-replica sum.
    ones = strategy.run(lambda: tf.constant(1.0))
    assert float(strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)) == 2.0
    devices = sorted(device.split("/")[-1].upper() for device in strategy.extended.worker_devices)
    assert devices == ["DEVICE:CPU:0", "DEVICE:CPU:1"]


@pytest.mark.parametrize("name, num_cpu_devices", [("cpu", 1), ("auto", 1)])
def test_one_device_strategies_have_one_replica(name, num_cpu_devices):
    strategy = distribute.get_strategy(name, num_cpu_devices)
    assert strategy.num_replicas_in_sync == 1
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)


def test_gpu_without_gpu_raises():
    assert not tf.config.list_physical_devices("GPU"), "this test expects a GPU-less machine"
    with pytest.raises(StrategyError, match="GPU"):
        distribute.get_strategy("gpu")


def test_mirrored_with_one_cpu_device_raises_instead_of_one_replica():
    with pytest.raises(StrategyError, match="num_cpu_devices"):
        distribute.get_strategy("mirrored", 1)


@pytest.mark.parametrize("name", ["mirrored", "auto"])
def test_other_cpu_device_count_after_start_raises(name):
    # TensorFlow started with 2 logical CPUs; 3 cannot be had in this process.
    with pytest.raises(StrategyError, match="num_cpu_devices=3"):
        distribute.get_strategy(name, 3)


@pytest.mark.parametrize("count", [1, 3])
def test_split_cpu_with_another_count_after_start_raises(count):
    with pytest.raises(StrategyError, match=f"num_cpu_devices={count}"):
        distribute.split_cpu(count)
    assert len(tf.config.list_logical_devices("CPU")) == 2


def test_split_cpu_with_the_current_count_is_fine():
    distribute.split_cpu(2)
    assert len(tf.config.list_logical_devices("CPU")) == 2


def test_strategy_error_is_a_value_error():
    # common.cli turns ValueError into one error line and exit status 2.
    assert issubclass(StrategyError, ValueError)


def test_is_chief_off_cluster(mirrored_strategy):
    assert distribute.is_chief(distribute.get_strategy("cpu"))
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.is_chief(mirrored_strategy)


def _on_cluster(cluster: dict, task_type: str, task_id: int):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


@pytest.mark.parametrize(
    "cluster, task_type, task_id, expected",
    [
        ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
        ({"worker": ["a:1"], "evaluator": ["e:1"]}, "evaluator", 0, False),
    ],
)
def test_is_chief_on_cluster(cluster, task_type, task_id, expected):
    assert distribute.is_chief(_on_cluster(cluster, task_type, task_id)) is expected




@pytest.mark.parametrize(
    "case", list(_TF_CONFIGS)
)
def test_multi_worker_with_bad_tf_config_raises_naming_tf_config(case):
    kind, message = _fresh_outcome()[case]
    assert kind == "StrategyError", (kind, message)
    assert "TF_CONFIG" in message


def test_auto_and_mirrored_over_the_same_devices_share_one_strategy():
    is_same, replicas = _fresh_outcome()["auto_is_mirrored"]
    assert replicas == 2
    assert is_same is True
