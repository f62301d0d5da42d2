"""The callbacks every run adds to `model.fit`: the per-epoch log and the injected fault."""

from __future__ import annotations

import json
import time
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from common import results


class EpochLog(tf.keras.callbacks.Callback):
    """Appends each epoch's metrics as one JSON line and prints a progress line."""

    def __init__(self, recipe: str, path: Path, epochs: int, name: str):
        super().__init__()
        self.recipe, self.path, self.epochs, self.name = recipe, path, epochs, name
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        seconds = time.perf_counter() - self._epoch_start
        with self.path.open("a") as log:
            tag = {"model": self.name} if self.name else {}
            line = {**tag, "epoch": epoch + 1, "seconds": seconds, **logs}
            log.write(json.dumps(results.plain(line)) + "\n")
        shown = "  ".join(f"{key}={value:.4g}" for key, value in logs.items())
        where = f"{self.name} " if self.name else ""
        print(f"[{self.recipe}] {where}epoch {epoch + 1}/{self.epochs} {seconds:.1f}s  "
              f"{shown}", flush=True)


class CrashAt(tf.keras.callbacks.Callback):
    """Raises after `step` training steps: the fault injected by --simulate_crash_at_step."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.done = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done == self.step:
            raise RuntimeError(f"simulated crash after {self.step} steps")


def read_log(path: Path) -> list[dict]:
    """The lines of an `EpochLog` file, each (network, epoch) once: an epoch logged again
    after a resume replaces the earlier line."""
    if not path.exists():
        return []
    lines = {}
    for text in path.read_text().splitlines():
        if text.strip():
            line = json.loads(text)
            lines[(line.get("model", ""), line["epoch"])] = line
    return list(lines.values())
