"""Step timing on a scripted clock and in a real fit, device_info."""

import os
import re
import types

from common import timing

import numpy as np
import pytest
import tensorflow as tf


def _scripted_clock(monkeypatch, times):
    """Makes timing.py's `time.perf_counter` return `times` in order (and only there)."""
    ticks = iter(times)
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    return ticks


def test_step_timer_separates_the_first_step_and_takes_the_median(monkeypatch):
    # (begin, end) of 6 steps: the first takes 5 s (tracing); then 0.5, 0.25, 0.75, 0.125, 2.
    times = [0.0, 5.0, 10.0, 10.5, 20.0, 20.25, 30.0, 30.75, 40.0, 40.125, 50.0, 52.0]
    _scripted_clock(monkeypatch, times)
    timer = timing.StepTimer(global_batch_size=64)
    for step in range(6):
        timer.on_train_batch_begin(step)
        timer.on_train_batch_end(step, {"loss": 1.0})
    summary = timer.summary()
    assert summary["first_step_seconds"] == 5.0
    assert summary["steps_timed"] == 5
    assert summary["median_step_seconds"] == 0.5  # of 0.125, 0.25, 0.5, 0.75, 2
    assert summary["examples_per_second"] == 128.0


def test_step_timer_median_of_an_even_count(monkeypatch):
    times = [0.0, 3.0, 10.0, 10.5, 20.0, 20.25, 30.0, 30.75, 40.0, 40.125]
    _scripted_clock(monkeypatch, times)
    timer = timing.StepTimer(global_batch_size=30)
    for step in range(5):
        timer.on_train_batch_begin(step)
        timer.on_train_batch_end(step)
    summary = timer.summary()
    assert summary["median_step_seconds"] == pytest.approx(0.375)  # (0.25 + 0.5) / 2
    assert summary["examples_per_second"] == pytest.approx(80.0)


def test_step_timer_with_only_the_first_step(monkeypatch):
    _scripted_clock(monkeypatch, [1.0, 3.5])
    timer = timing.StepTimer(global_batch_size=8)
    timer.on_train_batch_begin(0)
    timer.on_train_batch_end(0)
    assert timer.summary() == {"steps_timed": 0, "first_step_seconds": 2.5}


def test_step_timer_in_a_real_fit_times_all_steps_but_the_first():
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer="sgd", loss="mse")
    timer = timing.StepTimer(global_batch_size=4)
    # 20 examples / 4 = 5 steps; the validation pass must not add timed steps.
    model.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), callbacks=[timer],
              verbose=0)
    summary = timer.summary()
    assert summary["steps_timed"] == 4
    assert summary["first_step_seconds"] > 0
    assert summary["median_step_seconds"] > 0
    assert summary["examples_per_second"] == pytest.approx(4 / summary["median_step_seconds"])


def test_device_info():
    info = timing.device_info()
    assert set(info) == {"cpu", "cpu_count", "gpus"}
    assert info["cpu_count"] == os.cpu_count()
    assert len(info["gpus"]) == len(tf.config.list_physical_devices("GPU"))
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            names = re.findall(r"^model name\s*:\s*(.+?)\s*$", cpuinfo.read(), re.MULTILINE)
        if names:
            assert info["cpu"] == names[0]
    assert isinstance(info["cpu"], str) and info["cpu"]
