"""Step timing that leaves out tracing and evaluation, device facts, and a benchmark helper."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


class StepTimer(tf.keras.callbacks.Callback):
    """Times every training step of `fit`.

    The first step is reported apart (`first_step_seconds`): it includes tracing and
    compilation. Evaluation runs between epochs and is never inside a timed step.
    Keras hands callbacks NumPy logs (this callback does not take TF logs), so each step
    end waits for the step to finish and the times are real, not dispatch times.
    """

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.step_seconds: list[float] = []
        self.first_step_seconds: float | None = None
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        elapsed = time.perf_counter() - self._start
        if self.first_step_seconds is None:
            self.first_step_seconds = elapsed
        else:
            self.step_seconds.append(elapsed)

    def summary(self) -> dict:
        """Median step time, examples per second and the first (compiling) step."""
        if not self.step_seconds:
            return {"steps_timed": 0, "first_step_seconds": self.first_step_seconds}
        median = statistics.median(self.step_seconds)
        return {
            "steps_timed": len(self.step_seconds),
            "median_step_seconds": median,
            "examples_per_second": self.global_batch_size / median,
            "first_step_seconds": self.first_step_seconds,
        }


def device_info() -> dict:
    """The CPU model and core count, and the GPUs TensorFlow sees."""
    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass


    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    return {"cpu": cpu_model, "cpu_count": os.cpu_count(), "gpus": gpus}


def time_function(fn: Callable[[], object], repeats: int = 20, warmup: int = 2) -> float:
    """Median seconds of `fn()` after `warmup` calls; results are pulled to the host."""
    for _ in range(warmup):
        _sync(fn())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        _sync(fn())
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def time_on_devices(
    make_fn: Callable[[], Callable[[], object]], repeats: int = 20
) -> dict[str, float]:
    """Median seconds of the function `make_fn()` builds, on the CPU and on GPU 0 if any.

    `make_fn` is called inside each device scope so that its variables and constants
    live on that device.
    """
    devices = {"cpu": "/cpu:0"}
    if tf.config.list_physical_devices("GPU"):
        devices["gpu"] = "/gpu:0"
    result = {}
    for name, device in devices.items():
        with tf.device(device):
            result[name] = time_function(make_fn(), repeats=repeats)
    return result


def _sync(value) -> None:
    for tensor in tf.nest.flatten(value):
        if isinstance(tensor, (tf.Tensor, tf.Variable)):
            tensor.numpy()
