"""The callbacks every run adds to `model.fit`: the per-epoch log, the backup, TensorBoard's
epoch scalars and the injected fault."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import results

import tensorflow as tf


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


class EpochTensorBoard(tf.keras.callbacks.TensorBoard):
    """TensorBoard's per-epoch scalars, without its per-step work.

    Keras calls every callback's batch hooks once one callback has them (`StepTimer`
    does), and TensorBoard's would then write a summary per metric per step: on small
    steps that alone cost over 10 % of a fit. The graph (written at the first step end)
    goes with them.
    """

    def __init__(self, log_dir: str):
        super().__init__(log_dir, write_graph=False, profile_batch=0)

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class IntervalBackup(tf.keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` at an epoch's end, at most once per `every_seconds` of training.

    A backup is a checkpoint write (~50 ms for a small model): after every epoch of a
    fit whose epochs last 0.4 s it is an eighth of the time. A killed run resumes from
    the last backup, so it loses at most `every_seconds` of training (0: back up every
    epoch). The last epoch is never backed up: `fit` keeps the finished weights itself.
    """

    def __init__(self, backup_dir: str, every_seconds: float):
        super().__init__(backup_dir, save_freq="epoch")
        self.every_seconds = every_seconds
        self._last_backup = 0.0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._last_backup = time.monotonic()
        # Workers must agree on which epochs they back up, and their clocks do not.
        if isinstance(self.model.distribute_strategy,
                      tf.distribute.MultiWorkerMirroredStrategy):
            self.every_seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        finite = math.isfinite(float((logs or {}).get("loss", 0.0)))  # never back up a NaN
        last = epoch + 1 == self.params["epochs"]
        if finite and not last and now - self._last_backup >= self.every_seconds:
            self._backup(epoch=epoch)
            self._last_backup = time.monotonic()


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
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if text.strip():
            try:
                line = json.loads(text)
                lines[(line.get("model", ""), line["epoch"])] = line
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ValueError(f"{path} line {number} is not an epoch's JSON line: delete "
                                 "that line to resume, or pass --overwrite to start "
                                 "over") from None
    return list(lines.values())
