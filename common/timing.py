"""Step timing that leaves out tracing and evaluation, and the device facts of a record."""

from __future__ import annotations

import os
import platform
import statistics
import time

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
